//! Calibration: probabilities that mean what they say, and the thresholds a writer may use.
//!
//! * [`fit_temperature`] — temperature scaling (Guo et al., 2017): one number `T` so that
//!   `softmax(scores / T)` has the least log loss on held-out predictions. It never changes
//!   which class wins, so macro F1 is the same before and after.
//! * [`fit_top_label`] — after the temperature, isotonic regression of "the top class was
//!   right" on the top class's probability ([`TopLabelMap`]): it corrects a model that is
//!   overconfident at the top and underconfident below, which no single `T` can.
//! * [`fit_calibrator`] — keeps each of them only where it does better than what it
//!   corrects on held-out records it was not fitted on: a model already calibrated keeps
//!   its own probabilities, rather than a temperature fitted to the slice's noise.
//! * [`Reliability`] — the expected calibration error (ECE) over 10 equal-width bins of the
//!   top-class confidence, with each bin's confidence and accuracy (the reliability diagram),
//!   and [`Reliability::noise`]: the ECE a perfectly calibrated model would still show on
//!   a test set of this size (on 115 records it is about 0.06: a target below it cannot be
//!   told from luck).
//! * [`threshold_for`] — the lowest confidence at which test precision reaches a writer's
//!   target, and the share of bugs it covers.

use serde::{Deserialize, Serialize};

use crate::models::calibrator::TopLabelMap;
use crate::models::linear::{SplitMix, argmax, softmax};
use crate::models::live::percentile;

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

/// Held-out predictions a top-label map needs: with fewer, its steps would be a few
/// records each, and the temperature alone is kept.
pub const MIN_TOP_LABEL_RECORDS: usize = 200;

/// How often the held-out slice is cut in two at random to judge a map (each cut measured
/// both ways). The judgement is out of sample, so it needs no margin for the map's many
/// steps against the temperature's one number; it needs repeats: judged on one cut into
/// alternate records, bugtype's and issue-type's maps gained 16–18 % and then lost on test,
/// and on one random cut the component model's map gained 7 %, on another 27 %.
const HALVINGS: usize = 8;

/// Pseudo-records that pull each step of the map toward the tempered probability itself:
/// a step of 12 held-out records that were all right reads (12 + 8 × 0.97) / 20 = 0.988,
/// not 1.0, and a step of 300 is what its records say. (Pulling toward the slice's overall
/// accuracy instead flattened the component model's map until the halves rejected it:
/// test ECE 0.057 against 0.029.)
const SHRINK: f64 = 8.0;

/// The top-label map of held-out `probabilities` (already tempered) and their true
/// classes; `None` below [`MIN_TOP_LABEL_RECORDS`].
pub fn fit_top_label(probabilities: &[Vec<f64>], truth: &[usize]) -> Option<TopLabelMap> {
    fit_top_label_over(probabilities, truth, MIN_TOP_LABEL_RECORDS)
}

/// What [`fit_calibrator`] fitted, and why no more.
#[derive(Debug, Clone, PartialEq)]
pub enum Calibrator {
    /// The model's own probabilities: on halves of the held-out predictions, neither a
    /// temperature nor a map fitted on one half did better on the other (why, in words).
    Identity(String),
    /// A temperature alone; why no top-label map.
    Temperature(f64, String),
    /// A temperature, then a top-label map.
    WithMap(f64, TopLabelMap),
}

