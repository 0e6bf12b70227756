//! The OBB labels (docs/spec.md §13): `[N, 5]` boxes with θ, the loss's tiny-box filter, the rotated GT table
//! and `preprocess`.

use crate::error::Result;
use crate::labels::{preprocess_rows, validate_labels, GtTable, Labels};
use crate::real::Real;
use crate::tensor::TensorRef;

impl<F: Real> Labels<F, 5> {
    /// The loss's tiny-box filter (docs/spec.md §13 step 3, §18 item 17): keeps a label iff w·H_img ≥ 2 and
    /// h·W_img ≥ 2 — the normalized width is scaled by the image *height* and the height by the width.
    pub fn without_tiny(&self, img_h: F, img_w: F) -> Self {
        let two = F::c(2.0);
        let keep: Vec<usize> =
            (0..self.len()).filter(|&i| self.boxes[i][2] * img_h >= two && self.boxes[i][3] * img_w >= two).collect();
        Self {
            image: keep.iter().map(|&i| self.image[i]).collect(),
            cls: keep.iter().map(|&i| self.cls[i]).collect(),
            boxes: keep.iter().map(|&i| self.boxes[i]).collect(),
        }
    }
}

/// Labels with `[N, 5]` boxes: see [`validate_labels`].
pub fn validate_obb_labels<F: Real>(
    batch_idx: TensorRef<F>,
    cls: TensorRef<F>,
    bboxes: TensorRef<F>,
    batch_size: usize,
    nc: usize,
) -> Result<Labels<F, 5>> {
    validate_labels::<F, 5>(batch_idx, cls, bboxes, batch_size, nc)
}

/// The oriented-box GT table: pixel (cx, cy, w, h, θ) per slot.
pub type ObbGtTable<F> = GtTable<F, 5>;

/// `v8OBBLoss.preprocess(targets [N,7], batch_size, scale)`: rows of targets are
/// (batch_idx, cls, cx, cy, w, h, θ). Returns `[B, M, 6]` data and its shape. (No tiny-box filter:
/// the reference applies it in `__call__`, before preprocess.)
pub fn preprocess_obb<F: Real>(
    targets: TensorRef<F>,
    batch_size: usize,
    scale: [F; 4],
) -> Result<(Vec<F>, Vec<usize>)> {
    preprocess_rows::<F, 5>(targets, batch_size, scale, |l| ObbGtTable::build_rotated(l, batch_size, scale))
}
