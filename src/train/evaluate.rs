//! `bugflow evaluate`: a bundle scored on any labelled data set, full BMO bugs or partial
//! records (a search export's fields), with no split — every labelled record is a test
//! record.
//!
//! It reports what training reports on its own test part, so the two can be read side by
//! side: per class precision, recall and F1, macro F1, the calibration error before and
//! after the bundle's calibrator, and, for a model with a writer rule, the precision and
//! coverage the writer would get on these records at each threshold that matters (the
//! rule's floor, the bundle's measured threshold, and the one these records would need).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::calibration::{self, Threshold};
use super::metrics::Metrics;
use super::{data, measure};
use crate::models::bundle::Bundle;
use crate::models::catalogue::Calibration;

/// What `evaluate` found.
pub struct Evaluation {
    /// Over every scored record (sub-models pooled as training pools them).
    pub metrics: Metrics,
    /// Per sub-model (the repository, for issue-type); one entry `""` otherwise.
    pub per_key: BTreeMap<String, Metrics>,
    /// Labelled records the bundle cannot score (a class or repository it does not know).
    pub unknown: usize,
    /// The writer's operating points on these records; empty without a writer rule.
    pub writer: Vec<OperatingPoint>,
}

/// One threshold the writer could use, measured on the evaluated records.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatingPoint {
    /// Where the threshold comes from (`floor`, `bundle`, `needed here`).
    pub name: &'static str,
    pub threshold: Option<f64>,
    /// The precision the writer rule asks for.
    pub target: f64,
    /// Precision of the predictions at or above the threshold (of the rule's class).
    pub precision: Option<f64>,
    /// Share of all scored records at or above it.
    pub coverage: f64,
    pub support: usize,
}

/// Scores `bundle` on the labelled records of `files`.
pub fn evaluate(bundle: &Bundle, files: &[PathBuf]) -> anyhow::Result<Evaluation> {
    let model = bundle.manifest.model;
    let data = data::load(model, files)?;
    let groups = data::by_key(&data.samples, 1);
    let calibrate = model
        .spec()
        .map_or(Calibration::Temperature, |s| s.calibration);
    let mut per_key = BTreeMap::new();
    let mut unknown = 0;
    let mut scored: Option<(Vec<Vec<f64>>, Vec<usize>)> = None;
    let mut every = Vec::new();
    for (key, samples) in &groups {
        let Some(fitted) = bundle.model(key) else {
            unknown += samples.len();
            continue;
        };
        let (mut known, mut labels) = (Vec::new(), Vec::new());
        for s in samples {
            match fitted
                .classes
                .iter()
                .position(|c| Some(c) == s.label.as_ref())
            {
                Some(t) => {
                    known.push(*s);
                    labels.push(t);
                }
                None => unknown += 1,
            }
        }
        if known.is_empty() {
            continue;
        }
        let idx: Vec<usize> = (0..known.len()).collect();
        let (metrics, probabilities, truth) =
            measure(fitted, &known, &labels, &idx, &labels, calibrate);
        if groups.len() == 1 {
            scored = Some((probabilities, truth));
        } else {
            every.extend(probabilities);
        }
        per_key.insert(key.clone(), metrics);
    }
    if per_key.is_empty() {
        anyhow::bail!("none of the records can be scored by this bundle");
    }
    let writer = match (&scored, bundle.model("")) {
        (Some((p, t)), Some(fitted)) => operating_points(bundle, &fitted.classes, p, t),
        _ => Vec::new(),
    };
    let mut metrics = super::combine(&per_key);
    // One group's report has its noise already (pooled_noise leaves it).
    super::pooled_noise(&mut metrics, every.iter());
    Ok(Evaluation {
        metrics,
        per_key,
        unknown,
        writer,
    })
}

