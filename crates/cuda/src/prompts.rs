//! TVPDetectLoss on the GPU (SPEC §15.1): the detection loss over the visual-prompt class channels, returning
//! (and differentiating) only its cls component, as `yolo_loss_core::prompts::TVPDetectLoss`.

use yolo_loss_core::detection::{GradBufs, LossValues};
use yolo_loss_core::tensor::fmt_shape;
use yolo_loss_core::{DetBatch, DetectionConfig, LossError, LossOutput, Result, TensorRef};

use crate::detection::{check_grad_buffers, CudaDetectionLoss, Flags, Window};

/// `cfg.nc` is the model's class count at construction (the text prompts).
#[derive(Debug, Clone)]
pub struct CudaTVPDetectLoss {
    pub vp: CudaDetectionLoss,
}

impl CudaTVPDetectLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { vp: CudaDetectionLoss::new(cfg)? })
    }

    #[cfg(all(test, yolo_cuda_emulator))]
    pub(crate) fn emulated(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { vp: CudaDetectionLoss::emulated(cfg)? })
    }

    pub fn call(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        self.run(feats, batch, false)
    }

    /// Loss: `[B·cls·g_cls]` of the VP branch (or `[3]` zeros without VP channels); items `[3]`.
    pub fn value_and_grad(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
        self.run(feats, batch, true)
    }

    /// As `value_and_grad` into caller-provided zero-filled buffers (left untouched without VP channels).
    pub fn value_and_grad_into(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        check_grad_buffers(grads, feats)?;
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => Ok((vec![0.0; 3], vec![0.0; 3])),
            Some((channels, vnc)) => {
                let window = Window { channels, cls_ch0: 4 * cfg.reg_max + cfg.nc, nc: vnc };
                let flags = Flags { grad: true, ..Flags::default() };
                let out = self.vp.run_window_into(feats, batch, flags, window, true, Some(grads))?.out;
                Ok((vec![out.loss[1]], out.loss_items))
            }
        }
    }

    fn run(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>, want_grad: bool) -> Result<LossOutput<f32>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => Ok(LossOutput {
                loss: vec![0.0; 3],
                loss_items: vec![0.0; 3],
                grads: if want_grad { feats.iter().map(|t| vec![0.0; t.data.len()]).collect() } else { Vec::new() },
            }),
            Some((channels, vnc)) => {
                let window = Window { channels, cls_ch0: 4 * cfg.reg_max + cfg.nc, nc: vnc };
                let flags = Flags { grad: want_grad, ..Flags::default() };
                let mut out = self.vp.run_window(feats, batch, flags, window, true)?.out;
                out.loss = vec![out.loss[1]];
                Ok(out)
            }
        }
    }
}

/// The visual-prompt class window of `feats`: None when there are no VP channels (crates/core prompts.rs).
fn vp_window(feats: &[TensorRef<f32>], reg_max: usize, ori_nc: usize) -> Result<Option<(usize, usize)>> {
    let f0 = feats.first().ok_or_else(|| LossError::shape("preds: expected at least one level tensor, got none"))?;
    f0.check_rank("preds[0]", 4, "[B, 4·reg_max + nc + vnc, H, W]")?;
    let c = f0.shape[1];
    let base = 4 * reg_max + ori_nc;
    if c < base {
        return Err(LossError::shape(format!(
            "preds[0]: expected at least {base} channels (4·reg_max + text prompts = 4·{reg_max} + {ori_nc}), got shape {}",
            fmt_shape(f0.shape)
        )));
    }
    Ok((c > base).then_some((c, c - base)))
}
