//! Backend selection for the detection-family losses: what the binding's `device: 'cpu' | 'cuda' | 'auto'`
//! maps to.
//!
//! * `Cuda`: the CUDA backend or an error — `ERR_CUDA_UNAVAILABLE` with the reason when there is no usable driver,
//!   GPU or kernel build; `ERR_INVALID_ARGUMENT` for a configuration beyond the CUDA backend's limits.
//! * `Auto`: the CUDA backend when it can be built, otherwise (silently) the CPU backend; [`Backend`] says which.
//! * `Cpu`: the CPU backend (crates/core).
//!
//! Each `*Any` type takes and returns exactly what the core type does (f32 only).

use std::str::FromStr;

use yolo_loss_core::detection::{GradBufs, LossValues};
use yolo_loss_core::e2e::E2EDetectLoss;
use yolo_loss_core::prompts::TVPDetectLoss;
use yolo_loss_core::{DetBatch, DetectionConfig, LossError, LossOutput, Result, TensorRef, V8DetectionLoss};

use crate::detection::CudaDetectionLoss;
use crate::e2e::CudaE2EDetectLoss;
use crate::prompts::CudaTVPDetectLoss;

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    Auto,
}

impl FromStr for Device {
    type Err = LossError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "auto" => Ok(Device::Auto),
            other => Err(LossError::invalid(format!("device: expected 'cpu', 'cuda' or 'auto', got '{other}'"))),
        }
    }
}

/// What an instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

/// `device` → a CUDA instance, a CPU instance, or the CUDA error.
fn select<C, G>(
    device: Device,
    cpu: impl FnOnce() -> Result<C>,
    cuda: impl FnOnce() -> Result<G>,
) -> Result<Either<C, G>> {
    match device {
        Device::Cpu => cpu().map(Either::Cpu),
        Device::Cuda => cuda().map(Either::Cuda),
        // Any CUDA failure (no GPU, or a configuration only the CPU backend takes) falls back; an invalid
        // configuration then fails in the CPU constructor with its own error.
        Device::Auto => match cuda() {
            Ok(g) => Ok(Either::Cuda(g)),
            Err(_) => cpu().map(Either::Cpu),
        },
    }
}

enum Either<C, G> {
    Cpu(C),
    Cuda(G),
}

/// v8DetectionLoss on the selected backend.
#[derive(Debug, Clone)]
pub enum DetectionLossAny {
    Cpu(V8DetectionLoss),
    Cuda(CudaDetectionLoss),
}

impl DetectionLossAny {
    pub fn new(cfg: DetectionConfig, device: Device) -> Result<Self> {
        Ok(match select(device, || V8DetectionLoss::new(cfg.clone()), || CudaDetectionLoss::new(cfg.clone()))? {
            Either::Cpu(c) => Self::Cpu(c),
            Either::Cuda(g) => Self::Cuda(g),
        })
    }
    pub fn backend(&self) -> Backend {
        match self {
            Self::Cpu(_) => Backend::Cpu,
            Self::Cuda(_) => Backend::Cuda,
        }
    }
    pub fn call(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        match self {
            Self::Cpu(c) => c.call(feats, batch),
            Self::Cuda(g) => g.call(feats, batch),
        }
    }
    pub fn value_and_grad(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        match self {
            Self::Cpu(c) => c.value_and_grad(feats, batch),
            Self::Cuda(g) => g.value_and_grad(feats, batch),
        }
    }
    /// Gradients into caller-provided zero-filled buffers, one per level; returns (loss, items).
    pub fn value_and_grad_into(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        match self {
            Self::Cpu(c) => c.value_and_grad_into(feats, batch, grads),
            Self::Cuda(g) => g.value_and_grad_into(feats, batch, grads),
        }
    }
}

/// E2EDetectLoss on the selected backend.
#[derive(Debug, Clone)]
pub enum E2EDetectLossAny {
    Cpu(E2EDetectLoss),
    Cuda(CudaE2EDetectLoss),
}

impl E2EDetectLossAny {
    pub fn new(cfg: DetectionConfig, device: Device) -> Result<Self> {
        Ok(match select(device, || E2EDetectLoss::new(cfg.clone()), || CudaE2EDetectLoss::new(cfg.clone()))? {
            Either::Cpu(c) => Self::Cpu(c),
            Either::Cuda(g) => Self::Cuda(g),
        })
    }
    pub fn backend(&self) -> Backend {
        match self {
            Self::Cpu(_) => Backend::Cpu,
            Self::Cuda(_) => Backend::Cuda,
        }
    }
    pub fn call(
        &self,
        o2m: &[TensorRef<f32>],
        o2o: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
    ) -> Result<LossOutput<f32>> {
        match self {
            Self::Cpu(c) => c.call(o2m, o2o, batch),
            Self::Cuda(g) => g.call(o2m, o2o, batch),
        }
    }
    pub fn value_and_grad(
        &self,
        o2m: &[TensorRef<f32>],
        o2o: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
    ) -> Result<LossOutput<f32>> {
        match self {
            Self::Cpu(c) => c.value_and_grad(o2m, o2o, batch),
            Self::Cuda(g) => g.value_and_grad(o2m, o2o, batch),
        }
    }
    /// Gradients into caller-provided zero-filled buffers (one2many levels, then one2one); returns (loss, items).
    pub fn value_and_grad_into(
        &self,
        o2m: &[TensorRef<f32>],
        o2o: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        match self {
            Self::Cpu(c) => c.value_and_grad_into(o2m, o2o, batch, grads),
            Self::Cuda(g) => g.value_and_grad_into(o2m, o2o, batch, grads),
        }
    }
}

/// TVPDetectLoss on the selected backend.
#[derive(Debug, Clone)]
pub enum TVPDetectLossAny {
    Cpu(TVPDetectLoss),
    Cuda(CudaTVPDetectLoss),
}

impl TVPDetectLossAny {
    pub fn new(cfg: DetectionConfig, device: Device) -> Result<Self> {
        Ok(match select(device, || TVPDetectLoss::new(cfg.clone()), || CudaTVPDetectLoss::new(cfg.clone()))? {
            Either::Cpu(c) => Self::Cpu(c),
            Either::Cuda(g) => Self::Cuda(g),
        })
    }
    pub fn backend(&self) -> Backend {
        match self {
            Self::Cpu(_) => Backend::Cpu,
            Self::Cuda(_) => Backend::Cuda,
        }
    }
    pub fn call(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        match self {
            Self::Cpu(c) => c.call(feats, batch),
            Self::Cuda(g) => g.call(feats, batch),
        }
    }
    pub fn value_and_grad(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        match self {
            Self::Cpu(c) => c.value_and_grad(feats, batch),
            Self::Cuda(g) => g.value_and_grad(feats, batch),
        }
    }
    /// Gradients into caller-provided zero-filled buffers, one per level; returns (loss, items).
    pub fn value_and_grad_into(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        match self {
            Self::Cpu(c) => c.value_and_grad_into(feats, batch, grads),
            Self::Cuda(g) => g.value_and_grad_into(feats, batch, grads),
        }
    }
}
