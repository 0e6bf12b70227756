//! TVPDetectLoss on the GPU (docs/spec.md §15.1): the detection loss over the visual-prompt class channels, returning
//! (and differentiating) only its cls component, as `yolo_loss_core::prompts::TVPDetectLoss`.

use yolo_loss_core::detection::{check_grad_buffers, datas, GradBufs, LossValues};
use yolo_loss_core::prompts::vp_window;
use yolo_loss_core::{DetBatch, DetectionConfig, LossOutput, Result, TensorRef};

use crate::detection::{CudaDetectionLoss, Flags, Window};

/// `cfg.nc` is the model's class count at construction (the text prompts).
#[derive(Debug, Clone)]
pub struct CudaTVPDetectLoss {
    pub vp: CudaDetectionLoss,
}

impl CudaTVPDetectLoss {
    /// On `cuda:0`.
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Self::on_device(cfg, 0)
    }

    /// As [`Self::new`], on the GPU `cuda:<ordinal>`.
    pub fn on_device(cfg: DetectionConfig, ordinal: usize) -> Result<Self> {
        Ok(Self { vp: CudaDetectionLoss::on_device(cfg, ordinal)? })
    }

    #[cfg(all(test, yolo_cuda_emulator))]
    pub(crate) fn emulated(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { vp: CudaDetectionLoss::emulated(cfg)? })
    }

    pub fn call(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        self.run(feats, batch, Flags::LOSS, None)
    }

    /// Loss: `[B·cls·g_cls]` of the VP branch (or `[3]` zeros without VP channels); items `[3]`.
    pub fn value_and_grad(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        self.run(feats, batch, Flags::GRAD, None)
    }

    /// As `value_and_grad` into caller-provided zero-filled buffers (left untouched without VP channels).
    pub fn value_and_grad_into(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        check_grad_buffers(grads, &datas(feats))?;
        let out = self.run(feats, batch, Flags::GRAD, Some(grads))?;
        Ok((out.loss, out.loss_items))
    }

    /// The loss over the VP window of `feats`; with `into` the gradients go there (and `grads` stays empty).
    fn run(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        flags: Flags,
        into: Option<GradBufs<f32>>,
    ) -> Result<LossOutput<f32>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => Ok(LossOutput {
                loss: vec![0.0; 3],
                loss_items: vec![0.0; 3],
                grads: if flags.grad && into.is_none() {
                    feats.iter().map(|t| vec![0.0; t.data.len()]).collect()
                } else {
                    Vec::new()
                },
            }),
            Some((channels, vnc)) => {
                let window = Window { channels, cls_ch0: 4 * cfg.reg_max + cfg.nc, nc: vnc };
                let mut out = self.vp.run_window(feats, batch, flags, window, true, into)?.out;
                out.loss = vec![out.loss[1]];
                Ok(out)
            }
        }
    }
}
