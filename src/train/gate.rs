//! The metrics gate: a new bundle serves only if it is not clearly worse.
//!
//! bugbug's rule, made blocking: the candidate's macro F1 must be at least the best earlier
//! value − 0.1 and at least the previous value × 0.95.

use serde::{Deserialize, Serialize};

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
