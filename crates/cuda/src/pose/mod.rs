//! v8PoseLoss on the GPU (docs/spec.md §11): the same inputs, outputs and errors as
//! `yolo_loss_core::pose::V8PoseLoss`, computed by the detection kernels (cuda/det_*.cu) and the keypoint pass of
//! cuda/pose.cu (see `run.rs`). Both sigma choices (COCO-17 OKS sigmas or 1/K) are the CPU type's (`PoseConfig`).

mod params;
pub(crate) mod run;
#[cfg(test)]
mod tests;

use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::{Result, TaskLoss};

use crate::backend::{cuda_constructors, Selected};
use crate::detection::check_cuda_limits;
use crate::launch::Dev;

#[derive(Clone)]
pub struct CudaPoseLoss {
    pub cfg: PoseConfig,
    sigmas: Vec<f64>,
    dev: Dev,
}

impl std::fmt::Debug for CudaPoseLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaPoseLoss").field("cfg", &self.cfg).field("device", &self.dev.name()).finish()
    }
}

cuda_constructors!(CudaPoseLoss, V8PoseLoss, PoseConfig);

impl CudaPoseLoss {
    /// `cfg` validated as the CPU backend does it, then the CUDA limits; then the device opened.
    fn on(cfg: PoseConfig, dev: impl FnOnce() -> Result<Dev>) -> Result<Self> {
        let cfg = V8PoseLoss::new(cfg)?.cfg;
        check_cuda_limits(&cfg.det)?;
        let sigmas = cfg.sigmas();
        Ok(Self { cfg, sigmas, dev: dev()? })
    }
}

/// As the CPU type: gradients, one per level then `kpts`, downloaded whole.
impl TaskLoss<f32> for CudaPoseLoss {
    type Preds<'a> = PosePreds<'a, f32>;
    type Batch<'a> = PoseBatch<'a, f32>;

    fn run(&self, preds: PosePreds<f32>, batch: &PoseBatch<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        run::run(self.dev, &self.cfg, &self.sigmas, preds, batch, grads)
    }

    fn overwrites_grads(&self) -> bool {
        true
    }
}

impl Selected<V8PoseLoss, CudaPoseLoss> {
    /// The configuration, on either backend (the binding reads the sigmas from it).
    pub fn config(&self) -> &PoseConfig {
        match self {
            Self::Cpu(c) => &c.cfg,
            Self::Cuda(g) => &g.cfg,
            Self::Auto(a) => &a.cpu().cfg,
        }
    }
}
