//! One evaluation of v8SegmentationLoss on the device: the detection stages (detection/stages.rs: inputs,
//! assignment, class and box passes), then the mask passes of cuda/seg_mask.cu, reading the positives the
//! assignment left on the device:
//!
//! ```text
//! host:        shapes (preds, then pred_masks/proto), labels, GT masks: the CPU backend's checks, order, messages
//! detection:   DetectionStages (decode, assign, resolve, scores, class, box)
//! yl_seg_positives  the positives listed per image, the mask gradient scale
//! yl_seg_mask       per positive: its mask term, crop, and coefficient gradient
//! yl_seg_proto      per (image, prototype pixel): the prototype gradient (gradients only)
//! download:    the detection sums, the per-positive mask terms (added on the host in the CPU's order), gradients
//! ```

use std::ops::Range;

use yolo_loss_core::detection::{check_preds_finite, labels_and_gt, Head};
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::segmentation::{check_gt_masks, check_mask_head, SegBatch, SegPreds};
use yolo_loss_core::{Result, TensorRef};

use super::params::SegParams;
use crate::detection::run::{Job, Kernels};
use crate::detection::stages::{DetectionStages, BLOCK};
use crate::launch::{int, Arena, ArenaLayout, Dev, DevBuf, Part};

const POSITIVES: &str = "yl_seg_positives";
const MASK: &str = "yl_seg_mask";
const PROTO: &str = "yl_seg_proto";
/// The kernels of cuda/seg_mask.cu, in launch order (for the test that every kernel built has a launcher).
#[cfg(test)]
pub(crate) const KERNELS: &[&str] = &[POSITIVES, MASK, PROTO];
/// Threads per block of yl_seg_positives and yl_seg_mask (`kPositivesThreads`, `kMaskThreads` in seg_mask.cu).
const POSITIVES_THREADS: u32 = 256;
const MASK_THREADS: u32 = 64;
/// Most blocks of yl_seg_mask (it strides over the positives, whose number only the device knows).
const MASK_BLOCKS_MAX: usize = 4096;

/// The segmentation configuration the run needs beyond the detection job.
pub(crate) struct SegJob<'c> {
    pub det: Job<'c>,
    pub overlap: bool,
}

/// The mask inputs on the device, checked, with their sizes.
pub(crate) struct MaskInputs {
    pub nm: usize,
    pub mh: usize,
    pub mw: usize,
    pub gt_h: usize,
    pub gt_w: usize,
    pub overlap: bool,
    pub gain_box: f64,
    pub pred_masks: DevBuf<f32>,
    pub proto: DevBuf<f32>,
    pub masks: DevBuf<f32>,
    /// One buffer of ints: source rows, source columns, and the mask row of each GT slot (non-overlap).
    pub index: DevBuf<i32>,
    pub rows: Range<usize>,
    pub cols: Range<usize>,
    pub slots: Range<usize>,
}

/// The mask passes' parts of the call's arena.
pub(crate) struct MaskParts {
    pub want_grad: bool,
    pub pos_anchor: Part<i32>,
    pub pos_start: Part<i32>,
    pub scalars: Part<f32>,
    pub crops: Part<i32>,
    pub ups: Part<f32>,
    pub values: Part<f64>,
    /// Zeroed: only the positives' coefficients get a gradient.
    pub grad_coef: Part<f32>,
    /// Every element written by yl_seg_proto.
    pub grad_proto: Part<f32>,
}

impl MaskParts {
    fn plan(layout: &mut ArenaLayout, head: &Head<f32>, m: &MaskInputs, want_grad: bool) -> Self {
        let (b, a) = (head.batch, head.grid.num_anchors);
        let grad_len = |n: usize| if want_grad { n } else { 0 };
        MaskParts {
            want_grad,
            pos_anchor: layout.part(b * a),
            pos_start: layout.part(b + 1),
            scalars: layout.part(4),
            crops: layout.part(4 * b * a),
            ups: layout.part(b * a),
            values: layout.part(b * a),
            grad_coef: layout.zeroed(grad_len(b * m.nm * a)),
            grad_proto: layout.part(grad_len(b * m.nm * m.mh * m.mw)),
        }
    }
}

/// An error found on the host after the predictions' shapes: the CPU backend checks the predictions' finiteness
/// before it, so a non-finite prediction is reported instead where there is one.
fn after_preds_finite<T>(feats: &[TensorRef<f32>], r: Result<T>) -> Result<T> {
    if r.is_err() {
        check_preds_finite(feats)?;
    }
    r
}

