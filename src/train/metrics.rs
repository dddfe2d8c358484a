//! Evaluation: precision, recall and F1 per class, macro F1, accuracy, confusion matrix.

use serde::{Deserialize, Serialize};

use super::calibration::{EceNoise, MIN_TOP_LABEL_RECORDS, Reliability};
use crate::models::catalogue::Calibration;
use crate::models::linear::LinearModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 (classes with no support in the test set count
    /// only if something was predicted for them).
    pub macro_f1: f64,
    pub classes: Vec<ClassScores>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub samples: usize,
    /// Binary models: the area under the ROC curve of the minority class's probability — how
    /// well the score ranks, whatever the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// Calibration on the test set, before and after the calibrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
}

/// How a method with a top-label map begins.
const WITH_MAP: &str = "temperature + top-label isotonic";

/// How well the probabilities match the outcomes, on test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// `temperature` (scaling fitted on out-of-fold predictions of the training part).
    pub method: String,
    pub temperature: f64,
    pub before: Reliability,
    pub after: Reliability,
    /// What `after.ece` would be, by chance alone, if the calibrated probabilities were
    /// exactly right (older manifests have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<EceNoise>,
}

impl CalibrationReport {
    /// Was a top-label map fitted (see [`method_of`](Self::method_of))?
    pub fn has_top_label(&self) -> bool {
        self.method.starts_with(WITH_MAP)
    }

    /// A model calibrated by its temperature alone, though a map was asked for, and why.
    pub fn without_map(why: &str) -> String {
        format!("temperature; no top-label map: {why}")
    }

    /// A model left with its own probabilities, though a calibrator was asked for, and why.
    pub fn neither(why: &str) -> String {
        format!("none; neither a temperature nor a top-label map: {why}")
    }

    /// How `model` was calibrated, in words: the method asked for and what was fitted.
    pub fn method_of(asked: Calibration, model: &LinearModel) -> String {
        match (asked, &model.top_label) {
            (Calibration::None, _) => "none".into(),
            (_, Some(map)) => format!("{WITH_MAP}, {} knots", map.x.len()),
            // Training says which (`train::fit_one`); a bundle read back does not know.
            (Calibration::Isotonic, None) => Self::without_map(&format!(
                "under {MIN_TOP_LABEL_RECORDS} held-out records, or it did not lower the ECE on halves of them"
            )),
            (Calibration::Temperature, None) => "temperature".into(),
        }
    }
}

impl Metrics {
    /// Scores predictions against the truth (both indexes into `classes`).
    pub fn compute(classes: &[String], truth: &[usize], predicted: &[usize]) -> Metrics {
        let k = classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let mut scores = Vec::new();
        let mut f1s = Vec::new();
        for c in 0..k {
            let tp = confusion[c][c] as f64;
            let predicted_c: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = if predicted_c > 0 {
                tp / predicted_c as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            if support > 0 || predicted_c > 0 {
                f1s.push(f1);
            }
            scores.push(ClassScores {
                class: classes[c].clone(),
                precision,
                recall,
                f1,
                support,
            });
        }
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        Metrics {
            accuracy: if truth.is_empty() {
                0.0
            } else {
                correct as f64 / truth.len() as f64
            },
            macro_f1: if f1s.is_empty() {
                0.0
            } else {
                f1s.iter().sum::<f64>() / f1s.len() as f64
            },
            classes: scores,
            confusion,
            samples: truth.len(),
            roc_auc: None,
            calibration: None,
        }
    }

    /// ROC AUC of `scores` for the positives in `positive` (ties count half).
    pub fn roc_auc(positive: &[bool], scores: &[f64]) -> Option<f64> {
        let pos: Vec<f64> = positive
            .iter()
            .zip(scores)
            .filter(|(p, _)| **p)
            .map(|(_, s)| *s)
            .collect();
        let neg: Vec<f64> = positive
            .iter()
            .zip(scores)
            .filter(|(p, _)| !**p)
            .map(|(_, s)| *s)
            .collect();
        if pos.is_empty() || neg.is_empty() {
            return None;
        }
        let mut wins = 0.0;
        for p in &pos {
            for n in &neg {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        Some(wins / (pos.len() * neg.len()) as f64)
    }

    /// The report printed by `train` and `evaluate`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "  {:<36} {:>9} {:>9} {:>9} {:>8}\n",
            "class", "precision", "recall", "f1", "support"
        ));
        for c in &self.classes {
            out.push_str(&format!(
                "  {:<36} {:>9.3} {:>9.3} {:>9.3} {:>8}\n",
                truncate(&c.class, 36),
                c.precision,
                c.recall,
                c.f1,
                c.support
            ));
        }
        out.push_str(&format!(
            "  accuracy {:.3}   macro F1 {:.3}   ({} samples){}\n",
            self.accuracy,
            self.macro_f1,
            self.samples,
            self.roc_auc
                .map(|a| format!("   ROC AUC {a:.3}"))
                .unwrap_or_default()
        ));
        if let Some(c) = &self.calibration {
            out.push_str(&format!(
                "  ECE (10 bins) {:.3} before calibration, {:.3} after ({}, T = {:.2})\n",
                c.before.ece, c.after.ece, c.method, c.temperature
            ));
            if let Some(noise) = c.noise {
                out.push_str(&format!(
                    "  ECE a perfectly calibrated model would show on these {} records: {:.3} (95 % of draws ≤ {:.3})\n",
                    c.after.n, noise.mean, noise.p95
                ));
            }
        }
        out.push_str("  confusion (rows: truth, columns: predicted)\n");
        for (c, row) in self.classes.iter().zip(&self.confusion) {
            out.push_str(&format!(
                "  {:<36} {}\n",
                truncate(&c.class, 36),
                row.iter().map(|n| format!("{n:>5}")).collect::<String>()
            ));
        }
        out
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_computation() {
        let classes = vec!["a".to_string(), "b".to_string()];
        // truth a a a b, predicted a a b b: a: p=1 r=2/3; b: p=1/2 r=1.
        let m = Metrics::compute(&classes, &[0, 0, 0, 1], &[0, 0, 1, 1]);
        assert!((m.accuracy - 0.75).abs() < 1e-12);
        assert!((m.classes[0].f1 - 0.8).abs() < 1e-12);
        assert!((m.classes[1].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.macro_f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.confusion, vec![vec![2, 1], vec![0, 1]]);
    }

    #[test]
    fn auc_counts_ordered_pairs() {
        assert_eq!(Metrics::roc_auc(&[true, false], &[0.9, 0.1]), Some(1.0));
        assert_eq!(
            Metrics::roc_auc(&[true, false, false], &[0.5, 0.9, 0.1]),
            Some(0.5)
        );
        assert_eq!(Metrics::roc_auc(&[true], &[0.5]), None);
    }
}
