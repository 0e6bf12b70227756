//! [`Real`] for the two float types: which kernel runs behind each hook. `f32` takes the vectorised kernels of
//! `fastmath`, `f64` the scalar forms of [`crate::dfl`] (and the trait's own defaults). Kept apart from the trait so
//! that the trait depends on no kernel module and the kernels may use the trait.

use crate::real::Real;
use crate::softmax_run::SoftmaxRun;

impl Real for f32 {
    fn bce_zero(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
        crate::fastmath::bce_zero_f32(x, grad, scale)
    }
    fn bce_zero_par(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
        crate::fastmath::bce_zero_par_f32(x, grad, scale)
    }
    fn all_finite(x: &[f32]) -> bool {
        crate::fastmath::all_finite_f32(x)
    }
    fn softmax_expect_cells(z: &[f32], hw: usize, r: usize, out: &mut [f32]) {
        crate::fastmath::softmax_expect_cells_f32(z, hw, r, out)
    }
    fn softmax_run(z: &[f32], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<f32>) {
        crate::fastmath::softmax_run_f32(z, hw, r, c0, n, out)
    }
    #[inline(always)]
    fn bce_sigmoid(self) -> (f32, f32) {
        crate::fastmath::bce_sigmoid(self)
    }
    #[inline(always)]
    fn exp_nonpos(self) -> f32 {
        crate::fastmath::exp_neg(self)
    }
}

impl Real for f64 {
    fn softmax_expect_cells(z: &[f64], hw: usize, r: usize, out: &mut [f64]) {
        crate::dfl::softmax_expect_cells(z, hw, r, out)
    }
    fn softmax_run(z: &[f64], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<f64>) {
        crate::dfl::softmax_run_cells(z, hw, r, c0, n, out)
    }
}
