//! v8SegmentationLoss and TVPSegmentLoss on the GPU (docs/spec.md §10, §15): the same inputs, outputs and errors as
//! `yolo_loss_core::segmentation::V8SegmentationLoss` and `yolo_loss_core::prompts::TVPSegmentLoss`, computed by the
//! detection kernels (cuda/det_*.cu) and the mask kernels of cuda/seg_mask.cu (see `run.rs` for the sequence).
//!
//! Parity with the CPU backend: same positives (the detection assignment), every mask logit, BCE and per-pixel
//! gradient computed with the CPU's operations in its order; the prototype gradient and each row's sums are
//! bit-equal to the CPU's, the coefficient gradient and the mask term equal up to the order of a few additions.

mod params;
mod prompts;
mod run;
#[cfg(test)]
mod tests;

use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetectionConfig, Result, TaskLoss};

pub use prompts::CudaTVPSegmentLoss;
#[cfg(test)]
pub(crate) use run::KERNELS;

use crate::backend::cuda_constructors;
use crate::detection::run::Job;
use crate::detection::{CudaDetectionLoss, Flags, Window};
use crate::launch::Dev;

#[derive(Clone)]
pub struct CudaSegmentationLoss {
    /// The configuration (validated) and the device, as the detection loss holds them.
    det: CudaDetectionLoss,
}

impl std::fmt::Debug for CudaSegmentationLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaSegmentationLoss").field("cfg", &self.det.cfg).field("device", &self.device_name()).finish()
    }
}

cuda_constructors!(CudaSegmentationLoss, V8SegmentationLoss, DetectionConfig);

impl CudaSegmentationLoss {
    /// `cfg` validated as the detection loss does it (the CPU backend's checks, then the CUDA limits); then the
    /// device opened.
    pub(crate) fn on(cfg: DetectionConfig, dev: impl FnOnce() -> Result<Dev>) -> Result<Self> {
        Ok(Self { det: CudaDetectionLoss::on(cfg, dev)? })
    }

    pub fn cfg(&self) -> &DetectionConfig {
        &self.det.cfg
    }

    /// Name of the GPU the loss runs on.
    pub fn device_name(&self) -> &str {
        self.det.device_name()
    }

    /// The loss over the class window `[cls_ch0, cls_ch0 + nc)` of level tensors of `channels` channels (the CPU's
    /// `run_window`); `only_cls`: the gradient of the cls component alone (TVPSegmentLoss).
    fn run_window(
        &self,
        preds: SegPreds<f32>,
        batch: &SegBatch<f32>,
        grads: GradBufs<f32>,
        cls_ch0: usize,
        nc: usize,
        only_cls: bool,
    ) -> Result<LossValues<f32>> {
        let cfg = &self.det.cfg;
        // As the CPU backend: the level tensors' own channel count, at least the class window's end.
        let channels = preds.feats.first().and_then(|f| f.shape.get(1).copied()).unwrap_or(0).max(cls_ch0 + nc);
        let window = Window { channels, cls_ch0, nc };
        let job = run::SegJob {
            det: Job::new(cfg, cfg.tal_topk, window, only_cls, Flags { grad: !grads.is_empty(), ..Flags::LOSS }),
            overlap: cfg.hyp.overlap_mask,
        };
        run::run(self.dev(), &job, preds, batch, grads)
    }

    fn dev(&self) -> Dev {
        self.det.dev
    }
}

/// As `yolo_loss_core::segmentation::V8SegmentationLoss`: loss `[box, seg, cls, dfl]·B`, items, and the gradients
/// (one per level, then `pred_masks`, then `proto`) downloaded whole into the buffers (every element written).
impl TaskLoss<f32> for CudaSegmentationLoss {
    type Preds<'a> = SegPreds<'a, f32>;
    type Batch<'a> = SegBatch<'a, f32>;

    fn run(&self, preds: SegPreds<f32>, batch: &SegBatch<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        let cfg = &self.det.cfg;
        self.run_window(preds, batch, grads, 4 * cfg.reg_max, cfg.nc, false)
    }

    fn overwrites_grads(&self) -> bool {
        true
    }
}
