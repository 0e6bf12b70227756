//! v8OBBLoss on the GPU (docs/spec.md §13): the same inputs, outputs and errors as
//! `yolo_loss_core::obb::V8OBBLoss`, computed by the detection kernels (decode, scores, class pass) and the rotated
//! assignment and box pass of cuda/obb.cu (see `run.rs`).

mod params;
pub(crate) mod run;
#[cfg(test)]
mod tests;

use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::obb::{ObbBatch, ObbPreds};
use yolo_loss_core::{DetectionConfig, Result, TaskLoss, V8OBBLoss};

use crate::backend::{cuda_constructors, Selected};
use crate::detection::check_cuda_limits;
use crate::launch::Dev;

#[derive(Clone)]
pub struct CudaObbLoss {
    pub cfg: DetectionConfig,
    dev: Dev,
}

impl std::fmt::Debug for CudaObbLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaObbLoss").field("cfg", &self.cfg).field("device", &self.dev.name()).finish()
    }
}

cuda_constructors!(CudaObbLoss, V8OBBLoss, DetectionConfig);

impl CudaObbLoss {
    /// `cfg` validated as the CPU backend does it (top-k fixed at 10), then the CUDA limits; then the device opened.
    fn on(cfg: DetectionConfig, dev: impl FnOnce() -> Result<Dev>) -> Result<Self> {
        let cfg = V8OBBLoss::new(cfg)?.cfg;
        check_cuda_limits(&cfg)?;
        Ok(Self { cfg, dev: dev()? })
    }
}

/// As the CPU type: gradients, one per level then the angle's, downloaded whole.
impl TaskLoss<f32> for CudaObbLoss {
    type Preds<'a> = ObbPreds<'a, f32>;
    type Batch<'a> = ObbBatch<'a, f32>;

    fn run(&self, preds: ObbPreds<f32>, batch: &ObbBatch<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        run::run(self.dev, &self.cfg, preds, batch, grads)
    }

    fn overwrites_grads(&self) -> bool {
        true
    }
}

impl Selected<V8OBBLoss, CudaObbLoss> {
    /// The CPU type of this configuration, on either backend: for its helpers that need nothing else (the
    /// binding's `bbox_decode` and `preprocess`).
    pub fn cpu_loss(&self) -> V8OBBLoss {
        match self {
            Self::Cpu(c) => c.clone(),
            Self::Auto(a) => a.cpu().clone(),
            Self::Cuda(g) => V8OBBLoss { cfg: g.cfg.clone() },
        }
    }
}