/// The calibrator for held-out `scores` (logits) and their classes. Each part of it is
/// kept only where it earns its place on records it did not see: the slice is cut in two
/// at random (seeded, [`HALVINGS`] times); a temperature, and a temperature and a map (from
/// [`MIN_TOP_LABEL_RECORDS`] records), are fitted on each half and measured on the other,
/// beside the model's own probabilities. A temperature stays when its mean ECE there is
/// lower than the model's own; a map when its mean ECE is lower than the temperature's.
pub fn fit_calibrator(scores: &[Vec<f64>], truth: &[usize]) -> Calibrator {
    let n = scores.len();
    let halves = on_halves(scores, truth, n >= MIN_TOP_LABEL_RECORDS);
    let best_fitted = halves
        .map
        .as_ref()
        .map_or(f64::INFINITY, |m| *m)
        .min(halves.temperature);
    if halves.own <= best_fitted {
        return Calibrator::Identity(format!(
            "on halves of the {n} held-out predictions the model's own probabilities gave ECE \
             {:.3}, a temperature fitted on the other half {:.3}",
            halves.own, halves.temperature
        ));
    }
    let temperature_alone =
        |why: String| Calibrator::Temperature(fit_temperature(scores, truth), why);
    let with_map = match halves.map {
        Ok(with_map) => with_map,
        Err(why) => return temperature_alone(why),
    };
    if with_map >= halves.temperature {
        return temperature_alone(format!(
            "on halves of the held-out predictions a map gave ECE {with_map:.3}, the temperature alone {:.3}",
            halves.temperature
        ));
    }
    tracing::info!(
        map = with_map,
        temperature = halves.temperature,
        own = halves.own,
        "a top-label map: its mean ECE on halves of the held-out slice, against the temperature's"
    );
    match fit_both(scores, truth, MIN_TOP_LABEL_RECORDS) {
        (t, Some(map)) => Calibrator::WithMap(t, map),
        (_, None) => temperature_alone("the held-out slice fits no map".to_owned()),
    }
}

/// Mean ECEs on halves of the held-out predictions, each measured on the half its
/// calibrator was not fitted on.
struct Halves {
    /// The model's own probabilities.
    own: f64,
    temperature: f64,
    /// A temperature and a map; or why no map was tried, or a half fits none.
    map: Result<f64, String>,
}

/// [`Halves`] of `scores`: [`HALVINGS`] random cuts (seeded), each measured both ways;
/// maps only when `maps`.
fn on_halves(scores: &[Vec<f64>], truth: &[usize], maps: bool) -> Halves {
    let n = scores.len();
    let mut map_ece = if maps {
        Ok(0.0)
    } else {
        Err(format!(
            "{n} held-out records, under the {MIN_TOP_LABEL_RECORDS} a top-label map needs"
        ))
    };
    // Halves drawn at random (seeded) and drawn again HALVINGS times: one cut of a few
    // hundred records decides by luck (on the component model's slice one cut gave the
    // map 27 % less error, another 7 %).
    let mut rng = SplitMix(0xca1_1b4a7e);
    let part = |idx: &[usize]| -> (Vec<Vec<f64>>, Vec<usize>) {
        idx.iter().map(|&i| (scores[i].clone(), truth[i])).unzip()
    };
    let (mut own, mut with_t) = (0.0, 0.0);
    for _ in 0..HALVINGS {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let (first, second) = order.split_at(n / 2);
        for (fit, measure) in [(first, second), (second, first)] {
            let ((fit_s, fit_y), (test_s, test_y)) = (part(fit), part(measure));
            let raw: Vec<Vec<f64>> = test_s.iter().map(|s| softmax(s, 1.0)).collect();
            own += Reliability::of(&raw, &test_y).ece;
            let (t, map) = match map_ece {
                Ok(_) => fit_both(&fit_s, &fit_y, MIN_TOP_LABEL_RECORDS / 2),
                Err(_) => (fit_temperature(&fit_s, &fit_y), None),
            };
            let mut measured: Vec<Vec<f64>> = test_s.iter().map(|s| softmax(s, t)).collect();
            with_t += Reliability::of(&measured, &test_y).ece;
            if let Ok(sum) = &mut map_ece {
                match map {
                    Some(map) => {
                        measured.iter_mut().for_each(|p| map.apply(p));
                        *sum += Reliability::of(&measured, &test_y).ece;
                    }
                    None => map_ece = Err("a half of the held-out predictions fits no map".into()),
                }
            }
        }
    }
    let cuts = (2 * HALVINGS) as f64;
    Halves {
        own: own / cuts,
        temperature: with_t / cuts,
        map: map_ece.map(|sum| sum / cuts),
    }
}

/// A temperature fitted on `(scores, truth)`, and a top-label map fitted on the tempered
/// probabilities when there are at least `min` of them.
fn fit_both(scores: &[Vec<f64>], truth: &[usize], min: usize) -> (f64, Option<TopLabelMap>) {
    let t = fit_temperature(scores, truth);
    let tempered: Vec<Vec<f64>> = scores.iter().map(|s| softmax(s, t)).collect();
    (t, fit_top_label_over(&tempered, truth, min))
}

