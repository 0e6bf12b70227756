//! The one interface of every task loss ([`TaskLoss`]): what a task takes (its prediction tensors and its batch, as
//! associated types) and one [`TaskLoss::run`] that computes the loss and, when given buffers, the gradients into them.
//! `call`, `value_and_grad` and `value_and_grad_into` are written once here, for every task and every backend (the
//! CUDA crate implements the same trait for its types).

use crate::detection::{check_grad_buffers, with_fresh_grads, without_grads, GradBufs, LossOutput, LossValues};
use crate::error::Result;
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
    fn value_and_grad_into(&self, preds: Self::Preds<'_>, batch: &Self::Batch<'_>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &preds.tensors())?;
        self.run(preds, batch, grads)
    }
}