/// Checks the GT masks (the CPU backend's last check, see `run`) and uploads the mask inputs; `(nm, mh, mw)`: the
/// checked mask head's sizes.
fn mask_inputs(
    dev: Dev,
    job: &SegJob,
    head: &Head<f32>,
    (nm, mh, mw): (usize, usize, usize),
    preds: &SegPreds<f32>,
    batch: &SegBatch<f32>,
    per_image: usize,
) -> Result<MaskInputs> {
    let (labels, _) = labels_and_gt(head, &batch.det, job.det.topk)?;
    let index =
        after_preds_finite(preds.feats, check_gt_masks(head.batch, &labels.image, batch.masks, job.overlap, mh, mw))?;
    let (gt_h, gt_w) = (batch.masks.shape[1], batch.masks.shape[2]);
    for (what, v) in [("prototype size", nm * mh * mw), ("GT mask size", batch.masks.data.len())] {
        int(what, v)?;
    }
    let mut ints: Vec<i32> = index.rows.iter().chain(&index.cols).map(|&v| v as i32).collect();
    for rows in &index.rows_of_image {
        ints.extend((0..per_image).map(|g| rows.get(g).map_or(0, |&r| r as i32)));
    }
    let (rows, cols) = (0..mh, mh..mh + mw);
    let slots = mh + mw..ints.len();
    Ok(MaskInputs {
        nm,
        mh,
        mw,
        gt_h,
        gt_w,
        overlap: job.overlap,
        gain_box: job.det.gains[0],
        pred_masks: dev.upload("pred_masks", preds.pred_masks.data)?,
        proto: dev.upload("proto", preds.proto.data)?,
        masks: dev.upload("batch.masks", batch.masks.data)?,
        index: dev.upload("the GT mask index", &ints)?,
        rows,
        cols,
        slots,
    })
}

/// Runs one evaluation: (loss, items) `[box, seg, cls, dfl]`, and the gradients into `grads` (one per level, then
/// `pred_masks`, then `proto`; every element written) unless it is empty.
pub(crate) fn run(
    dev: Dev,
    job: &SegJob,
    preds: SegPreds<f32>,
    batch: &SegBatch<f32>,
    grads: GradBufs<f32>,
) -> Result<LossValues<f32>> {
    let d = &job.det;
    let feats = preds.feats;
    // The CPU backend's order: level shapes (finiteness on the device), the mask head, labels, GT masks.
    let head = Head::validate_shapes(feats, d.strides, d.reg_max, d.channels, d.cls_ch0, d.nc)?;
    let sizes = after_preds_finite(feats, check_mask_head(&head, preds.pred_masks, preds.proto))?;
    let mut layout = ArenaLayout::default();
    let stages = DetectionStages::prepare(dev, d, feats, &batch.det, &mut layout)?;
    let inputs = mask_inputs(dev, job, &stages.head, sizes, &preds, batch, stages.gt.per_image())?;
    let parts = MaskParts::plan(&mut layout, &stages.head, &inputs, d.want_grad);
    let (b, a) = (stages.head.batch, stages.head.grid.num_anchors);
    let mask_blocks = (b * a).min(MASK_BLOCKS_MAX) as u32;
    let proto_blocks = int("prototype blocks", (b * inputs.mh * inputs.mw).div_ceil(BLOCK as usize))? as u32;
    int("coefficients", b * inputs.nm * a)?;

    let arena = dev.arena("segmentation work buffers", &layout)?;
    let det = stages.params(d, &arena);
    let seg = SegParams::new(&stages, &inputs, &parts, &arena, d.only_cls);
    let mut kernels = Kernels::start(dev, d.timing)?;
    stages.launch(&mut kernels, &det)?;
    kernels.launch(POSITIVES, 1, POSITIVES_THREADS, &seg)?;
    kernels.launch(MASK, mask_blocks, MASK_THREADS, &seg)?;
    if d.want_grad {
        kernels.launch(PROTO, proto_blocks, BLOCK, &seg)?;
    }
    kernels.finish()?;

    let (_, det_items) = stages.loss(d, &arena, feats)?;
    let seg_item = mask_item(&arena, &parts, b, inputs.gain_box)?;
    let items = vec![det_items[0], seg_item, det_items[1], det_items[2]];
    let loss = items.iter().map(|&v| v * b as f32).collect();
    if d.want_grad {
        let levels = feats.len();
        let (level_grads, mask_grads) = grads.split_at_mut(levels);
        stages.levels.download_grads(Some(level_grads))?;
        arena.view(parts.grad_coef).download("the gradient of pred_masks", &mut *mask_grads[0])?;
        arena.view(parts.grad_proto).download("the gradient of proto", &mut *mask_grads[1])?;
    }
    Ok((loss, items))
}

/// The seg item: Σ over images (in order) of Σ over their positives (in anchor order) of the mask terms, / P · g_box,
/// as the CPU backend computes it; 0 without positives.
fn mask_item(arena: &Arena, parts: &MaskParts, batch: usize, gain_box: f64) -> Result<f32> {
    let mut start = vec![0i32; batch + 1];
    arena.view(parts.pos_start).download("the positives per image", &mut start)?;
    let p = start[batch] as usize;
    if p == 0 {
        return Ok(0.0);
    }
    let mut values = vec![0f64; arena.view(parts.values).len()];
    arena.view(parts.values).download("the mask terms", &mut values)?;
    let per_image = (0..batch).map(|i| values[start[i] as usize..start[i + 1] as usize].iter().sum::<f64>());
    let total: f64 = per_image.sum();
    Ok(total as f32 / p as f32 * gain_box as f32)
}
