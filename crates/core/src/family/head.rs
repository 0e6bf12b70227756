//! The head outputs of a detection-family loss, validated: what every such loss (and the CUDA backend) checks first.

use crate::error::{LossError, Result};
use crate::geometry::AnchorGrid;
use crate::real::Real;
use crate::tensor::{all_finite_parallel, fmt_shape, TensorRef};

/// Validated view of the head outputs: B, the anchor grid and the per-level data.
///
/// Public so that another backend of the detection-family losses (the CUDA crate) validates the head exactly as
/// the CPU losses do (same checks, same messages, same order) and sees the same image size and grid.
pub struct Head<'a, F> {
    /// B, the batch size shared by every level.
    pub batch: usize,
    /// The anchors of every level, in the losses' order.
    pub grid: AnchorGrid,
    /// The data of each level tensor `[B, channels, H_l, W_l]`.
    pub levels: Vec<&'a [F]>,
    /// Channels per level: 4R + nc (TVP: 4R + text prompts + visual prompts).
    pub channels: usize,
    /// R, the DFL bins per box side (1: raw distances).
    pub reg_max: usize,
    /// Channel of the first class logit the loss uses, and how many it uses.
    pub cls_ch0: usize,
    pub nc: usize,
}

impl<'a, F: Real> Head<'a, F> {
    /// `feats[l]` must be `[B, 4R + nc, H_l, W_l]`, finite, with H_l·s_l and W_l·s_l covering the
    /// image size (H_0·s_0, W_0·s_0) exactly as strided convolutions produce: H_l = ⌈H_0·s_0 / s_l⌉.
    pub fn validate(feats: &[TensorRef<'a, F>], strides: &[f64], reg_max: usize, nc: usize) -> Result<Self> {
        Self::validate_channels(feats, strides, reg_max, 4 * reg_max + nc, 4 * reg_max, nc)
    }

    /// As [`Head::validate`] with an explicit channel count and class-channel window (TVP losses).
    pub fn validate_channels(
        feats: &[TensorRef<'a, F>],
        strides: &[f64],
        reg_max: usize,
        channels: usize,
        cls_ch0: usize,
        nc: usize,
    ) -> Result<Self> {
        let head = Self::validate_shapes(feats, strides, reg_max, channels, cls_ch0, nc)?;
        check_preds_finite(feats)?;
        Ok(head)
    }

    /// [`Head::validate_channels`] without its last step, the finiteness check ([`check_preds_finite`]): for a
    /// backend that checks finiteness where the data lives. Every shape error comes first, as there.
    pub fn validate_shapes(
        feats: &[TensorRef<'a, F>],
        strides: &[f64],
        reg_max: usize,
        channels: usize,
        cls_ch0: usize,
        nc: usize,
    ) -> Result<Self> {
        if feats.len() != strides.len() {
            return Err(LossError::shape(format!(
                "preds: expected {} level tensors (one per stride {:?}), got {}",
                strides.len(),
                strides,
                feats.len()
            )));
        }
        let mut shapes = Vec::with_capacity(feats.len());
        let mut batch = 0;
        for (l, f) in feats.iter().enumerate() {
            let name = format!("preds[{l}]");
            f.check_rank(
                &name,
                4,
                &format!("[B, {channels}, H, W] (4·reg_max + nc = 4·{reg_max} + {} channels)", channels - 4 * reg_max),
            )?;
            if l == 0 {
                batch = f.shape[0];
            } else if f.shape[0] != batch {
                return Err(LossError::shape(format!(
                    "{name}: expected batch size {batch} like preds[0], got shape {}",
                    fmt_shape(f.shape)
                )));
            }
            if f.shape[1] != channels {
                return Err(LossError::shape(format!(
                    "{name}: expected {channels} channels (4·reg_max + nc = 4·{reg_max} + {}), got shape {}",
                    channels - 4 * reg_max,
                    fmt_shape(f.shape)
                )));
            }
            shapes.push((f.shape[2], f.shape[3]));
        }
        if batch == 0 {
            return Err(LossError::shape("preds[0]: expected a batch size of at least 1, got 0".to_string()));
        }
        let (h0, w0) = shapes[0];
        if h0 == 0 || w0 == 0 {
            return Err(LossError::shape(format!(
                "preds[0]: expected a non-empty feature map, got shape {}",
                fmt_shape(feats[0].shape)
            )));
        }
        let (img_h, img_w) = (h0 as f64 * strides[0], w0 as f64 * strides[0]);
        for (l, &(h, w)) in shapes.iter().enumerate().skip(1) {
            let (eh, ew) = ((img_h / strides[l]).ceil() as usize, (img_w / strides[l]).ceil() as usize);
            if h != eh || w != ew {
                return Err(LossError::shape(format!(
                    "preds[{l}]: expected spatial size [{eh}, {ew}] for stride {} (image {img_h}×{img_w} from preds[0] at stride {}), got shape {}",
                    strides[l],
                    strides[0],
                    fmt_shape(feats[l].shape)
                )));
            }
        }
        Ok(Self {
            batch,
            grid: AnchorGrid::new(&shapes, strides),
            levels: feats.iter().map(|f| f.data).collect(),
            channels,
            reg_max,
            cls_ch0,
            nc,
        })
    }

    /// (H_img, W_img) as the losses see it: the first level's size times the first stride (the scale of the
    /// normalized label boxes).
    pub fn image_size(&self) -> (F, F) {
        let l0 = &self.grid.levels[0];
        (F::from_usize_(l0.h) * F::c(l0.stride), F::from_usize_(l0.w) * F::c(l0.stride))
    }

    /// Whether every channel of image `b` outside the class window `[cls_ch0, cls_ch0 + nc)` is finite.
    pub(crate) fn image_finite_outside_class_window(&self, b: usize) -> bool {
        (0..self.levels.len()).all(|l| {
            let hw = self.grid.levels[l].len();
            let d = self.image_level(b, l);
            all_finite_parallel(&d[..self.cls_ch0 * hw]) && all_finite_parallel(&d[(self.cls_ch0 + self.nc) * hw..])
        })
    }

    /// The slice of level `l` that belongs to image `b`: `[C, H_l·W_l]`.
    #[inline]
    pub fn image_level(&self, b: usize, l: usize) -> &'a [F] {
        let n = self.channels * self.grid.levels[l].len();
        &self.levels[l][b * n..(b + 1) * n]
    }
}

/// An error met before the level tensors are known to be finite, as the validation in one go would report it: the
/// first non-finite element's error when there is one (that check comes first there), else `e`. For the losses that
/// check finiteness by parts, as [`V8DetectionLoss`](crate::V8DetectionLoss) does (the class window in the class
/// pass, the other channels image by image in the assignment), so that no separate pass reads the level tensors.
pub(crate) fn preds_error_first<F: Real>(feats: &[TensorRef<F>], e: LossError) -> LossError {
    check_preds_finite(feats).err().unwrap_or(e)
}

/// Every prediction tensor must be finite; the error names the first bad one as `preds[l]` (the last check of
/// [`Head::validate_channels`]).
pub fn check_preds_finite<F: Real>(feats: &[TensorRef<F>]) -> Result<()> {
    for (l, f) in feats.iter().enumerate() {
        f.check_finite(&format!("preds[{l}]"))?;
    }
    Ok(())
}