/// The writer rule's floor, the bundle's threshold and the threshold these records need,
/// each with its precision and coverage here.
fn operating_points(
    bundle: &Bundle,
    classes: &[String],
    probabilities: &[Vec<f64>],
    truth: &[usize],
) -> Vec<OperatingPoint> {
    let Some(rule) = bundle.manifest.model.spec().and_then(|s| s.writer.as_ref()) else {
        return Vec::new();
    };
    let class = rule
        .class
        .as_ref()
        .and_then(|c| classes.iter().position(|k| k == c));
    let at = |name, threshold: Option<f64>| {
        let (precision, coverage, support) = match threshold {
            Some(t) => at_threshold(probabilities, truth, class, t),
            None => (None, 0.0, 0),
        };
        OperatingPoint {
            name,
            threshold,
            target: rule.precision,
            precision,
            coverage,
            support,
        }
    };
    let bundle_threshold = bundle
        .manifest
        .writer
        .as_ref()
        .and_then(|w: &Threshold| w.threshold);
    let needed =
        calibration::threshold_for(probabilities, truth, class, rule.precision, rule.floor);
    vec![
        at("floor", Some(rule.floor)),
        at("bundle", bundle_threshold),
        at("needed here", needed.threshold),
    ]
}

/// Precision, coverage and support of the top-class predictions (of `class`, if given) with
/// probability ≥ `threshold`.
pub fn at_threshold(
    probabilities: &[Vec<f64>],
    truth: &[usize],
    class: Option<usize>,
    threshold: f64,
) -> (Option<f64>, f64, usize) {
    let (mut taken, mut right) = (0usize, 0usize);
    for (p, &y) in probabilities.iter().zip(truth) {
        let top = crate::models::linear::argmax(p);
        if class.is_none_or(|c| c == top) && p[top] >= threshold {
            taken += 1;
            right += usize::from(top == y);
        }
    }
    let precision = (taken > 0).then(|| right as f64 / taken as f64);
    (
        precision,
        taken as f64 / probabilities.len().max(1) as f64,
        taken,
    )
}

impl Evaluation {
    /// The report `bugflow evaluate` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if self.per_key.len() > 1 {
            for (key, m) in &self.per_key {
                out.push_str(&format!(
                    "  {:<28} macro F1 {:.3}  accuracy {:.3}  ({} records)\n",
                    key, m.macro_f1, m.accuracy, m.samples
                ));
            }
        }
        out.push_str(&self.metrics.table());
        if !self.writer.is_empty() {
            out.push_str("  writer (precision target, at each threshold)\n");
            out.push_str(&format!(
                "  {:<12} {:>9} {:>7} {:>9} {:>9} {:>8}\n",
                "threshold", "value", "target", "precision", "coverage", "support"
            ));
            for p in &self.writer {
                let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
                out.push_str(&format!(
                    "  {:<12} {:>9} {:>7.2} {:>9} {:>8.1}% {:>8}\n",
                    p.name,
                    show(p.threshold),
                    p.target,
                    show(p.precision),
                    p.coverage * 100.0,
                    p.support
                ));
            }
        }
        if self.unknown > 0 {
            out.push_str(&format!(
                "  ({} records have a label or repository this bundle does not know; not scored)\n",
                self.unknown
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_counts_only_what_it_lets_through() {
        let p = vec![
            vec![0.95, 0.05],
            vec![0.8, 0.2],
            vec![0.3, 0.7],
            vec![0.1, 0.9],
        ];
        let truth = vec![0, 1, 1, 0];
        // Any class at ≥ 0.85: 0.95 (right) and 0.9 (wrong).
        assert_eq!(at_threshold(&p, &truth, None, 0.85), (Some(0.5), 0.5, 2));
        // Class 0 only at ≥ 0.75: 0.95 (right), 0.8 (wrong).
        assert_eq!(at_threshold(&p, &truth, Some(0), 0.75), (Some(0.5), 0.5, 2));
        assert_eq!(at_threshold(&p, &truth, None, 0.99), (None, 0.0, 0));
    }
}
