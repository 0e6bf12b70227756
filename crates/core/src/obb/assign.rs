//! The rotated task-aligned assignment on the head's anchors (docs/spec.md §7): one image's predictions as probIoU
//! Gaussians, the candidates inside each GT's bounding rectangle, per image in parallel.

use rayon::prelude::*;

use super::geometry::{center_in_rotated_box, corner_bounds, dist2rbox};
use super::labels::ObbGtTable;
use crate::assigner::{assign_image, AnchorSource, AssignerConfig, GtBox, Positive};
use crate::family::assigned::cells_covered;
use crate::family::head::Head;
use crate::family::image_preds::{sigmoid, ImagePreds};
use crate::probiou::{gauss, probiou_gauss, Gauss, PROBIOU_EPS};
use crate::real::Real;

/// One image's predictions as the rotated assigner reads them: pixel boxes (decoded grid
/// (cx, cy, w, h) × stride, θ unchanged), cached per anchor as probIoU's Gaussians.
struct RotatedPreds<'h, 'a, F> {
    inner: ImagePreds<'h, 'a, F>,
    /// θ of this image's anchors, `[A]`.
    angle: &'a [F],
    cache: Vec<Option<Gauss<F>>>,
    /// The last GT met and its Gaussian (the assigner visits a GT's candidates in a row).
    last_gt: Option<([F; 5], Gauss<F>)>,
}

impl<'h, 'a, F: Real> RotatedPreds<'h, 'a, F> {
    fn new(head: &'h Head<'a, F>, angle: &'a [F], b: usize) -> Self {
        let a = head.grid.num_anchors;
        Self {
            inner: ImagePreds::new(head, b, false),
            angle: &angle[b * a..(b + 1) * a],
            cache: vec![None; a],
            last_gt: None,
        }
    }

    fn pixel_gauss(&mut self, a: usize) -> Gauss<F> {
        if let Some(g) = self.cache[a] {
            return g;
        }
        let g = gauss(self.pixel_box(a));
        self.cache[a] = Some(g);
        g
    }

    fn pixel_box(&mut self, a: usize) -> [F; 5] {
        let p = self.inner.head.grid.locate(a);
        let d = match self.inner.bulk.get(a) {
            Some(&d) => d,
            None => self.inner.distances(p),
        };
        self.pixel_box_of(a, d)
    }

    /// The pixel box of anchor `a` from its decoded distances.
    fn pixel_box_of(&self, a: usize, d: [F; 4]) -> [F; 5] {
        let grid = &self.inner.head.grid;
        let p = grid.locate(a);
        let s = F::c(grid.levels[p.level].stride);
        let theta = self.angle[a];
        let g = dist2rbox(d, theta, grid.point::<F>(p));
        [g[0] * s, g[1] * s, g[2] * s, g[3] * s, theta]
    }
}

impl<'h, 'a, F: Real> AnchorSource<F, [F; 5]> for RotatedPreds<'h, 'a, F> {
    fn for_each_inside(&self, b: &[F; 5], visit: &mut dyn FnMut(usize)) {
        let b = *b;
        let grid = &self.inner.head.grid;
        grid.for_each_near(corner_bounds(b), |a, p| {
            if center_in_rotated_box(grid.pixel_point(p), b) {
                visit(a)
            }
        });
    }
    fn score(&mut self, a: usize, cls: usize) -> F {
        let head = self.inner.head;
        sigmoid(self.inner.logit(head.grid.locate(a), head.cls_ch0 + cls))
    }
    fn overlap(&mut self, gt: &[F; 5], a: usize) -> F {
        let pred = self.pixel_gauss(a);
        let g = match self.last_gt {
            Some((b, g)) if b == *gt => g,
            _ => {
                let g = gauss(*gt);
                self.last_gt = Some((*gt, g));
                g
            }
        };
        probiou_gauss(&g, &pred, F::c(PROBIOU_EPS))
    }
    fn overlaps(&mut self, gt: &[F; 5], anchors: &[usize], out: &mut [F]) {
        // Without the bulk decode, the candidates not cached yet are decoded by runs of consecutive anchors (a GT's
        // candidates come as row runs; `ImagePreds::run_distances`: vector loads and soft-argmax for up to 16 cells
        // at once, the same distances as one by one).
        if self.inner.bulk.is_empty() {
            for (i, &a) in anchors.iter().enumerate() {
                if self.cache[a].is_none() {
                    let p = self.inner.head.grid.locate(a);
                    let d = self.inner.run_distances(p, anchors[i..].iter().copied());
                    self.cache[a] = Some(gauss(self.pixel_box_of(a, d)));
                }
            }
        }
        for (o, &a) in out.iter_mut().zip(anchors) {
            *o = self.overlap(gt, a);
        }
    }
}

/// Roughly how many anchor centres the image's GT boxes cover (their bounding rectangles), summed
/// over GTs and levels: only above the image's anchor count is decoding every anchor in one vectorised pass
/// cheaper than decoding the candidates by runs of cells (`RotatedPreds::overlaps`), which reads the box logits
/// of the candidates alone. (At 1/16, the threshold of the one-by-one decode, the bench's OBB case decoded every
/// anchor of every image: 13 % more instructions in callgrind, and every box logit read.)
fn estimated_candidates<F: Real>(head: &Head<F>, gts: &[GtBox<[F; 5]>]) -> usize {
    let sizes = gts.iter().filter(|g| g.valid).map(|g| {
        let r = corner_bounds(g.bbox);
        ((r[2] - r[0]).f64(), (r[3] - r[1]).f64())
    });
    cells_covered(&head.grid, sizes)
}

/// Whether the rotated assigner decodes every anchor of the image up front (the vectorised soft-argmax form)
/// rather than its candidates one by one; the CUDA backend makes the same choice per image.
pub fn decodes_all_up_front_rotated<F: Real>(head: &Head<F>, gts: &[GtBox<[F; 5]>]) -> bool {
    estimated_candidates(head, gts) > head.grid.num_anchors
}

/// Runs the rotated assigner on every image (in parallel).
/// Each image's channels outside the class window are checked for finiteness first (then in cache for the decode);
/// the flag is whether all were finite.
pub(super) fn assign_batch_rotated<'a, F: Real>(
    head: &Head<'a, F>,
    angle: &'a [F],
    gt: &ObbGtTable<F>,
    cfg: &AssignerConfig,
) -> (Vec<Vec<Positive<F>>>, bool) {
    let per_image: Vec<(Vec<Positive<F>>, bool)> = (0..head.batch)
        .into_par_iter()
        .map(|b| {
            let finite = head.image_finite_outside_class_window(b);
            let gts = gt.gt_boxes(b);
            let mut preds = RotatedPreds::new(head, angle, b);
            if decodes_all_up_front_rotated(head, &gts) {
                preds.inner.decode_all();
            }
            (assign_image(cfg, head.grid.num_anchors, &gts, &mut preds), finite)
        })
        .collect();
    let finite = per_image.iter().all(|(_, f)| *f);
    (per_image.into_iter().map(|(p, _)| p).collect(), finite)
}
