//! L-BFGS over a flat parameter vector, updated in place.
//!
//! The sparse learner minimises a smooth, strictly convex loss (softmax cross-entropy with
//! an L2 penalty) over `columns × classes` parameters: 900,000 for the issue-type model.
//! argmin's L-BFGS, which the learner used before, builds a new array for each vector
//! operation of each iteration; on this problem that was more than half of the training
//! time (`perf`: page clearing, `map`, `sub`, copies). Here every vector is allocated once
//! and reused, and the only work per iteration is one loss-and-gradient evaluation per
//! line-search step plus the two-loop recursion (Nocedal & Wright, algorithm 7.4).
//!
//! The line search backtracks from the step 1 (the first iteration scales it by the
//! gradient's norm) until the Armijo condition holds. For a strictly convex loss the
//! curvature `sᵀy` is positive, so every pair is kept; a pair that is not (rounding) is
//! skipped rather than trusted.

use std::collections::VecDeque;

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Pairs of (step, gradient change) remembered.
    pub memory: usize,
    pub max_iterations: u64,
    /// Stop when the gradient's Euclidean norm is below this.
    pub tolerance_grad: f64,
    /// Stop when an iteration lowers the loss by less than this.
    pub tolerance_cost: f64,
}

/// Minimises `f` from `x`; `f(x, grad)` returns the loss at `x` and writes its gradient
/// into `grad`. Returns the point reached (each step lowers the loss) and its loss.
pub fn minimize(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    mut x: Vec<f64>,
    options: Options,
) -> (Vec<f64>, f64) {
    let n = x.len();
    let m = options.memory.max(1);
    let mut g = vec![0.0; n];
    let mut loss = f(&x, &mut g);
    let mut pairs: VecDeque<Pair> = VecDeque::with_capacity(m);
    let mut alpha = vec![0.0; m];
    let (mut d, mut x_new, mut g_new) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for _ in 0..options.max_iterations {
        let gradient_norm = dot(&g, &g).sqrt();
        if gradient_norm < options.tolerance_grad {
            break;
        }
        let mut slope = direction(&pairs, &g, &mut d, &mut alpha);
        if slope >= 0.0 || slope.is_nan() {
            // Not a descent direction (rounding): start again from the gradient.
            pairs.clear();
            slope = direction(&pairs, &g, &mut d, &mut alpha);
        }
        // Without curvature pairs the direction is the raw gradient: scale the first step.
        let mut step = if pairs.is_empty() {
            1.0 / gradient_norm.max(1.0)
        } else {
            1.0
        };
        let mut new_loss;
        let mut tries = 0;
        loop {
            for ((xn, xi), di) in x_new.iter_mut().zip(&x).zip(&d) {
                *xn = xi + step * di;
            }
            new_loss = f(&x_new, &mut g_new);
            tries += 1;
            if new_loss <= loss + 1e-4 * step * slope || tries == 40 {
                break;
            }
            step *= 0.5;
        }
        if new_loss > loss || new_loss.is_nan() {
            // No step lowered the loss: `x` is as good as this search can do.
            break;
        }
        // The new pair, in the oldest pair's buffers once `m` are held.
        let reused = if pairs.len() == m {
            pairs.pop_front()
        } else {
            None
        };
        let mut pair = reused.unwrap_or_else(|| Pair {
            s: vec![0.0f32; n],
            y: vec![0.0f32; n],
            rho: 0.0,
            yy: 0.0,
        });
        let (sy, yy) = differences(&x_new, &x, &g_new, &g, &mut pair.s, &mut pair.y);
        if sy > 1e-10 {
            pair.rho = 1.0 / sy;
            pair.yy = yy;
            pairs.push_back(pair);
        }
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        let improvement = loss - new_loss;
        loss = new_loss;
        if improvement < options.tolerance_cost {
            break;
        }
    }
    (x, loss)
}

/// One remembered step: `s = x₊ − x`, `y = g₊ − g`, `rho = 1 / sᵀy`, and `yᵀy`. The
/// vectors are kept in `f32`: they only shape the next direction (the point and the
/// gradient stay `f64`), and the two-loop recursion reads all `2m` of them every
/// iteration, so half the bytes is nearly half the time of that recursion.
struct Pair {
    s: Vec<f32>,
    y: Vec<f32>,
    rho: f64,
    yy: f64,
}

