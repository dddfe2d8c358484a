//! Calibration: probabilities that mean what they say, and the thresholds a writer may use.
//!
//! * [`fit_temperature`] — temperature scaling (Guo et al., 2017): one number `T` so that
//!   `softmax(scores / T)` has the least log loss on held-out predictions. It never changes
//!   which class wins, so macro F1 is the same before and after.
//! * [`Reliability`] — the expected calibration error (ECE) over 10 equal-width bins of the
//!   top-class confidence, with each bin's confidence and accuracy (the reliability diagram).
//! * [`threshold_for`] — the lowest confidence at which test precision reaches a writer's
//!   target, and the share of bugs it covers.

use serde::{Deserialize, Serialize};

use crate::models::linear::{argmax, softmax};

/// Log loss of `scores` (logits) against `truth` at temperature `t`.
fn log_loss(scores: &[Vec<f64>], truth: &[usize], t: f64) -> f64 {
    let mut loss = 0.0;
    for (s, &y) in scores.iter().zip(truth) {
        let p = softmax(s, t);
        loss -= p[y].max(1e-15).ln();
    }
    loss / scores.len().max(1) as f64
}

/// The temperature with the least log loss on `(scores, truth)`: a golden-section search of
/// `ln T` over [ln 0.05, ln 20] (the loss is unimodal in `T`).
pub fn fit_temperature(scores: &[Vec<f64>], truth: &[usize]) -> f64 {
    if scores.is_empty() {
        return 1.0;
    }
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut lo, mut hi) = (0.05f64.ln(), 20f64.ln());
    let f = |x: f64| log_loss(scores, truth, x.exp());
    let (mut a, mut b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..60 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - phi * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + phi * (hi - lo);
            fb = f(b);
        }
    }
    ((lo + hi) / 2.0).exp()
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// The bin's lower edge (bins are `[lo, lo + 0.1)`, the last one closed).
    pub lo: f64,
    pub count: usize,
    /// Mean top-class probability in the bin.
    pub confidence: f64,
    /// Share of the bin's predictions that were right.
    pub accuracy: f64,
}

/// Calibration of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// Expected calibration error: Σ (bin count / n) × |accuracy − confidence|.
    pub ece: f64,
    pub bins: Vec<Bin>,
    pub n: usize,
}

impl Reliability {
    /// Over 10 equal-width bins of the top-class probability.
    pub fn of(probabilities: &[Vec<f64>], truth: &[usize]) -> Reliability {
        let judged: Vec<(f64, bool)> = probabilities
            .iter()
            .zip(truth)
            .map(|(p, &y)| {
                let top = argmax(p);
                (p.get(top).copied().unwrap_or(0.0), top == y)
            })
            .collect();
        Self::of_confidence(&judged)
    }

    /// [`Reliability::of`] from each prediction's top-class probability and whether it was
    /// right (live predictions keep no more).
    pub fn of_confidence(judged: &[(f64, bool)]) -> Reliability {
        let mut count = [0usize; 10];
        let mut confidence = [0.0f64; 10];
        let mut right = [0usize; 10];
        for &(c, was_right) in judged {
            let bin = ((c * 10.0).floor() as usize).min(9);
            count[bin] += 1;
            confidence[bin] += c;
            right[bin] += usize::from(was_right);
        }
        let n = judged.len();
        let mut ece = 0.0;
        let bins = (0..10)
            .map(|b| {
                let k = count[b].max(1) as f64;
                let (conf, acc) = (confidence[b] / k, right[b] as f64 / k);
                if count[b] > 0 {
                    ece += count[b] as f64 / n.max(1) as f64 * (acc - conf).abs();
                }
                Bin {
                    lo: b as f64 / 10.0,
                    count: count[b],
                    confidence: conf,
                    accuracy: acc,
                }
            })
            .collect();
        Reliability { ece, bins, n }
    }
}

/// A writer's operating point, measured on test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The precision the writer rule asks for.
    pub target: f64,
    /// The lowest probability (≥ the rule's floor) at which test precision reaches the
    /// target; `None`: it never does, and the writer does not act on this model.
    pub threshold: Option<f64>,
    /// Test precision at the threshold.
    pub precision: Option<f64>,
    /// Share of the test records (of the rule's class, if it has one) at or above it.
    pub coverage: f64,
    /// Test predictions at or above it.
    pub support: usize,
    /// Why there is no threshold, when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Predictions this many or more above a threshold make its precision a measurement.
