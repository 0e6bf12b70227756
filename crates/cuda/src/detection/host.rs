//! Host side of a detection call: the CPU backend's validation (`yolo_loss_core::detection::Head` and
//! `labels_and_gt`: same checks, messages and order), and the GT table packed for the kernels with the per-image
//! choice of soft-argmax form that the CPU assigner makes (`decodes_all_up_front`).

use std::ops::Range;

use yolo_loss_core::detection::{decodes_all_up_front, Head};
use yolo_loss_core::labels::GtTable;

/// The GT table as the kernels read it: boxes `[B·M·4]`, and the ints `[cls (B·M) | valid (B·M) | bulk (B)]`;
/// and the block size of the assign kernel for these boxes.
pub(crate) struct PackedGt {
    pub boxes: Vec<f32>,
    pub ints: Vec<i32>,
    pub slots: usize,
    /// GT slots per image (the most labels of an image).
    pub per_image: usize,
    pub assign_threads: u32,
}

/// Threads per block of yl_det_assign: one block walks the grid cells under one GT box and then merges its
/// threads' top-k lists, k rounds per warp. About four cells per thread (a power of two from 32 to 1024, for the
/// largest box of the batch): large boxes get many threads for the walk, small ones, the common case with many
/// labels, few warps to merge. The result does not depend on it.
fn assign_threads(head: &Head<f32>, gt: &GtTable<f32>) -> u32 {
    let finest = head.grid.levels.iter().map(|l| l.stride).fold(f64::INFINITY, f64::min);
    let cells = |b: &[f32; 4]| ((b[2] - b[0]) as f64 / finest + 3.0) * ((b[3] - b[1]) as f64 / finest + 3.0);
    let most = gt.boxes.iter().zip(&gt.valid).filter(|(_, &v)| v).map(|(b, _)| cells(b)).fold(0.0, f64::max);
    ((most / 4.0).ceil().clamp(32.0, 1024.0) as u32).next_power_of_two()
}

impl PackedGt {
    /// Where the classes, validities and soft-argmax forms lie in `ints`.
    pub fn cls(&self) -> Range<usize> {
        0..self.slots
    }
    pub fn valid(&self) -> Range<usize> {
        self.slots..2 * self.slots
    }
    pub fn bulk(&self) -> Range<usize> {
        2 * self.slots..self.ints.len()
    }
}

pub(crate) fn pack_gt(head: &Head<f32>, gt: &GtTable<f32>) -> PackedGt {
    pack_gt_with_forms(head, gt, (0..head.batch).map(|b| decodes_all_up_front(&head.grid, &gt.gt_boxes(b))))
}

/// [`pack_gt`] with the images' soft-argmax forms given (true: the vectorised form), for an assigner whose choice
/// differs from the axis-aligned one's.
pub(crate) fn pack_gt_with_forms(head: &Head<f32>, gt: &GtTable<f32>, bulk: impl Iterator<Item = bool>) -> PackedGt {
    let slots = gt.boxes.len();
    let mut boxes = Vec::with_capacity(slots * 4);
    for b in &gt.boxes {
        boxes.extend_from_slice(b);
    }
    let mut ints = Vec::with_capacity(2 * slots + head.batch);
    // Class ids were validated to be in [0, nc); the assigner truncates them (`.long()`).
    ints.extend(gt.cls.iter().map(|&c| c.trunc() as i32));
    ints.extend(gt.valid.iter().map(|&v| v as i32));
    ints.extend(bulk.map(i32::from));
    PackedGt { boxes, ints, slots, per_image: gt.max_labels, assign_threads: assign_threads(head, gt) }
}
