//! The text/visual-prompt losses of YOLOE (SPEC §15): the class channels are text prompts then visual
//! prompts; the loss runs on the visual-prompt channels only and back-propagates the cls component.

use crate::detection::{check_grad_buffers, datas, with_fresh_grads, without_grads, DetBatch, DetectionConfig, GradBufs, GradInit, LossOutput, LossValues, V8DetectionLoss};
use crate::error::{LossError, Result};
use crate::real::Real;
use crate::segmentation::{seg_inputs, SegBatch, V8SegmentationLoss};
use crate::tensor::{fmt_shape, TensorRef};

/// TVPDetectLoss: `cfg.nc` is the model's class count at construction (the text prompts).
#[derive(Debug, Clone)]
pub struct TVPDetectLoss {
    pub vp: V8DetectionLoss,
}

/// The visual-prompt class window of `feats` (level tensors `[B, 4·reg_max + ori_nc + vnc, H, W]`, text prompts
/// then visual prompts): `Some((channels, vnc))`, or None when there are no VP channels (the loss is then zeros).
/// Checks `preds[0]`'s rank and minimum channel count first; public so that other backends take the same window
/// with the same errors.
pub fn vp_window<F: Real>(feats: &[TensorRef<F>], reg_max: usize, ori_nc: usize) -> Result<Option<(usize, usize)>> {
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

/// The result when no visual-prompt channels are present: `[n]` zeros (a fresh leaf in the reference,
/// so the gradients stay zero).
fn zero_values<F: Real>(n: usize) -> LossValues<F> {
    (vec![F::zero(); n], vec![F::zero(); n])
}

impl TVPDetectLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { vp: V8DetectionLoss::new(cfg)? })
    }

    pub fn call<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        without_grads(|g| self.run(feats, batch, g))
    }

    /// Loss: `[B·cls·g_cls]` of the VP branch (or `[3]` zeros without VP channels); items `[3]`.
    pub fn value_and_grad<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        with_fresh_grads(&datas(feats), |g| self.run(feats, batch, g))
    }

    /// As [`value_and_grad`](Self::value_and_grad) into caller-provided zero-filled buffers.
    pub fn value_and_grad_into<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &datas(feats))?;
        self.run(feats, batch, grads)
    }

    fn run<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => Ok(zero_values(3)),
            Some((channels, vnc)) => self.vp.run_window(feats, batch, grads, channels, 4 * cfg.reg_max + cfg.nc, vnc, true, GradInit::Zeroed),
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
        without_grads(|g| self.run(feats, pred_masks, proto, batch, g))
    }

    /// Loss: `[B·cls·g_cls]` of the VP branch (or `[4]` zeros); items `[4]`; gradients as segmentation.
    pub fn value_and_grad<F: Real>(&self, feats: &[TensorRef<F>], pred_masks: TensorRef<F>, proto: TensorRef<F>, batch: &SegBatch<F>) -> Result<LossOutput<F>> {
        with_fresh_grads(&seg_inputs(feats, pred_masks, proto), |g| self.run(feats, pred_masks, proto, batch, g))
    }

    /// As [`value_and_grad`](Self::value_and_grad) into caller-provided zero-filled buffers.
    pub fn value_and_grad_into<F: Real>(&self, feats: &[TensorRef<F>], pred_masks: TensorRef<F>, proto: TensorRef<F>, batch: &SegBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &seg_inputs(feats, pred_masks, proto))?;
        self.run(feats, pred_masks, proto, batch, grads)
    }

    fn run<F: Real>(&self, feats: &[TensorRef<F>], pred_masks: TensorRef<F>, proto: TensorRef<F>, batch: &SegBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => Ok(zero_values(4)),
            Some((_, vnc)) => {
                let (loss, items) = self.vp.run(feats, pred_masks, proto, batch, grads, 4 * cfg.reg_max + cfg.nc, vnc, true)?;
                Ok((vec![loss[2]], items))
            }
        }
    }
}
