//! The layout of a soft-argmax run: one side's decode at up to [`RUN_CELLS`] consecutive cells, lane by lane, which
//! [`Real::softmax_run`](crate::real::Real::softmax_run) fills (vectorised for `f32`, cell by cell otherwise). A leaf
//! module: the float trait, the scalar decode and the `f32` kernels all name it.

/// Cells per soft-argmax run (one AVX-512 register of lanes), and the most bins a run holds (reg_max is 16 in
/// Ultralytics' models; a head with more decodes anchor by anchor).
pub const RUN_CELLS: usize = 16;
pub const RUN_MAX_BINS: usize = 32;

/// One side's soft-argmax at up to [`RUN_CELLS`] consecutive cells of a level, lane j for the run's j-th cell: what
/// [`softmax_expectation_lse`](crate::dfl::softmax_expectation_lse) computes for that cell, as the parts it is made of, with the same bits.
#[derive(Debug, Clone)]
pub struct SoftmaxRun<F> {
    /// `z[k][j]`: logit of bin k.
    pub z: [[F; RUN_CELLS]; RUN_MAX_BINS],
    /// `p[k][j]`: softmax of bin k.
    pub p: [[F; RUN_CELLS]; RUN_MAX_BINS],
    /// Σ k·p_k, the decoded distance.
    pub dist: [F; RUN_CELLS],
    /// max z and Σ e^(z − max z): the log-sum-exp is `max + sum.ln()`.
    pub max: [F; RUN_CELLS],
    pub sum: [F; RUN_CELLS],
}

impl<F: Copy + Default> Default for SoftmaxRun<F> {
    fn default() -> Self {
        let z = F::default();
        Self {
            z: [[z; RUN_CELLS]; RUN_MAX_BINS],
            p: [[z; RUN_CELLS]; RUN_MAX_BINS],
            dist: [z; RUN_CELLS],
            max: [z; RUN_CELLS],
            sum: [z; RUN_CELLS],
        }
    }
}
