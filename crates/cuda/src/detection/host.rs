//! Host side of a detection call: the CPU backend's validation (`yolo_loss_core::detection::Head` and
//! `labels_and_gt`: same checks, messages and order), and the GT table packed for the kernels with the per-image
//! choice of soft-argmax form that the CPU assigner makes (`decodes_all_up_front`).

use yolo_loss_core::detection::{decodes_all_up_front, Head};
use yolo_loss_core::labels::GtTable;

/// The GT table as the kernels read it: boxes `[B·M·4]`, and the ints `[cls (B·M) | valid (B·M) | bulk (B)]`.
pub(crate) struct PackedGt {
    pub boxes: Vec<f32>,
    pub ints: Vec<i32>,
    pub slots: usize,
}

pub(crate) fn pack_gt(head: &Head<f32>, gt: &GtTable<f32>) -> PackedGt {
    let slots = gt.boxes.len();
    let mut boxes = Vec::with_capacity(slots * 4);
    for b in &gt.boxes {
        boxes.extend_from_slice(b);
    }
    let mut ints = Vec::with_capacity(2 * slots + head.batch);
    // Class ids were validated to be in [0, nc); the assigner truncates them (`.long()`).
    ints.extend(gt.cls.iter().map(|&c| c.trunc() as i32));
    ints.extend(gt.valid.iter().map(|&v| v as i32));
    ints.extend((0..head.batch).map(|b| decodes_all_up_front(&head.grid, &gt.gt_boxes(b)) as i32));
    PackedGt { boxes, ints, slots }
}
