//! Distribution focal loss pieces (docs/spec.md §8.3, §9 bbox_decode): the soft-argmax decode of one side's
//! `R` logits and the two-bin cross entropy against a continuous target.

use crate::real::Real;
use crate::softmax_run::{SoftmaxRun, RUN_MAX_BINS};

/// Softmax of `z` into `p`; returns the expectation Σ k·p_k (the decoded distance).
#[inline]
pub fn softmax_expectation<F: Real>(z: &[F], p: &mut [F]) -> F {
    softmax_parts(z, p).0
}

/// [`Real::softmax_expect_cells`] cell by cell with [`softmax_expectation`]: soft-argmax over `r` bins for each of `hw`
/// cells; bin k of cell c is `z[k·hw + c]`.
pub fn softmax_expect_cells<F: Real>(z: &[F], hw: usize, r: usize, out: &mut [F]) {
    let mut bins = vec![F::zero(); r];
    let mut probs = vec![F::zero(); r];
    for (c, o) in out.iter_mut().enumerate().take(hw) {
        for (k, b) in bins.iter_mut().enumerate() {
            *b = z[k * hw + c];
        }
        *o = softmax_expectation(&bins, &mut probs);
    }
}

/// [`Real::softmax_run`] cell by cell with [`softmax_parts`]: `z` holds one side's `r` bins of a level as rows of `hw`
/// values (channel-major), the run is cells `c0 .. c0 + n` (n ≤ [`RUN_CELLS`](crate::softmax_run::RUN_CELLS), r ≤ [`RUN_MAX_BINS`]).
pub fn softmax_run_cells<F: Real>(z: &[F], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<F>) {
    let (mut bins, mut probs) = ([F::zero(); RUN_MAX_BINS], [F::zero(); RUN_MAX_BINS]);
    let (bins, probs) = (&mut bins[..r], &mut probs[..r]);
    for j in 0..n {
        for (k, b) in bins.iter_mut().enumerate() {
            *b = z[k * hw + c0 + j];
            out.z[k][j] = *b;
        }
        (out.dist[j], out.max[j], out.sum[j]) = softmax_parts(bins, probs);
        for (k, &pk) in probs.iter().enumerate() {
            out.p[k][j] = pk;
        }
    }
}

/// As [`softmax_expectation`], also returning log Σ exp(z) (what the DFL cross entropy needs).
#[inline]
pub fn softmax_expectation_lse<F: Real>(z: &[F], p: &mut [F]) -> (F, F) {
    let (dist, m, sum) = softmax_parts(z, p);
    (dist, m + sum.ln())
}

/// Softmax of `z` into `p`; returns (Σ k·p_k, max z, Σ exp(z − max z)).
///
/// The exponentials and the divisions are loops of their own, free of the running sums, so that they vectorise;
/// both sums still add in index order, so every number is what one loop doing all of it gave.
#[inline(always)]
fn softmax_parts<F: Real>(z: &[F], p: &mut [F]) -> (F, F, F) {
    let m = z.iter().copied().fold(F::neg_infinity(), F::max);
    for (pk, &zk) in p.iter_mut().zip(z) {
        *pk = (zk - m).exp_nonpos();
    }
    let mut sum = F::zero();
    for &pk in p.iter() {
        sum += pk;
    }
    for pk in p.iter_mut() {
        *pk /= sum;
    }
    let mut dist = F::zero();
    for (k, &pk) in p.iter().enumerate() {
        dist += pk * F::from_usize_(k);
    }
    (dist, m, sum)
}

/// The DFL target of one side: clamped distance, left bin and the two bin weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DflTarget<F> {
    pub left: usize,
    pub w_left: F,
    pub w_right: F,
}

impl<F: Real> DflTarget<F> {
    /// Clamps to [0, R − 1.01] (as DFLoss does) and splits between bins ⌊y⌋ and ⌊y⌋ + 1.
    #[inline]
    pub fn new(target: F, reg_max: usize) -> Self {
        let y = target.max(F::zero()).min(F::c(reg_max as f64 - 1.0 - 0.01));
        let left = y.floor().to_usize().unwrap_or(0).min(reg_max.saturating_sub(2));
        let right = F::from_usize_(left + 1);
        let w_left = right - y;
        Self { left, w_left, w_right: F::one() - w_left }
    }
}

