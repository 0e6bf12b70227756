//! The oriented-box family (docs/spec.md §5 dist2rbox, §7 RotatedTaskAlignedAssigner, §8.5 RotatedBboxLoss,
//! §13 v8OBBLoss): rotated decode, rotated centre-in-box, the OBB labels, the task loss with its
//! analytic backward, and the building blocks on dense inputs with their gradient forms.
//!
//! The task loss mirrors [`crate::detection::V8DetectionLoss`]: per image (in parallel) the assigner
//! enumerates only the anchors inside each GT's bounding rectangle and decodes only those; the box
//! terms run over the positives only; the class term is the detection one. No (B × M × A) buffer.
//!
//! Gradient paths (docs/spec.md §13, §16): class logits (all anchors); DFL logits of positives through the
//! soft-argmax into dist2rbox and probIoU, plus the DFL term itself; θ of positives through the centre
//! rotation of dist2rbox and the 5th column of the predicted box inside probIoU. The DFL targets come
//! from the axis-aligned version of the target (θ ignored) and carry no θ dependence.
//!
//! One concern per file: `geometry` (rotated decode, corners, centre-in-box), `labels` (OBB labels, GT table,
//! preprocess), `assign` (the rotated assignment on the head's anchors), `loss` (v8OBBLoss and its rotated box terms),
//! `blocks` (the building blocks on dense tensors).

mod assign;
mod blocks;
mod geometry;
mod labels;
mod loss;
#[cfg(test)]
mod tests;

pub use assign::decodes_all_up_front_rotated;
pub use blocks::{
    assign_dense_rotated, bbox_decode_rotated, dist2rbox_batch, probiou_batch, rotated_bbox_loss, Dist2RboxOutput,
    ProbiouOutput,
};
pub use geometry::{center_in_rotated_box, corner_bounds, dist2rbox, dist2rbox_grad, xywhr_corners};
pub use labels::{preprocess_obb, validate_obb_labels, ObbGtTable};
pub use loss::{ObbBatch, ObbPreds, V8OBBLoss};

/// The OBB assigner's top-k, fixed in the reference whatever `tal_topk` says (docs/spec.md §2, §18 item 8).
pub const OBB_TOPK: usize = 10;
