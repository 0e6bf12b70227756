//! The one interface of every task loss ([`TaskLoss`]): what a task takes (its prediction tensors and its batch, as
//! associated types) and one [`TaskLoss::run`] that computes the loss and, when given buffers, the gradients into them.
//! `call`, `value_and_grad`, `value_and_grad_into` and `value_and_grad_overwrite` are written once here, for every
//! task and every backend (the CUDA crate implements the same trait for its types).

use rayon::prelude::*;

use crate::error::{LossError, Result};
use crate::real::Real;
use crate::tensor::TensorRef;

/// The prediction tensors of one call: the data of each, in the order of their gradients.
pub trait Predictions<'a, F> {
    fn tensors(&self) -> Vec<&'a [F]>;
}

/// A list of level tensors (the detection head), one gradient per level.
impl<'a, F> Predictions<'a, F> for &'a [TensorRef<'a, F>] {
    fn tensors(&self) -> Vec<&'a [F]> {
        self.iter().map(|t| t.data).collect()
    }
}

/// One tensor (the classification logits).
impl<'a, F> Predictions<'a, F> for TensorRef<'a, F> {
    fn tensors(&self) -> Vec<&'a [F]> {
        vec![self.data]
    }
}

/// A task loss on one backend, over values of type `F`.
///
/// An implementation says what it takes ([`TaskLoss::Preds`], [`TaskLoss::Batch`]) and writes [`TaskLoss::run`]; the
/// three public forms follow from it and validate alike on every backend.
pub trait TaskLoss<F: Real> {
    /// The prediction tensors (a list of levels, or a struct of named tensors where the task has several).
    type Preds<'a>: Predictions<'a, F> + Copy;
    /// The labels of the batch.
    type Batch<'a>;

    /// The loss vector (back-propagated, ×B) and the detached items. With `grads` empty, nothing else; otherwise
    /// `grads` holds one buffer per prediction tensor, as long as it and in the order of [`Predictions::tensors`]
    /// (what [`TaskLoss::value_and_grad_into`] checks before calling this), and the gradient of `sum(loss)` goes
    /// there: added to zeros, or written whole where [`TaskLoss::overwrites_grads`].
    fn run(&self, preds: Self::Preds<'_>, batch: &Self::Batch<'_>, grads: GradBufs<F>) -> Result<LossValues<F>>;

    /// Whether [`TaskLoss::run`] writes every element of its gradient buffers (a backend that downloads whole
    /// gradients), so that buffers of any contents will do; false where it adds into zero-filled ones.
    fn overwrites_grads(&self) -> bool {
        false
    }

    /// As [`TaskLoss::run`] with gradient buffers of any contents (a training loop's, from its last step): every
    /// element is written. By default the buffers are zero-filled first (on every thread) unless `run` writes them
    /// whole anyway; a loss that writes all but a few channels of them overrides this to clear just those (the CPU
    /// detection losses). A type that forwards `run` to another should forward this too, or it gets the default.
    fn run_overwrite(
        &self,
        preds: Self::Preds<'_>,
        batch: &Self::Batch<'_>,
        grads: GradBufs<F>,
    ) -> Result<LossValues<F>> {
        if !self.overwrites_grads() {
            zero_fill(grads);
        }
        self.run(preds, batch, grads)
    }

    /// `__call__`: the loss and the loss items, no gradient.
    fn call(&self, preds: Self::Preds<'_>, batch: &Self::Batch<'_>) -> Result<LossOutput<F>> {
        without_grads(|g| self.run(preds, batch, g))
    }

    /// The loss, the items and the gradient with respect to every prediction tensor, in fresh buffers.
    fn value_and_grad(&self, preds: Self::Preds<'_>, batch: &Self::Batch<'_>) -> Result<LossOutput<F>> {
        with_fresh_grads(&preds.tensors(), |g| self.run(preds, batch, g))
    }