/// log Σ exp(z), stable.
#[inline]
pub fn logsumexp<F: Real>(z: &[F]) -> F {
    let m = z.iter().copied().fold(F::neg_infinity(), F::max);
    let s: F = z.iter().map(|&v| (v - m).exp()).sum();
    m + s.ln()
}

/// CE(z, l)·w_l + CE(z, l+1)·w_r for one side.
#[inline]
pub fn dfl_side_loss<F: Real>(z: &[F], t: &DflTarget<F>) -> F {
    dfl_side_loss_lse(z, logsumexp(z), t)
}

/// As [`dfl_side_loss`] with log Σ exp(z) already known.
#[inline]
pub fn dfl_side_loss_lse<F: Real>(z: &[F], lse: F, t: &DflTarget<F>) -> F {
    (lse - z[t.left]) * t.w_left + (lse - z[t.left + 1]) * t.w_right
}

/// Adds `up · ∂(side loss)/∂z` to `g`, given the softmax `p` of `z`:
/// (w_l + w_r)·p − w_l·e_l − w_r·e_r, exactly the sum autograd forms of the two CE terms.
#[inline]
pub fn dfl_side_grad_acc<F: Real>(p: &[F], t: &DflTarget<F>, up: F, g: &mut [F]) {
    let wsum = t.w_left + t.w_right;
    for (gk, &pk) in g.iter_mut().zip(p) {
        *gk += up * wsum * pk;
    }
    g[t.left] -= up * t.w_left;
    g[t.left + 1] -= up * t.w_right;
}

/// Adds the gradient of the soft-argmax: ∂dist/∂z_k = p_k·(k − dist), times `up`.
#[inline]
pub fn softmax_expectation_grad_acc<F: Real>(p: &[F], dist: F, up: F, g: &mut [F]) {
    for (k, (gk, &pk)) in g.iter_mut().zip(p).enumerate() {
        *gk += up * pk * (F::from_usize_(k) - dist);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_check(f: impl Fn(&[f64]) -> f64, z: &[f64], analytic: &[f64]) {
        for k in 0..z.len() {
            let h = 1e-6;
            let mut zp = z.to_vec();
            let mut zm = z.to_vec();
            zp[k] += h;
            zm[k] -= h;
            let fd = (f(&zp) - f(&zm)) / (2.0 * h);
            assert!((fd - analytic[k]).abs() < 1e-7, "bin {k}: fd {fd} analytic {}", analytic[k]);
        }
    }

    #[test]
    fn dfl_gradient_matches_finite_differences() {
        let z: Vec<f64> = (0..16).map(|k| ((k * 7 % 5) as f64 - 2.0) * 0.37).collect();
        for target in [-1.0, 0.0, 3.3, 7.999, 14.5, 20.0] {
            let t = DflTarget::new(target, 16);
            let mut p = vec![0.0; 16];
            softmax_expectation(&z, &mut p);
            let mut g = vec![0.0; 16];
            dfl_side_grad_acc(&p, &t, 1.3, &mut g);
            fd_check(|z| 1.3 * dfl_side_loss(z, &t), &z, &g);
        }
    }

    #[test]
    fn soft_argmax_gradient_matches_finite_differences() {
        let z: Vec<f64> = (0..16).map(|k| ((k * 3 % 7) as f64 - 3.0) * 0.41).collect();
        let mut p = vec![0.0; 16];
        let d = softmax_expectation(&z, &mut p);
        let mut g = vec![0.0; 16];
        softmax_expectation_grad_acc(&p, d, 0.8, &mut g);
        fd_check(|z| 0.8 * softmax_expectation(z, &mut [0.0; 16]), &z, &g);
    }

    #[test]
    fn target_clamps_to_the_reference_bounds() {
        let t = DflTarget::<f32>::new(100.0, 16);
        assert_eq!(t.left, 14);
        assert!((t.w_right - 0.99).abs() < 1e-5);
        let t = DflTarget::<f32>::new(-3.0, 16);
        assert_eq!((t.left, t.w_left, t.w_right), (0, 1.0, 0.0));
    }
}
