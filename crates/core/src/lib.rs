//! Pure-Rust math of the Ultralytics YOLO training losses (ultralytics 8.3.117, `utils/loss.py` and what it
//! uses), with analytic gradients equal to PyTorch autograd. No binding or GPU types live here: the napi
//! crate and the CUDA crate build on this one.
//!
//! Numbers follow `docs/spec.md` of the repository; section references (§n) in comments point there.
//!
//! # The task-loss interface
//!
//! Every task loss implements [`TaskLoss`] (`loss.rs`): its prediction tensors and its batch are associated types
//! (a list of level tensors, or a struct of named tensors where a task has several: [`segmentation::SegPreds`],
//! [`pose::PosePreds`], [`obb::ObbPreds`], [`e2e::E2EPreds`]; [`Predictions::tensors`] lists them in the order of
//! their gradients), and one [`TaskLoss::run`] computes the loss and, when given buffers, the gradients into them.
//! `call`, `value_and_grad`, `value_and_grad_into` and `value_and_grad_overwrite` (into buffers of any contents, with
//! the hook [`TaskLoss::run_overwrite`]) are the trait's default methods, written once. The trait is
//! generic over the float type ([`Real`]: `f32`, and `f64` for the finite-difference tests); another backend
//! implements it for `f32` with the same predictions and batch (the CUDA crate does, and selects between the two per
//! instance), so that callers are written once over the trait.
//!
//! # Layout
//!
//! * The task losses, one file each: `detection.rs` (v8DetectionLoss), `segmentation.rs`, `pose.rs`, `obb/`
//!   (v8OBBLoss and the rotated pieces: geometry, labels, assign, loss, blocks), `classification.rs`, `e2e.rs`,
//!   `prompts.rs` (TVPDetectLoss, TVPSegmentLoss).
//! * `family/`: what the detection-family losses share: the validated head (`head`), one image's decode for the
//!   assigner and the box terms (`image_preds`), labels + GT table + assignment of a batch (`assigned`), the class and
//!   box terms with their gradients (`terms`).
//! * The blocks they are made of: `assigner.rs` (task-aligned assignment over any anchor source), `iou.rs`,
//!   `probiou.rs`, `dfl.rs` (soft-argmax and DFL), `geometry.rs` (anchors, dist2bbox), `labels.rs`, `focal.rs`, and
//!   `blocks.rs` (the reference's building blocks on dense tensors, with their gradient forms).
//! * Numbers: `real.rs` (the [`Real`] trait and its kernel hooks), `softmax_run.rs` (the layout a soft-argmax run
//!   fills), `kernels.rs` (which kernels `f32` and `f64` run), `fastmath.rs` (the vectorised `f32` kernels); the
//!   trait depends on no kernel module.
//! * Plumbing: `tensor.rs` (borrowed tensors and their checks), `error.rs` (coded errors), `alloc.rs` (zeroed
//!   buffers), `hyp.rs` (gains).
//!
//! # Adding a task loss
//!
//! Define its predictions (a struct implementing [`Predictions`] where it has several tensors) and batch, implement
//! [`TaskLoss`] (`run` only) from the `family/` pieces, and check it against reference fixtures. The CUDA crate's
//! docs say how a task gets a GPU backend; without one, its backend selection refuses `'cuda'` and the binding needs
//! only an `Unpack` impl and a class (crates/node/src/tasks).

pub mod alloc;
pub mod assigner;
pub mod blocks;
pub mod classification;
pub mod detection;
pub mod dfl;
pub mod e2e;
pub mod error;
pub mod family;
mod fastmath;
pub mod focal;
pub mod geometry;
pub mod hyp;
pub mod iou;
mod kernels;
pub mod labels;
pub mod loss;
pub mod obb;
pub mod pose;
pub mod probiou;
pub mod prompts;
pub mod real;
pub mod segmentation;
pub mod softmax_run;
pub mod tensor;
#[cfg(test)]
mod testing;

pub use detection::{DetBatch, DetectionConfig, V8DetectionLoss};
pub use error::{ErrorCode, LossError, Result};
pub use hyp::Hyp;
pub use loss::{LossOutput, Predictions, TaskLoss};
pub use obb::V8OBBLoss;
pub use real::Real;
pub use tensor::TensorRef;