pub const MIN_THRESHOLD_SUPPORT: usize = 5;

/// The lowest threshold ≥ `floor` at which the predictions of `class` (any class when
/// `None`) with that probability or more are right at least `target` of the time, over at
/// least [`MIN_THRESHOLD_SUPPORT`] predictions.
pub fn threshold_for(
    probabilities: &[Vec<f64>],
    truth: &[usize],
    class: Option<usize>,
    target: f64,
    floor: f64,
) -> Threshold {
    // (confidence, right), of the predictions that would write.
    let mut points: Vec<(f64, bool)> = probabilities
        .iter()
        .zip(truth)
        .filter_map(|(p, &y)| {
            let top = argmax(p);
            let wanted = class.is_none_or(|c| c == top);
            (wanted && p[top] >= floor).then_some((p[top], top == y))
        })
        .collect();
    points.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = probabilities.len().max(1) as f64;
    // Walk down from the most confident: precision of the top i; keep the lowest cut that
    // still reaches the target (ties at a probability are taken together).
    let (mut right, mut best) = (0usize, None);
    for i in 0..points.len() {
        right += usize::from(points[i].1);
        let tie_next = points.get(i + 1).is_some_and(|next| next.0 == points[i].0);
        let taken = i + 1;
        if tie_next || taken < MIN_THRESHOLD_SUPPORT {
            continue;
        }
        let precision = right as f64 / taken as f64;
        if precision >= target {
            best = Some((points[i].0, precision, taken));
        }
    }
    match best {
        Some((threshold, precision, support)) => Threshold {
            target,
            threshold: Some(threshold),
            precision: Some(precision),
            coverage: support as f64 / n,
            support,
            reason: None,
        },
        None => Threshold {
            target,
            threshold: None,
            precision: None,
            coverage: 0.0,
            support: 0,
            reason: Some(format!(
                "test precision never reaches {target} above the floor {floor} over at least {MIN_THRESHOLD_SUPPORT} predictions ({} candidates)",
                points.len()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overconfident_model_is_cooled() {
        // Scores say 0.98, but only 70% are right: the temperature must rise above 1.
        let scores: Vec<Vec<f64>> = (0..100).map(|_| vec![4.0, 0.0]).collect();
        let truth: Vec<usize> = (0..100).map(|i| usize::from(i % 10 >= 7)).collect();
        let before = Reliability::of(
            &scores.iter().map(|s| softmax(s, 1.0)).collect::<Vec<_>>(),
            &truth,
        );
        let t = fit_temperature(&scores, &truth);
        let after = Reliability::of(
            &scores.iter().map(|s| softmax(s, t)).collect::<Vec<_>>(),
            &truth,
        );
        assert!(t > 1.0, "{t}");
        assert!(before.ece > 0.25, "{before:?}");
        assert!(after.ece < 0.01, "{after:?}");
    }

    #[test]
    fn the_threshold_is_the_lowest_that_reaches_the_target() {
        // Confidences 0.95..0.50; the top 10 are right, then one in two.
        let mut probabilities = Vec::new();
        let mut truth = Vec::new();
        for i in 0..20 {
            let c = 0.95 - i as f64 * 0.025;
            probabilities.push(vec![c, 1.0 - c]);
            truth.push(if i < 10 || i % 2 == 0 { 0 } else { 1 });
        }
        let t = threshold_for(&probabilities, &truth, None, 0.9, 0.5);
        // The top 13 are 12 right (0.923); the top 14, 12 right (0.857).
        let threshold = t.threshold.unwrap();
        assert!((threshold - (0.95 - 12.0 * 0.025)).abs() < 1e-9, "{t:?}");
        assert!(t.precision.unwrap() >= 0.9);
        assert_eq!(t.support, 13);
        let never = threshold_for(&probabilities, &truth, None, 1.01, 0.5);
        assert!(never.threshold.is_none() && never.reason.is_some());
    }
}
