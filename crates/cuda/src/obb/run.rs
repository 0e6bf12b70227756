//! One evaluation of v8OBBLoss on the device: the detection stages with the rotated assignment in place of the
//! axis-aligned one, then the rotated box pass (cuda/obb.cu):
//!
//! ```text
//! host:            the CPU backend's checks in its order (V8OBBLoss::prepare); the GT table packed with each
//!                  box's corner bounds, the rotated boxes beside it
//! yl_det_decode    per (b, side, a): soft-argmax distances (the rotated assigner's form per image)
//! yl_obb_assign    per GT slot: rotated candidates, probIoU overlaps, top-k, claims
//! yl_obb_resolve   per (b, a): conflict resolution
//! yl_det_scores    per (b, a): soft scores, S and the gradient scales
//! yl_det_class     the class term (the detection pass)
//! yl_obb_box       per (b, a): probIoU and DFL terms of the positives, gradients into the box channels and θ
//! download:        S, partial sums, gradients
//! ```

use yolo_loss_core::detection::{check_preds_finite, Head};
use yolo_loss_core::labels::GtTable;
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::obb::{corner_bounds, decodes_all_up_front_rotated, ObbBatch, ObbGtTable, ObbPreds, OBB_TOPK};
use yolo_loss_core::{DetectionConfig, Result, V8OBBLoss};

use super::params::{ObbParams, RotatedInputs};
use crate::detection::host::{pack_gt_with_forms, PackedGt};
use crate::detection::passes::class_pass;
use crate::detection::run::{Job, Kernels, DECODE, SCORES};
use crate::detection::stages::{DetectionStages, BLOCK};
use crate::detection::{Flags, Window};
use crate::launch::{int, ArenaLayout, Dev};

/// The kernels of cuda/obb.cu, in launch order.
pub(crate) const ASSIGN: &str = "yl_obb_assign";
pub(crate) const RESOLVE: &str = "yl_obb_resolve";
pub(crate) const BOX: &str = "yl_obb_box";

/// The GT table as the detection stages read it, its boxes the rotated boxes' corner bounds (the rectangle the
/// assigner walks), each image's soft-argmax form the rotated assigner's.
fn pack_rotated(head: &Head<f32>, gt: &ObbGtTable<f32>) -> PackedGt {
    let bounds = GtTable::<f32> {
        batch_size: gt.batch_size,
        max_labels: gt.max_labels,
        cls: gt.cls.clone(),
        boxes: gt.boxes.iter().map(|&b| corner_bounds(b)).collect(),
        valid: gt.valid.clone(),
    };
    let forms = (0..head.batch).map(|b| decodes_all_up_front_rotated(head, &gt.gt_boxes(b)));
    pack_gt_with_forms(head, &bounds, forms)
}

pub(crate) fn run(
    dev: Dev,
    cfg: &DetectionConfig,
    preds: ObbPreds<f32>,
    batch: &ObbBatch<f32>,
    grads: GradBufs<f32>,
) -> Result<LossValues<f32>> {
    let ObbPreds { feats, angle } = preds;
    let (head, gt) = V8OBBLoss { cfg: cfg.clone() }.prepare(feats, angle, batch)?;
    // `prepare` leaves the level tensors' finiteness to the CPU's own passes; no kernel here checks it.
    check_preds_finite(feats)?;
    int("preds.angle", angle.data.len())?;
    let want_grad = !grads.is_empty();
    let job = Job::new(cfg, OBB_TOPK, Window::of(cfg), false, Flags { grad: want_grad, ..Flags::LOSS });
    let packed = pack_rotated(&head, &gt);
    let rbox: Vec<f32> = gt.boxes.iter().flatten().copied().collect();
    let mut layout = ArenaLayout::default();
    let stages = DetectionStages::with_gt(dev, &job, head, packed, feats, &mut layout)?;
    let inputs = RotatedInputs {
        angle: dev.upload("preds.angle", angle.data)?,
        angle_grad: if want_grad { Some(dev.alloc("the gradient of preds.angle", angle.data.len())?) } else { None },
        gt_rbox: dev.upload("the rotated GT boxes", &rbox)?,
    };
    let arena = dev.arena("OBB work buffers", &layout)?;
    let det = stages.params(&job, &arena);
    let obb = ObbParams::new(det, &inputs);
    let g = &stages.grids;

    let mut kernels = Kernels::start(dev, job.timing)?;
    kernels.launch(DECODE, g.decode_blocks, BLOCK, &det)?;
    kernels.launch(ASSIGN, g.assign_blocks, g.assign_threads, &obb)?;
    kernels.launch(RESOLVE, g.anchor_blocks, BLOCK, &obb)?;
    kernels.launch(SCORES, g.score_blocks, BLOCK, &det)?;
    class_pass(&mut kernels, &det, g)?;
    kernels.launch(BOX, g.box_blocks, BLOCK, &obb)?;
    kernels.finish()?;

    let values = stages.loss(&job, &arena, feats)?;
    if want_grad {
        let (levels, rest) = grads.split_at_mut(feats.len());
        stages.levels.download_grads(Some(levels))?;
        if let Some(g) = &inputs.angle_grad {
            g.view().download("the gradient of preds.angle", &mut *rest[0])?;
        }
    }
    Ok(values)
}
