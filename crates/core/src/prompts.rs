//! The text/visual-prompt losses of YOLOE (docs/spec.md §15): the class channels are text prompts then visual
//! prompts; the loss runs on the visual-prompt channels only and back-propagates the cls component.

use crate::detection::{DetBatch, DetectionConfig, GradInit, V8DetectionLoss};
use crate::error::{LossError, Result};
use crate::loss::{zero_fill, GradBufs, LossValues, TaskLoss};
use crate::real::Real;
use crate::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
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

    /// The loss over the VP window, into gradient buffers that hold what `init` says.
    fn run_init<F: Real>(
        &self,
        feats: &[TensorRef<F>],
        batch: &DetBatch<F>,
        grads: GradBufs<F>,
        init: GradInit,
    ) -> Result<LossValues<F>> {
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => {
                // No VP channels: the gradient is zero everywhere, which leftovers in the buffers are not.
                if init == GradInit::Any {
                    zero_fill(grads);
                }
                Ok(zero_values(3))
            }
            Some((channels, vnc)) => {
                self.vp.run_window(feats, batch, grads, channels, 4 * cfg.reg_max + cfg.nc, vnc, true, init)
            }
        }
    }
}

/// The level tensors `[B, 4·reg_max + nc + vnc, H_l, W_l]`. Loss: `[B·cls·g_cls]` of the VP branch (or `[3]` zeros
/// without VP channels); items `[3]`; gradients: one per level.
impl<F: Real> TaskLoss<F> for TVPDetectLoss {
    type Preds<'a> = &'a [TensorRef<'a, F>];
    type Batch<'a> = DetBatch<'a, F>;

    fn run(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        self.run_init(feats, batch, grads, GradInit::Zeroed)
    }

    /// As V8DetectionLoss's: only the channels outside the VP window are cleared (all of them without VP channels).
    fn run_overwrite(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        self.run_init(feats, batch, grads, GradInit::Any)
    }
}

/// TVPSegmentLoss with the intended semantics (docs/spec.md §D4; the reference release raises).
#[derive(Debug, Clone)]
pub struct TVPSegmentLoss {
    pub vp: V8SegmentationLoss,
}

impl TVPSegmentLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { vp: V8SegmentationLoss::new(cfg)? })
    }
}

/// As segmentation. Loss: `[B·cls·g_cls]` of the VP branch (or `[4]` zeros); items `[4]`; gradients as segmentation.
impl<F: Real> TaskLoss<F> for TVPSegmentLoss {
    type Preds<'a> = SegPreds<'a, F>;
    type Batch<'a> = SegBatch<'a, F>;

    fn run(&self, preds: SegPreds<F>, batch: &SegBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let SegPreds { feats, pred_masks, proto } = preds;
        let cfg = &self.vp.cfg;
        match vp_window(feats, cfg.reg_max, cfg.nc)? {
            None => Ok(zero_values(4)),
            Some((_, vnc)) => {
                let (loss, items) =
                    self.vp.run_window(feats, pred_masks, proto, batch, grads, 4 * cfg.reg_max + cfg.nc, vnc, true)?;
                Ok((vec![loss[2]], items))
            }
        }
    }
}
