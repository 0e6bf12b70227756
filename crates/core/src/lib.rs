//! Pure-Rust math of the Ultralytics YOLO training losses (ultralytics 8.3.117, `utils/loss.py` and what it
//! uses), with analytic gradients equal to PyTorch autograd. No binding or GPU types live here: the napi
//! crate and the CUDA crate build on this one.
//!
//! Numbers follow `docs/spec.md` of the repository; section references (§n) in comments point there.

pub mod alloc;
pub mod assigner;
pub mod blocks;
pub mod classification;
pub mod detection;
pub mod family;
pub mod dfl;
pub mod e2e;
pub mod geometry;
pub mod iou;
pub mod labels;
pub mod loss;
pub mod obb;
pub mod probiou;
pub mod error;
pub mod focal;
mod fastmath;
pub mod hyp;
mod kernels;
pub mod pose;
pub mod prompts;
pub mod real;
pub mod segmentation;
pub mod softmax_run;
pub mod tensor;
#[cfg(test)]
mod testing;

pub use detection::{DetBatch, DetectionConfig, LossOutput, V8DetectionLoss};
pub use error::{ErrorCode, LossError, Result};
pub use hyp::Hyp;
pub use loss::{Predictions, TaskLoss};
pub use obb::V8OBBLoss;
pub use real::Real;
pub use tensor::TensorRef;
