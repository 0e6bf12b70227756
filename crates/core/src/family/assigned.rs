//! A batch's labels, its padded GT table and the task-aligned assignment on the head's anchors: what the
//! detection-family losses share before their own terms.

use rayon::prelude::*;

use crate::assigner::{assign_image, AssignerConfig, GtBox, Positive};
use crate::detection::DetBatch;
use crate::error::{LossError, Result};
use crate::family::head::Head;
use crate::family::image_preds::ImagePreds;
use crate::geometry::AnchorGrid;
use crate::labels::{validate_labels, GtTable};
use crate::real::Real;

/// A validated head, its labels and the batch's assignment: everything the detection-family losses
/// share before their own terms.
pub(crate) struct Assigned<'a, F> {
    pub head: Head<'a, F>,
    pub labels: crate::labels::Labels<F>,
    pub gt: GtTable<F>,
    pub positives: Vec<Vec<Positive<F>>>,
    /// S = max(Σ target scores, 1).
    pub s: F,
}

impl<'a, F: Real> Assigned<'a, F> {
    /// Validates the labels against `head` (class ids index the head's `nc` loss classes), builds the
    /// padded GT table in pixels and runs the task-aligned assigner with `topk`.
    #[cfg(test)]
    pub fn new(head: Head<'a, F>, batch: &DetBatch<F>, topk: usize) -> Result<Self> {
        Ok(Self::new_checking(head, batch, topk, false)?.0)
    }

    /// As [`Assigned::new`]; with `check_finite`, also says whether the channels outside the class window are
    /// finite (each image checked just before its assignment reads them). The assigner neither fails nor panics on
    /// non-finite logits; the caller reports them.
    pub fn new_checking(
        head: Head<'a, F>,
        batch: &DetBatch<F>,
        topk: usize,
        check_finite: bool,
    ) -> Result<(Self, bool)> {
        let (labels, gt) = labels_and_gt(&head, batch, topk)?;
        let (positives, finite) = assign_batch(&head, &gt, &AssignerConfig::for_loss(topk, head.nc), check_finite);
        let s = score_divisor::<F>(&positives);
        Ok((Self { head, labels, gt, positives, s }, finite))
    }

    /// Number of positive anchors in the batch.
    pub fn num_positives(&self) -> usize {
        self.positives.iter().map(Vec::len).sum()
    }

    /// Loss items from raw sums: sum / S × gain, in f32 order as the reference (the sum is exact enough).
    pub fn items(&self, sums: &[f64], gains: &[f64]) -> Vec<F> {
        sums.iter().zip(gains).map(|(&v, &g)| F::c(v) / self.s * F::c(g)).collect()
    }
}

/// The labels validated against `head` (class ids index the head's `nc` loss classes), the padded GT table in
/// pixels (boxes scaled by [`Head::image_size`]) and the check that the head has at least `topk` anchors when
/// there are labels: what the detection-family losses run before assigning, in this order, with these messages.
pub fn labels_and_gt<F: Real>(
    head: &Head<F>,
    batch: &DetBatch<F>,
    topk: usize,
) -> Result<(crate::labels::Labels<F>, GtTable<F>)> {
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
    Ok((labels, gt))
}

/// Runs the assigner on every image (in parallel) with the detection head's decode. With `check_finite`, each image's
/// channels outside the class window are checked first (then in cache for the decode); the flag is whether all were
/// finite (true without the check).
pub(crate) fn assign_batch<F: Real>(
    head: &Head<F>,
    gt: &GtTable<F>,
    cfg: &AssignerConfig,
    check_finite: bool,
) -> (Vec<Vec<Positive<F>>>, bool) {
    let per_image: Vec<(Vec<Positive<F>>, bool)> = (0..head.batch)
        .into_par_iter()
        .map(|b| {
            let finite = !check_finite || head.image_finite_outside_class_window(b);
            let gts = gt.gt_boxes(b);
            let mut preds = ImagePreds::new(head, b, true);
            if decodes_all_up_front(&head.grid, &gts) {
                preds.decode_all();
            }
            (assign_image(cfg, head.grid.num_anchors, &gts, &mut preds), finite)
        })
        .collect();
    let finite = per_image.iter().all(|(_, f)| *f);
    (per_image.into_iter().map(|(p, _)| p).collect(), finite)
}

/// Whether the assigner decodes every anchor of an image up front (one vectorised pass, `Real::softmax_expect_cells`)
/// rather than the anchors it visits one by one (`softmax_expectation`): when the image's valid GT boxes (pixel
/// xyxy, [`GtTable::gt_boxes`]) cover roughly more than a quarter of its anchors. The two forms of the soft-argmax
/// may differ in the last bit, so a backend that wants the CPU's assignment decodes each image in the form this
/// picks.
pub fn decodes_all_up_front<F: Real>(grid: &AnchorGrid, gts: &[GtBox<[F; 4]>]) -> bool {
    estimated_candidates(grid, gts) * 4 > grid.num_anchors
}

/// Roughly how many anchor centres the image's GT boxes cover, summed over GTs and levels.
fn estimated_candidates<F: Real>(grid: &AnchorGrid, gts: &[GtBox<[F; 4]>]) -> usize {
    let sizes = gts.iter().filter(|g| g.valid).map(|g| ((g.bbox[2] - g.bbox[0]).f64(), (g.bbox[3] - g.bbox[1]).f64()));
    cells_covered(grid, sizes)
}

/// Σ over boxes of `w × h` pixels and over levels of the grid cells their extent spans (+1 cell per side):
/// the cost estimate behind the choice between per-candidate and whole-image decoding.
pub(crate) fn cells_covered(grid: &AnchorGrid, sizes: impl Iterator<Item = (f64, f64)>) -> usize {
    let mut n = 0.0f64;
    for (w, h) in sizes {
        for lv in &grid.levels {
            n += (w / lv.stride + 1.0) * (h / lv.stride + 1.0);
        }
    }
    n as usize
}

/// S = max(Σ target_scores, 1) (docs/spec.md §9 step 7).
pub(crate) fn score_divisor<F: Real>(positives: &[Vec<Positive<F>>]) -> F {
    let sum: f64 = positives.iter().flatten().map(|p| p.score.f64()).sum();
    let sum = F::c(sum);
    if sum < F::one() {
        F::one()
    } else {
        sum
    }
}