/// `d = −H g` by the two-loop recursion over `pairs` (oldest first), and the slope `gᵀd`.
///
/// The vectors are megabytes, so each pass over them is a trip to memory: every pass also
/// computes the dot product the next one needs (`m + 1` passes a loop, not `2m`).
fn direction(pairs: &VecDeque<Pair>, g: &[f64], d: &mut [f64], alpha: &mut [f64]) -> f64 {
    d.copy_from_slice(g);
    let held = pairs.len();
    if let Some(newest) = pairs.back() {
        let mut next = dot(&newest.s, d);
        for i in (0..held).rev() {
            alpha[i] = pairs[i].rho * next;
            let coef = -alpha[i];
            next = match i.checked_sub(1) {
                Some(older) => axpy_dot(coef, &pairs[i].y, d, &pairs[older].s),
                None => axpy_dot(coef, &pairs[i].y, d, &pairs[0].y),
            };
        }
        // `next` is now y₀ᵀd; scaling d by gamma scales it too.
        let gamma = 1.0 / (newest.rho * newest.yy);
        d.iter_mut().for_each(|v| *v *= gamma);
        next *= gamma;
        for i in 0..held {
            let coef = alpha[i] - pairs[i].rho * next;
            let following = &pairs[(i + 1).min(held - 1)].y;
            next = axpy_dot(coef, &pairs[i].s, d, following);
        }
    }
    d.iter_mut().for_each(|v| *v = -*v);
    dot(g, d)
}

const LANES: usize = 8;

/// `aᵀb`, summed in eight lanes (which the compiler vectorises; one running sum cannot be);
/// `a` may be a remembered `f32` vector.
fn dot<T: Copy + Into<f64>>(a: &[T], b: &[f64]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| (*x).into() * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for j in 0..LANES {
            lanes[j] += x[j].into() * y[j];
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `d += coef · v`, then `dᵀw`, in one pass.
fn axpy_dot(coef: f64, v: &[f32], d: &mut [f64], w: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let mut dc = d.chunks_exact_mut(LANES);
    let (vc, wc) = (v.chunks_exact(LANES), w.chunks_exact(LANES));
    let (v_tail, w_tail) = (vc.remainder(), wc.remainder());
    for ((dd, vv), ww) in (&mut dc).zip(vc).zip(wc) {
        for j in 0..LANES {
            dd[j] += coef * f64::from(vv[j]);
            lanes[j] += dd[j] * f64::from(ww[j]);
        }
    }
    let mut tail = 0.0;
    for ((di, vi), wi) in dc.into_remainder().iter_mut().zip(v_tail).zip(w_tail) {
        *di += coef * f64::from(*vi);
        tail += *di * f64::from(*wi);
    }
    lanes.iter().sum::<f64>() + tail
}

/// `s = x₊ − x` and `y = g₊ − g`, with `sᵀy` and `yᵀy`, in one pass.
fn differences(
    x_new: &[f64],
    x: &[f64],
    g_new: &[f64],
    g: &[f64],
    s: &mut [f32],
    y: &mut [f32],
) -> (f64, f64) {
    let (mut sy, mut yy) = (0.0, 0.0);
    for i in 0..s.len() {
        s[i] = (x_new[i] - x[i]) as f32;
        y[i] = (g_new[i] - g[i]) as f32;
        let (si, yi) = (f64::from(s[i]), f64::from(y[i]));
        sy += si * yi;
        yy += yi * yi;
    }
    (sy, yy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            memory: 10,
            max_iterations: 500,
            tolerance_grad: 1e-8,
            tolerance_cost: 0.0,
        }
    }

    #[test]
    fn it_finds_the_minimum_of_an_ill_conditioned_quadratic() {
        // f(x) = Σ c_i (x_i - i)², conditioned 1 : 1,000.
        let scales: Vec<f64> = (0..50).map(|i| 10f64.powf(i as f64 / 49.0 * 3.0)).collect();
        let f = |x: &[f64], g: &mut [f64]| {
            let mut loss = 0.0;
            for (i, (xi, gi)) in x.iter().zip(g.iter_mut()).enumerate() {
                let d = xi - i as f64;
                loss += scales[i] * d * d;
                *gi = 2.0 * scales[i] * d;
            }
            loss
        };
        let (x, loss) = minimize(f, vec![0.0; 50], options());
        assert!(loss < 1e-10, "loss {loss}");
        for (i, xi) in x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-4, "x[{i}] = {xi}");
        }
    }

    #[test]
    fn it_minimises_rosenbrock() {
        let f = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        };
        let (x, loss) = minimize(f, vec![-1.2, 1.0], options());
        assert!(loss < 1e-10, "loss {loss} at {x:?}");
    }
}
