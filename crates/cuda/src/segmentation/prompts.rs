//! TVPSegmentLoss on the GPU (docs/spec.md §15): the segmentation loss over the visual-prompt class channels,
//! returning (and differentiating) only its cls component, as `yolo_loss_core::prompts::TVPSegmentLoss`.

use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::prompts::{vp_window, TVPSegmentLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds};
use yolo_loss_core::{DetectionConfig, Result, TaskLoss};

use super::CudaSegmentationLoss;
use crate::backend::cuda_constructors;
use crate::launch::Dev;

/// `cfg.nc` is the model's class count at construction (the text prompts).
#[derive(Debug, Clone)]
pub struct CudaTVPSegmentLoss {
    pub vp: CudaSegmentationLoss,
}

cuda_constructors!(CudaTVPSegmentLoss, TVPSegmentLoss, DetectionConfig);

impl CudaTVPSegmentLoss {
    /// As [`CudaSegmentationLoss`]'s.
    fn on(cfg: DetectionConfig, dev: impl FnOnce() -> Result<Dev>) -> Result<Self> {
        Ok(Self { vp: CudaSegmentationLoss::on(cfg, dev)? })
    }
}

/// As `yolo_loss_core::prompts::TVPSegmentLoss`. Loss: `[B·cls·g_cls]` of the VP branch (or `[4]` zeros without VP
/// channels, the buffers then left as they are); items `[4]`; gradients as segmentation (zero but for the class
/// channels).
impl TaskLoss<f32> for CudaTVPSegmentLoss {
    type Preds<'a> = SegPreds<'a, f32>;
    type Batch<'a> = SegBatch<'a, f32>;

    fn run(&self, preds: SegPreds<f32>, batch: &SegBatch<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        let cfg = self.vp.cfg();
        match vp_window(preds.feats, cfg.reg_max, cfg.nc)? {
            None => Ok((vec![0.0; 4], vec![0.0; 4])),
            Some((_, vnc)) => {
                let (loss, items) = self.vp.run_window(preds, batch, grads, 4 * cfg.reg_max + cfg.nc, vnc, true)?;
                Ok((vec![loss[2]], items))
            }
        }
    }
}
