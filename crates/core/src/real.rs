//! The scalar type the math is written over.
//!
//! Production runs in `f32` (the reference's precision); the finite-difference gradient tests
//! run the very same code in `f64`, so one implementation serves both.

use num_traits::{Float, FloatConst, FromPrimitive, ToPrimitive};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use crate::softmax_run::SoftmaxRun;

pub trait Real:
    Float
    + FloatConst
    + FromPrimitive
    + ToPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// Converts a constant. Every constant of the reference is representable, so this never fails.
    #[inline(always)]
    fn c(x: f64) -> Self {
        Self::from_f64(x).unwrap_or_else(Self::nan)
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self.to_f64().unwrap_or(f64::NAN)
    }
    #[inline(always)]
    fn from_usize_(x: usize) -> Self {
        Self::c(x as f64)
    }

    /// Σ BCE(x, 0) over `x`; writes σ(x)·scale into `grad` when given. The hot loop of the
    /// detection-family losses: `f32` overrides it with a vectorised version.
    ///
    /// The sum is non-finite when `x` holds a non-finite value: each term is BCE(x, 0) + x·0, the same number
    /// for finite x and NaN otherwise (the detection loss checks its class logits this way).
    fn bce_zero(x: &[Self], grad: Option<&mut [Self]>, scale: Self) -> f64 {
        let mut total = 0.0f64;
        let z = Self::zero();
        match grad {
            Some(g) => {
                for (gv, &xv) in g.iter_mut().zip(x) {
                    let e = (-xv.abs()).exp();
                    total += (xv.max(z) + e.ln_1p() + xv * z).f64();
                    let inv = Self::one() / (Self::one() + e);
                    *gv = if xv >= z { inv } else { e * inv } * scale;
                }
            }
            None => {
                for &xv in x {
                    total += (xv.max(z) + (-xv.abs()).exp().ln_1p() + xv * z).f64();
                }
            }
        }
        total
    }

    /// [`bce_zero`](Self::bce_zero) with the same result, on every thread where the type has a parallel form (`f32`).
    fn bce_zero_par(x: &[Self], grad: Option<&mut [Self]>, scale: Self) -> f64 {
        Self::bce_zero(x, grad, scale)
    }

    /// True when every value is finite.
    fn all_finite(x: &[Self]) -> bool {
        x.iter().all(|v| v.is_finite())
    }

    /// Soft-argmax over `r` bins for each of `hw` cells; bin k of cell c is `z[k·hw + c]`.
    fn softmax_expect_cells(z: &[Self], hw: usize, r: usize, out: &mut [Self]);

    /// The per-anchor soft-argmax ([`softmax_expectation_lse`](crate::dfl::softmax_expectation_lse)) of one side at the
    /// cells `c0 .. c0 + n` of a level (`z` as for [`softmax_expect_cells`](Self::softmax_expect_cells); n ≤
    /// [`RUN_CELLS`](crate::softmax_run::RUN_CELLS), r ≤ [`RUN_MAX_BINS`](crate::softmax_run::RUN_MAX_BINS)), as its parts, with its bits
    /// for every cell; `f32` computes the cells at once.
    fn softmax_run(z: &[Self], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<Self>);

    /// (BCE(x, 0), σ(x)) of one logit, stable; BCE(x, t) = BCE(x, 0) − x·t. `f32` avoids libm calls.
    #[inline(always)]
    fn bce_sigmoid(self) -> (Self, Self) {
        let e = (-self.abs()).exp();
        let inv = Self::one() / (Self::one() + e);
        (self.max(Self::zero()) + e.ln_1p(), if self >= Self::zero() { inv } else { e * inv })
    }

    /// e^x for x ≤ 0 (softmax after subtracting the maximum); `f32` uses a vectorisable polynomial.
    #[inline(always)]
    fn exp_nonpos(self) -> Self {
        self.exp()
    }
}
