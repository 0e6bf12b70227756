//! Host side of a detection call: the same validation as the CPU backend (same messages, same order of errors),
//! the padded GT table, and the per-image choice of soft-argmax form that the CPU assigner makes.
//!
//! `yolo_loss_core::detection::Head` (shape validation) and `estimated_candidates` are `pub(crate)` in the core,
//! so their logic is restated here; see the crate's README note on what should become public.

use yolo_loss_core::detection::DetBatch;
use yolo_loss_core::geometry::AnchorGrid;
use yolo_loss_core::labels::{validate_labels, GtTable};
use yolo_loss_core::tensor::fmt_shape;
use yolo_loss_core::{LossError, Result, TensorRef};

/// Validated shapes of the head outputs (finiteness is checked on the device, see `run.rs`).
#[derive(Debug, Clone)]
pub(crate) struct HeadShape {
    pub batch: usize,
    pub channels: usize,
    pub reg_max: usize,
    pub cls_ch0: usize,
    pub nc: usize,
    pub grid: AnchorGrid,
}

impl HeadShape {
    /// (H_img, W_img) as the losses see it: the first level's size times the first stride, in f32.
    pub fn image_size(&self) -> (f32, f32) {
        let l0 = &self.grid.levels[0];
        (l0.h as f32 * l0.stride as f32, l0.w as f32 * l0.stride as f32)
    }
}

/// `Head::validate_channels` of the core without the finiteness check: `feats[l]` must be
/// `[B, channels, H_l, W_l]` with H_l = ⌈H_0·s_0 / s_l⌉ (likewise W_l).
pub(crate) fn validate_head(
    feats: &[TensorRef<f32>],
    strides: &[f64],
    reg_max: usize,
    channels: usize,
    cls_ch0: usize,
    nc: usize,
) -> Result<HeadShape> {
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
    Ok(HeadShape { batch, channels, reg_max, cls_ch0, nc, grid: AnchorGrid::new(&shapes, strides) })
}

/// The finiteness check of every prediction tensor, with the CPU backend's message.
pub(crate) fn check_finite(feats: &[TensorRef<f32>]) -> Result<()> {
    for (l, f) in feats.iter().enumerate() {
        f.check_finite(&format!("preds[{l}]"))?;
    }
    Ok(())
}

/// Labels validated against the head, the padded pixel GT table, and the top-k feasibility check, in the CPU
/// backend's order (`Assigned::new`).
pub(crate) fn gt_table(head: &HeadShape, batch: &DetBatch<f32>, topk: usize) -> Result<GtTable<f32>> {
    let labels = validate_labels(batch.batch_idx, batch.cls, batch.bboxes, head.batch, head.nc)?;
    let (img_h, img_w) = head.image_size();
    let gt = GtTable::build(&labels, head.batch, [img_w, img_h, img_w, img_h]);
    gt.check_finite()?;
    if gt.max_labels > 0 && head.grid.num_anchors < topk {
        return Err(LossError::shape(format!(
            "preds: expected at least tal_topk = {topk} anchors in total, got {} (feature maps too small)",
            head.grid.num_anchors
        )));
    }
    Ok(gt)
}

/// The GT table as the kernels read it: boxes `[B·M·4]`, and the ints `[cls (B·M) | valid (B·M) | bulk (B)]`.
pub(crate) struct PackedGt {
    pub boxes: Vec<f32>,
    pub ints: Vec<i32>,
    pub slots: usize,
}

pub(crate) fn pack_gt(head: &HeadShape, gt: &GtTable<f32>) -> PackedGt {
    let slots = gt.boxes.len();
    let mut boxes = Vec::with_capacity(slots * 4);
    for b in &gt.boxes {
        boxes.extend_from_slice(b);
    }
    let mut ints = Vec::with_capacity(2 * slots + head.batch);
    // Class ids were validated to be in [0, nc); the assigner truncates them (`.long()`).
    ints.extend(gt.cls.iter().map(|&c| c.trunc() as i32));
    ints.extend(gt.valid.iter().map(|&v| v as i32));
    ints.extend((0..head.batch).map(|b| uses_bulk_decode(head, gt, b) as i32));
    PackedGt { boxes, ints, slots }
}

/// Whether the CPU assigner decodes every anchor of image `b` up front (crates/core detection.rs
/// `assign_batch`: estimated candidates × 16 > anchors), which selects its soft-argmax form.
fn uses_bulk_decode(head: &HeadShape, gt: &GtTable<f32>, b: usize) -> bool {
    let m = gt.max_labels;
    let mut n = 0.0f64;
    for i in b * m..(b + 1) * m {
        if !gt.valid[i] {
            continue;
        }
        let bb = gt.boxes[i];
        let (w, h) = ((bb[2] - bb[0]) as f64, (bb[3] - bb[1]) as f64);
        for lv in &head.grid.levels {
            n += (w / lv.stride + 1.0) * (h / lv.stride + 1.0);
        }
    }
    (n as usize).saturating_mul(16) > head.grid.num_anchors
}