    /// As [`TaskLoss::value_and_grad`] into caller-provided buffers: one per prediction tensor, each as long as it
    /// (else `ERR_SHAPE_MISMATCH`), zero-filled unless [`TaskLoss::overwrites_grads`]; returns (loss, loss items).
    fn value_and_grad_into(
        &self,
        preds: Self::Preds<'_>,
        batch: &Self::Batch<'_>,
        grads: GradBufs<F>,
    ) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &preds.tensors())?;
        self.run(preds, batch, grads)
    }

    /// As [`TaskLoss::value_and_grad_into`] into buffers of any contents (a caller's `out` that holds the previous
    /// step's gradients): no zeroing needed first, and only what the loss does not write is zeroed (after the length
    /// check; [`TaskLoss::run_overwrite`]). Same numbers as `value_and_grad`, bit for bit.
    fn value_and_grad_overwrite(
        &self,
        preds: Self::Preds<'_>,
        batch: &Self::Batch<'_>,
        grads: GradBufs<F>,
    ) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &preds.tensors())?;
        self.run_overwrite(preds, batch, grads)
    }
}

/// Result of one call: `loss` (×B, back-propagated), `loss_items` (detached), and, when asked for,
/// the gradient of `sum(loss)` for each prediction tensor, in that tensor's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput<F> {
    pub loss: Vec<F>,
    pub loss_items: Vec<F>,
    pub grads: Vec<Vec<F>>,
}

/// Loss vector (back-propagated, ×B) and detached items of one call.
pub type LossValues<F> = (Vec<F>, Vec<F>);

/// Gradient buffers of one call: one slice per prediction tensor, in the loss's order (zero-filled, except those of
/// [`TaskLoss::run_overwrite`] and of a loss that [`TaskLoss::overwrites_grads`]); empty for a call without gradients.
pub type GradBufs<'g, 'b, F> = &'g mut [&'b mut [F]];

/// `call`: runs without gradient buffers.
pub(crate) fn without_grads<F: Real>(run: impl FnOnce(GradBufs<F>) -> Result<LossValues<F>>) -> Result<LossOutput<F>> {
    let (loss, loss_items) = run(&mut [])?;
    Ok(LossOutput { loss, loss_items, grads: Vec::new() })
}

/// `value_and_grad`: fresh zero-filled gradient buffers shaped like `inputs`.
pub(crate) fn with_fresh_grads<F: Real>(
    inputs: &[&[F]],
    run: impl FnOnce(GradBufs<F>) -> Result<LossValues<F>>,
) -> Result<LossOutput<F>> {
    let mut bufs = zero_grads(inputs);
    let (loss, loss_items) = {
        let mut slices: Vec<&mut [F]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
        run(&mut slices)?
    };
    Ok(LossOutput { loss, loss_items, grads: bufs })
}

/// Caller-provided gradient buffers must be one per prediction tensor, each exactly as long as it: the check
/// (and message) of [`TaskLoss::value_and_grad_into`], on every backend.
pub(crate) fn check_grad_buffers<F>(grads: &[&mut [F]], inputs: &[&[F]]) -> Result<()> {
    let want: Vec<usize> = inputs.iter().map(|t| t.len()).collect();
    let got: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    if want != got {
        return Err(LossError::shape(format!(
            "grads: expected {} buffers of lengths {want:?} (one per prediction tensor), got lengths {got:?}",
            want.len()
        )));
    }
    Ok(())
}

/// Zero-fills `bufs` on every thread: at training sizes (77 MB at B=16, 640×640, nc=80) one thread's memset of a
/// caller's buffers takes milliseconds, a good part of a whole call.
pub(crate) fn zero_fill<F: Real>(bufs: GradBufs<F>) {
    /// 1 MiB of float32 per task: large enough to amortise the scheduling, small enough to share one level.
    const CHUNK: usize = 1 << 18;
    bufs.par_iter_mut().flat_map(|b| b.par_chunks_mut(CHUNK)).for_each(|c| c.fill(F::zero()));
}

/// Fresh zero gradients shaped like `tensors`.
pub(crate) fn zero_grads<F: Real>(tensors: &[&[F]]) -> Vec<Vec<F>> {
    tensors.iter().map(|t| crate::alloc::zeroed(t.len())).collect()
}