fn fit_top_label_over(
    probabilities: &[Vec<f64>],
    truth: &[usize],
    min: usize,
) -> Option<TopLabelMap> {
    if probabilities.len() < min.max(1) {
        return None;
    }
    let mut points: Vec<(f64, f64)> = probabilities
        .iter()
        .zip(truth)
        .map(|(p, &y)| {
            let (class, confidence) = top(p);
            (confidence, f64::from(u8::from(class == y)))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Pool adjacent violators: blocks of (sum of x, sum of right, count), merged while a
    // block's accuracy is not above the one before it.
    let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
    for (x, right) in points {
        blocks.push((x, right, 1.0));
        while blocks.len() > 1 {
            let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            if a.1 / a.2 < b.1 / b.2 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
        }
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut floor = 0.0f64;
    for (sx, right, n) in blocks {
        let mean_x = sx / n;
        // Shrunk toward its own confidence; never below the step before (monotone).
        let value = ((right + SHRINK * mean_x) / (n + SHRINK))
            .max(floor)
            .clamp(0.0, 1.0);
        floor = value;
        let knot = mean_x as f32;
        if x.last().is_some_and(|last| *last >= knot) {
            // Two blocks whose mean rounds to one f32: keep the later (higher) value.
            if let Some(v) = y.last_mut() {
                *v = value as f32;
            }
            continue;
        }
        x.push(knot);
        y.push(value as f32);
    }
    let map = TopLabelMap { x, y };
    map.check().ok().map(|()| map)
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
                let (class, confidence) = top(p);
                (confidence, class == y)
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

/// The ECE a perfectly calibrated model would show on a test set like this one: each
/// prediction right with exactly its stated probability, drawn [`NOISE_DRAWS`] times
/// (seeded: the same predictions give the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EceNoise {
    pub mean: f64,
    /// 95 of 100 draws are at or below it: a measured ECE under it cannot be told from
    /// perfect calibration on this many records.
    pub p95: f64,
}

/// Draws behind an [`EceNoise`].
pub const NOISE_DRAWS: usize = 400;

impl Reliability {
    /// The ECE noise of `probabilities`' top-class confidences (see [`EceNoise`]).
    pub fn noise(probabilities: &[Vec<f64>]) -> EceNoise {
        let confidence: Vec<f64> = probabilities.iter().map(|p| top(p).1).collect();
        Self::noise_of_confidence(&confidence)
    }

    /// [`Reliability::noise`] from each prediction's top-class probability.
    pub fn noise_of_confidence(confidence: &[f64]) -> EceNoise {
        let mut rng = SplitMix(0x5eed_ece0);
        let mut draws: Vec<f64> = (0..NOISE_DRAWS)
            .map(|_| {
                let judged: Vec<(f64, bool)> =
                    confidence.iter().map(|&c| (c, rng.unit() < c)).collect();
                Reliability::of_confidence(&judged).ece
            })
            .collect();
        draws.sort_by(f64::total_cmp);
        EceNoise {
            mean: draws.iter().sum::<f64>() / draws.len() as f64,
            p95: percentile(&draws, 0.95),
        }
    }
}

/// The top class of `p` and its probability (0 for no classes).
pub fn top(p: &[f64]) -> (usize, f64) {
    let top = argmax(p);
    (top, p.get(top).copied().unwrap_or(0.0))
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

    /// Held-out predictions that are right 80 % of the time at 0.95 and 40 % at 0.15: the
    /// first wants a higher temperature, the second a lower one; the map fits both.
    fn two_faced(n: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut probabilities = Vec::new();
        let mut truth = Vec::new();
        for i in 0..n {
            let high = i % 2 == 0;
            let c = if high { 0.95 } else { 0.15 };
            let rest = (1.0 - c) / 9.0;
            let mut p = vec![rest; 10];
            p[0] = c;
            probabilities.push(p);
            let right = if high { i % 10 < 8 } else { i % 10 < 5 };
            truth.push(if right { 0 } else { 1 + i % 9 });
        }
        (probabilities, truth)
    }

    #[test]
    fn a_top_label_map_fixes_what_no_temperature_can() {
        let (probabilities, truth) = two_faced(1000);
        let logits: Vec<Vec<f64>> = probabilities
            .iter()
            .map(|p| p.iter().map(|v| v.ln()).collect())
            .collect();
        let t = fit_temperature(&logits, &truth);
        let tempered: Vec<Vec<f64>> = logits.iter().map(|s| softmax(s, t)).collect();
        let with_t = Reliability::of(&tempered, &truth).ece;
        let map = fit_top_label(&tempered, &truth).expect("1,000 records fit a map");
        let mapped: Vec<Vec<f64>> = tempered
            .iter()
            .map(|p| {
                let mut p = p.clone();
                map.apply(&mut p);
                p
            })
            .collect();
        let with_map = Reliability::of(&mapped, &truth).ece;
        assert!(with_t > 0.1, "a temperature leaves {with_t}");
        assert!(with_map < 0.02, "the map leaves {with_map}: {map:?}");
        // The decisions are the same.
        for (a, b) in tempered.iter().zip(&mapped) {
            assert_eq!(argmax(a), argmax(b));
        }
        assert!(fit_top_label(&tempered[..100], &truth[..100]).is_none());
    }

    fn logits(p: &[Vec<f64>]) -> Vec<Vec<f64>> {
        p.iter()
            .map(|p| p.iter().map(|v| v.ln()).collect())
            .collect()
    }

    /// `n` predictions, each right with exactly the probability it gives its top class.
    fn calibrated(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut rng = SplitMix(seed);
        let (mut probabilities, mut outcomes) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let c = 0.4 + 0.55 * rng.unit();
            probabilities.push(vec![c, (1.0 - c) / 2.0, (1.0 - c) / 2.0]);
            outcomes.push(if rng.unit() < c { 0 } else { 1 });
        }
        (probabilities, outcomes)
    }

    #[test]
    fn the_map_is_kept_only_where_halves_of_the_slice_show_it_helps() {
        let (probabilities, truth) = two_faced(1000);
        let kept = fit_calibrator(&logits(&probabilities), &truth);
        assert!(matches!(kept, Calibrator::WithMap(..)), "{kept:?}");
        // Cooled, but never mapped, with too few records for a map.
        match fit_calibrator(&logits(&probabilities[..150]), &truth[..150]) {
            Calibrator::Temperature(t, why) => {
                assert!(t > 1.0, "{t}");
                assert!(why.contains("150 held-out records"), "{why}");
            }
            other => panic!("150 records: {other:?}"),
        }
    }

    #[test]
    fn a_temperature_is_kept_only_where_halves_of_the_slice_show_it_helps() {
        // Scores that say 0.98 where 70 % are right: cooled.
        let scores: Vec<Vec<f64>> = (0..300)
            .map(|i| vec![4.0 + f64::from(i % 7) / 7.0, 0.0])
            .collect();
        let truth: Vec<usize> = (0..300).map(|i| usize::from(i % 10 >= 7)).collect();
        let cooled = fit_calibrator(&scores, &truth);
        assert!(
            matches!(cooled, Calibrator::Temperature(t, _) if t > 1.5),
            "{cooled:?}"
        );
        // Already calibrated: a temperature fitted on a few hundred records moves them by
        // its own noise. On some seeds a temperature (or a map) helps on halves by luck; on
        // most it does not (7 of these 10), and no temperature is far from 1.
        let mut identity = 0;
        for seed in 0..10 {
            let (probabilities, outcomes) = calibrated(300, seed);
            match fit_calibrator(&logits(&probabilities), &outcomes) {
                Calibrator::Identity(why) => {
                    assert!(why.contains("model's own probabilities"), "{why}");
                    identity += 1;
                }
                Calibrator::Temperature(t, _) | Calibrator::WithMap(t, _) => {
                    assert!((t - 1.0).abs() < 0.2, "seed {seed}: {t}")
                }
            }
        }
        assert!(
            identity >= 6,
            "{identity} of 10 calibrated slices kept their own probabilities"
        );
    }

    #[test]
    fn the_noise_of_a_small_test_set_is_larger() {
        let (probabilities, _) = two_faced(1000);
        let small = Reliability::noise(&probabilities[..100]);
        let large = Reliability::noise(&probabilities);
        assert!(small.mean > large.mean, "{small:?} {large:?}");
        assert!(small.p95 >= small.mean && large.p95 >= large.mean);
        // A perfectly calibrated model of 1,000 such predictions shows about 0.02.
        assert!(large.mean > 0.005 && large.mean < 0.04, "{large:?}");
        assert_eq!(Reliability::noise(&probabilities[..100]), small, "seeded");
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
