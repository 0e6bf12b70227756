//! TVPDetectLoss on the GPU (docs/spec.md §15.1): the detection loss over the visual-prompt class channels, returning
//! (and differentiating) only its cls component, as `yolo_loss_core::prompts::TVPDetectLoss`.

use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::prompts::{vp_window, TVPDetectLoss};
use yolo_loss_core::{DetBatch, DetectionConfig, Result, TaskLoss, TensorRef};

use crate::backend::cuda_constructors;
use crate::detection::{CudaDetectionLoss, Flags, Window};
use crate::launch::Dev;

/// `cfg.nc` is the model's class count at construction (the text prompts).
#[derive(Debug, Clone)]
pub struct CudaTVPDetectLoss {
    pub vp: CudaDetectionLoss,
}

cuda_constructors!(CudaTVPDetectLoss, TVPDetectLoss, DetectionConfig);

impl CudaTVPDetectLoss {
    /// As [`CudaDetectionLoss`]'s.
    fn on(cfg: DetectionConfig, dev: impl FnOnce() -> Result<Dev>) -> Result<Self> {
        Ok(Self { vp: CudaDetectionLoss::on(cfg, dev)? })
    }
}

/// As `yolo_loss_core::prompts::TVPDetectLoss`. Loss: `[B·cls·g_cls]` of the VP branch (or `[3]` zeros without VP
/// channels, the buffers then left as they are); items `[3]`.
impl TaskLoss<f32> for CudaTVPDetectLoss {
    type Preds<'a> = &'a [TensorRef<'a, f32>];
    type Batch<'a> = DetBatch<'a, f32>;

    fn run(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => Ok((vec![0.0; 3], vec![0.0; 3])),
            Some((channels, vnc)) => {
                let window = Window { channels, cls_ch0: 4 * cfg.reg_max + cfg.nc, nc: vnc };
                let (flags, into) = if grads.is_empty() { (Flags::LOSS, None) } else { (Flags::GRAD, Some(grads)) };
                let out = self.vp.run_window(feats, batch, flags, window, true, into)?.out;
                Ok((vec![out.loss[1]], out.loss_items))
            }
        }
    }
}
