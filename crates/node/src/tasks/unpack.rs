//! How each task's packed tensors become its predictions and batch ([`Unpack`], one `impl` per task's CPU type), and
//! the error names of the tasks whose public API takes a tuple of predictions.

use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::e2e::{E2EDetectLoss, E2EPreds};
use yolo_loss_core::obb::ObbPreds;
use yolo_loss_core::pose::{PoseBatch, PosePreds, V8PoseLoss};
use yolo_loss_core::prompts::{TVPDetectLoss, TVPSegmentLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetBatch, LossError, TensorRef, V8DetectionLoss, V8OBBLoss};

use super::Unpack;

/// The core names the level tensors of a head `preds[l]`; in a tuple of predictions (segmentation, pose, OBB)
/// they are `feats[l]` and the angle is `angle`, as in the public API.
fn rename_feats(mut e: LossError) -> LossError {
    e.message = e.message.replace("preds[", "feats[").replace("preds:", "feats:").replace("preds.angle", "angle");
    e
}

fn det_batch<'a>(t: &[TensorRef<'a, f32>]) -> DetBatch<'a, f32> {
    DetBatch { batch_idx: t[0], cls: t[1], bboxes: t[2] }
}

/// Splits the flat list into the first `n` tensors and the rest.
fn split<'s, 'a>(t: &'s [TensorRef<'a, f32>], n: usize) -> (&'s [TensorRef<'a, f32>], &'s [TensorRef<'a, f32>]) {
    t.split_at(n.min(t.len()))
}

// The order of the packed tensors in the comments.

// levels…, batch_idx, cls, bboxes.
impl Unpack for V8DetectionLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (&'a [TensorRef<'a, f32>], DetBatch<'a, f32>) {
        let (feats, rest) = split(t, g[0]);
        (feats, det_batch(rest))
    }
}

// levels…, batch_idx, cls, bboxes.
impl Unpack for TVPDetectLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (&'a [TensorRef<'a, f32>], DetBatch<'a, f32>) {
        V8DetectionLoss::unpack(t, g)
    }
}

// levels…, pred_masks, proto, batch_idx, cls, bboxes, masks.
fn unpack_seg<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (SegPreds<'a, f32>, SegBatch<'a, f32>) {
    let (feats, rest) = split(t, g[0]);
    let preds = SegPreds { feats, pred_masks: rest[0], proto: rest[1] };
    (preds, SegBatch { det: det_batch(&rest[2..5]), masks: rest[5] })
}

impl Unpack for V8SegmentationLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (SegPreds<'a, f32>, SegBatch<'a, f32>) {
        unpack_seg(t, g)
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

impl Unpack for TVPSegmentLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (SegPreds<'a, f32>, SegBatch<'a, f32>) {
        unpack_seg(t, g)
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

// levels…, kpts, batch_idx, cls, bboxes, keypoints.
impl Unpack for V8PoseLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (PosePreds<'a, f32>, PoseBatch<'a, f32>) {
        let (feats, rest) = split(t, g[0]);
        let batch = PoseBatch { det: det_batch(&rest[1..4]), keypoints: rest[4] };
        (PosePreds { feats, kpts: rest[0] }, batch)
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

// levels…, angle, batch_idx, cls, bboxes.
impl Unpack for V8OBBLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (ObbPreds<'a, f32>, DetBatch<'a, f32>) {
        let (feats, rest) = split(t, g[0]);
        (ObbPreds { feats, angle: rest[0] }, det_batch(&rest[1..4]))
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

// logits, cls.
impl Unpack for V8ClassificationLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], _: &[usize]) -> (TensorRef<'a, f32>, TensorRef<'a, f32>) {
        (t[0], t[1])
    }
}

// one2many levels…, one2one levels…, batch_idx, cls, bboxes.
impl Unpack for E2EDetectLoss {
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], g: &[usize]) -> (E2EPreds<'a, f32>, DetBatch<'a, f32>) {
        let (one2many, rest) = split(t, g[0]);
        let (one2one, rest) = split(rest, g[1]);
        (E2EPreds { one2many, one2one }, det_batch(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_loss_core::ErrorCode;

    #[test]
    fn feats_are_renamed_in_tuple_losses() {
        let e = rename_feats(LossError::shape("preds[1]: expected 66 channels; preds: 3 levels; preds.angle: bad"));
        assert_eq!(e.message, "feats[1]: expected 66 channels; feats: 3 levels; angle: bad");
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
    }
}
