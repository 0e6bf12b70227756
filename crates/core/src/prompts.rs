//! The text/visual-prompt losses of YOLOE (SPEC §15): the class channels are text prompts then visual
//! prompts; the loss runs on the visual-prompt channels only and back-propagates the cls component.

use crate::detection::{DetBatch, DetectionConfig, LossOutput, V8DetectionLoss};
use crate::error::{LossError, Result};
use crate::real::Real;
use crate::segmentation::{SegBatch, V8SegmentationLoss};
use crate::tensor::{fmt_shape, TensorRef};

/// TVPDetectLoss: `cfg.nc` is the model's class count at construction (the text prompts).
#[derive(Debug, Clone)]
pub struct TVPDetectLoss {
    pub vp: V8DetectionLoss,
}

/// The visual-prompt class window of `feats`: None when there are no VP channels.
fn vp_window<F: Real>(feats: &[TensorRef<F>], reg_max: usize, ori_nc: usize) -> Result<Option<(usize, usize)>> {
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

/// The zero result when no visual-prompt channels are present: a `[n]` zero loss, zero gradients.
fn zero_result<F: Real>(n: usize, grads_like: &[&[F]], want_grad: bool) -> LossOutput<F> {
    LossOutput { loss: vec![F::zero(); n], loss_items: vec![F::zero(); n], grads: if want_grad { grads_like.iter().map(|t| vec![F::zero(); t.len()]).collect() } else { Vec::new() } }
}

impl TVPDetectLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { vp: V8DetectionLoss::new(cfg)? })
    }

    pub fn call<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        self.run(feats, batch, false)
    }

    /// Loss: `[B·cls·g_cls]` of the VP branch (or `[3]` zeros without VP channels); items `[3]`.
    pub fn value_and_grad<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        self.run(feats, batch, true)
    }

    fn run<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, want_grad: bool) -> Result<LossOutput<F>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => {
                let data: Vec<&[F]> = feats.iter().map(|f| f.data).collect();
                Ok(zero_result(3, &data, want_grad))
            }
            Some((channels, vnc)) => self.vp.run_window(feats, batch, want_grad, channels, 4 * cfg.reg_max + cfg.nc, vnc, true),
        }
    }
}

/// TVPSegmentLoss with the intended semantics (Project decision 4; the reference release raises).
#[derive(Debug, Clone)]
pub struct TVPSegmentLoss {
    pub vp: V8SegmentationLoss,
}

impl TVPSegmentLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { vp: V8SegmentationLoss::new(cfg)? })
    }

    pub fn call<F: Real>(&self, feats: &[TensorRef<F>], pred_masks: TensorRef<F>, proto: TensorRef<F>, batch: &SegBatch<F>) -> Result<LossOutput<F>> {
        self.run(feats, pred_masks, proto, batch, false)
    }

    /// Loss: `[B·cls·g_cls]` of the VP branch (or `[4]` zeros); items `[4]`; gradients as segmentation.
    pub fn value_and_grad<F: Real>(&self, feats: &[TensorRef<F>], pred_masks: TensorRef<F>, proto: TensorRef<F>, batch: &SegBatch<F>) -> Result<LossOutput<F>> {
        self.run(feats, pred_masks, proto, batch, true)
    }

    fn run<F: Real>(&self, feats: &[TensorRef<F>], pred_masks: TensorRef<F>, proto: TensorRef<F>, batch: &SegBatch<F>, want_grad: bool) -> Result<LossOutput<F>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => {
                let mut data: Vec<&[F]> = feats.iter().map(|f| f.data).collect();
                data.push(pred_masks.data);
                data.push(proto.data);
                Ok(zero_result(4, &data, want_grad))
            }
            Some((_, vnc)) => {
                let mut out = self.vp.run(feats, pred_masks, proto, batch, want_grad, 4 * cfg.reg_max + cfg.nc, vnc, Some(()))?;
                out.loss = vec![out.loss[2]];
                Ok(out)
            }
        }
    }
}
