//! The top-label map: a monotone function of the winning class's probability, fitted on
//! held-out predictions, that makes "0.8" mean "right 8 times in 10".
//!
//! Temperature scaling (one number `T`, `softmax(scores / T)`) can only make a model more or
//! less confident everywhere at once. A model can be overconfident at the top and
//! underconfident in the middle: the component model, on its 1,300 test bugs, said 0.96
//! where it was right 88 % of the time and 0.16 where it was right 29 % of the time, and the
//! temperature that fits it best (even one fitted on the test set itself) leaves an ECE of
//! 0.07. Expected calibration error is measured on the top class's probability, so this
//! map corrects exactly that number: isotonic regression (pool adjacent violators) of
//! "was the top class right" on "the top class's probability", after the temperature.
//!
//! Applying it keeps the decision: the top class gets its mapped probability, the others
//! share what is left in their old proportions, and the top class is never pushed below the
//! second (so macro F1 and every threshold's class are unchanged).

use serde::{Deserialize, Serialize};

/// Knots of a piecewise-linear, non-decreasing map `[0, 1] → [0, 1]`: between knots it
/// interpolates, outside them it holds the end value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLabelMap {
    /// Top-class probabilities (after the temperature), strictly increasing.
    pub x: Vec<f32>,
    /// What each stands for: the share of held-out predictions around it that were right.
    pub y: Vec<f32>,
}

impl TopLabelMap {
    /// Is it a map? (Read from a bundle, it is checked before it serves.)
    pub fn check(&self) -> Result<(), String> {
        if self.x.is_empty() || self.x.len() != self.y.len() {
            return Err(format!(
                "a top-label map needs as many outputs as knots, at least one ({} knots, {} outputs)",
                self.x.len(),
                self.y.len()
            ));
        }
        let unit = |v: &f32| v.is_finite() && (0.0..=1.0).contains(v);
        if !self.x.iter().chain(&self.y).all(unit) {
            return Err("a top-label map's knots and outputs lie in [0, 1]".into());
        }
        if self.x.windows(2).any(|w| w[0] >= w[1]) || self.y.windows(2).any(|w| w[0] > w[1]) {
            return Err("a top-label map rises: its knots strictly, its outputs never fall".into());
        }
        Ok(())
    }

    /// The calibrated probability of a top class whose probability is `c`.
    pub fn map(&self, c: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        let at = x.partition_point(|k| f64::from(*k) <= c);
        if at == 0 {
            return f64::from(y[0]);
        }
        if at == x.len() {
            return f64::from(y[at - 1]);
        }
        let (x0, x1) = (f64::from(x[at - 1]), f64::from(x[at]));
        let (y0, y1) = (f64::from(y[at - 1]), f64::from(y[at]));
        y0 + (y1 - y0) * (c - x0) / (x1 - x0)
    }

    /// Maps the top class of `p` (probabilities summing to 1) in place; the other classes
    /// share the rest in their old proportions. The top class stays on top.
    pub fn apply(&self, p: &mut [f64]) {
        if p.len() < 2 {
            return;
        }
        let top = super::linear::argmax(p);
        let c = p[top];
        let second = p
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != top)
            .map(|(_, v)| *v)
            .fold(0.0, f64::max);
        // The others are multiplied by (1 − new) / (1 − c); the second stays below the top
        // while new ≥ second / (1 − c + second), a bound never above c itself.
        // A hair above the bound, or the two would tie and the first of them would win.
        let keep_top = (second / (1.0 - c + second).max(f64::MIN_POSITIVE) + 1e-9).min(c);
        let new = self.map(c).max(keep_top).clamp(0.0, 1.0);
        let rest = 1.0 - c;
        let others = p.len() - 1;
        for (i, v) in p.iter_mut().enumerate() {
            if i == top {
                *v = new;
            } else if rest > 1e-12 {
                *v *= (1.0 - new) / rest;
            } else {
                *v = (1.0 - new) / others as f64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> TopLabelMap {
        TopLabelMap {
            x: vec![0.4, 0.6, 0.9],
            y: vec![0.5, 0.5, 0.8],
        }
    }

    #[test]
    fn it_interpolates_between_knots_and_holds_the_ends() {
        let m = map();
        assert!((m.map(0.1) - 0.5).abs() < 1e-6);
        assert!((m.map(0.75) - 0.65).abs() < 1e-6);
        assert!((m.map(0.99) - 0.8).abs() < 1e-6);
        assert!(m.check().is_ok());
    }

    #[test]
    fn applying_it_keeps_the_top_class_and_a_distribution() {
        let m = map();
        let mut p = vec![0.05, 0.95, 0.0];
        m.apply(&mut p);
        // (The knots are f32.)
        assert!((p[1] - 0.8).abs() < 1e-6, "{p:?}");
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(
            (p[0] - 0.2).abs() < 1e-6,
            "the rest goes where it was: {p:?}"
        );
        // A top class mapped below the second would change the decision: it is held.
        let low = TopLabelMap {
            x: vec![0.5],
            y: vec![0.1],
        };
        let mut q = vec![0.45, 0.55];
        low.apply(&mut q);
        assert_eq!(super::super::linear::argmax(&q), 1, "{q:?}");
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // Three classes: the second is scaled up with the rest, and still stays below.
        let mut r = vec![0.30, 0.25, 0.45];
        low.apply(&mut r);
        assert_eq!(super::super::linear::argmax(&r), 2, "{r:?}");
    }

    #[test]
    fn a_map_that_falls_or_leaves_the_unit_interval_is_refused() {
        let falls = TopLabelMap {
            x: vec![0.2, 0.8],
            y: vec![0.9, 0.3],
        };
        assert!(falls.check().is_err());
        let outside = TopLabelMap {
            x: vec![0.2, 1.5],
            y: vec![0.3, 0.9],
        };
        assert!(outside.check().is_err());
        let empty = TopLabelMap {
            x: vec![],
            y: vec![],
        };
        assert!(empty.check().is_err());
    }
}
