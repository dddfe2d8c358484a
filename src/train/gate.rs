//! The metrics gate: a new bundle serves only if it is not clearly worse, and its numbers
//! mean something.
//!
//! * bugbug's rule, made blocking: the candidate's macro F1 must be at least the best earlier
//!   value − 0.1 and at least the previous value × 0.95 ([`judge`]);
//! * every class needs at least `min_test_support` test records: below that its F1 is noise;
//! * its test ECE (after calibration) may be worse than the serving bundle's by at most
//!   `max_ece_increase`.
//!
//! An untrained bundle (no public data labels its model) passes: it serves nothing.

use serde::{Deserialize, Serialize};

use crate::models::bundle::Manifest;
use crate::models::catalogue::GateSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub reason: String,
}

/// `earlier`: the macro F1 of every bundle that served; `previous`: the one serving now.
pub fn judge(candidate: f64, earlier: &[f64], previous: Option<f64>) -> Verdict {
    let best = earlier.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut problems = Vec::new();
    if best.is_finite() && candidate < best - 0.1 {
        problems.push(format!(
            "macro F1 {candidate:.3} < best earlier {best:.3} − 0.1"
        ));
    }
    if let Some(prev) = previous
        && candidate < prev * 0.95
    {
        problems.push(format!(
            "macro F1 {candidate:.3} < previous {prev:.3} × 0.95 = {:.3}",
            prev * 0.95
        ));
    }
    if problems.is_empty() {
        Verdict {
            pass: true,
            reason: match previous {
                Some(prev) => {
                    format!("macro F1 {candidate:.3} (previous {prev:.3}, best {best:.3})")
                }
                None => format!("macro F1 {candidate:.3} (first bundle)"),
            },
        }
    } else {
        Verdict {
            pass: false,
            reason: problems.join("; "),
        }
    }
}

/// The whole gate for a candidate bundle, against what served (`earlier`: the macro F1 of
/// every bundle that served; `serving`: the one serving now).
pub fn judge_bundle(
    candidate: &Manifest,
    earlier: &[f64],
    serving: Option<&Manifest>,
    rules: &GateSpec,
) -> Verdict {
    if let Some(why) = &candidate.untrained {
        return Verdict {
            pass: true,
            reason: format!("untrained ({why}): serves no predictions"),
        };
    }
    // An untrained bundle's 0 is not a macro F1 to compare with.
    let trained = serving.filter(|s| s.untrained.is_none());
    let f1 = judge(
        candidate.macro_f1(),
        earlier,
        trained.map(Manifest::macro_f1),
    );
    let mut problems = Vec::new();
    if !f1.pass {
        problems.push(f1.reason.clone());
    }
    // Per-repository models are checked per repository too: the sums can hide a thin one.
    let thin: Vec<String> = candidate
        .metrics
        .classes
        .iter()
        .chain(candidate.per_repository.values().flat_map(|m| &m.classes))
        .filter(|c| c.support < rules.min_test_support)
        .map(|c| format!("{} ({})", c.class, c.support))
        .collect();
    if !thin.is_empty() {
        problems.push(format!(
            "classes with fewer than {} test records (a repository's count for per-repository models): {}",
            rules.min_test_support,
            thin.join(", ")
        ));
    }
    if let (Some(new), Some(old)) = (candidate.ece(), trained.and_then(Manifest::ece))
        && new > old + rules.max_ece_increase
    {
        problems.push(format!(
            "ECE {new:.3} > serving {old:.3} + {}",
            rules.max_ece_increase
        ));
    }
    if problems.is_empty() {
        Verdict {
            pass: true,
            reason: format!(
                "{}; every class ≥ {} test records{}",
                f1.reason,
                rules.min_test_support,
                candidate
                    .ece()
                    .map(|e| format!("; ECE {e:.3}"))
                    .unwrap_or_default()
            ),
        }
    } else {
        Verdict {
            pass: false,
            reason: problems.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn the_gate_follows_both_rules() {
        assert!(judge(0.5, &[], None).pass);
        assert!(judge(0.80, &[0.8], Some(0.8)).pass);
        assert!(
            judge(0.77, &[0.8], Some(0.8)).pass,
            "within 5% of the previous"
        );
        assert!(
            !judge(0.75, &[0.8], Some(0.8)).pass,
            "more than 5% below the previous"
        );
        // A weak previous does not excuse falling far below the best ever.
        let v = judge(0.69, &[0.9, 0.7], Some(0.7));
        assert!(!v.pass);
        assert!(v.reason.contains("best earlier"), "{}", v.reason);
    }
}
