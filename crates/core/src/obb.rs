//! The oriented-box family (SPEC §5 dist2rbox, §7 RotatedTaskAlignedAssigner, §8.5 RotatedBboxLoss,
//! §13 v8OBBLoss): rotated decode, rotated centre-in-box, the OBB labels, the task loss with its
//! analytic backward, and the building blocks on dense inputs with their gradient forms.
//!
//! The task loss mirrors [`crate::detection::V8DetectionLoss`]: per image (in parallel) the assigner
//! enumerates only the anchors inside each GT's bounding rectangle and decodes only those; the box
//! terms run over the positives only; the class term is the detection one. No (B × M × A) buffer.
//!
//! Gradient paths (SPEC §13, §16): class logits (all anchors); DFL logits of positives through the
//! soft-argmax into dist2rbox and probIoU, plus the DFL term itself; θ of positives through the centre
//! rotation of dist2rbox and the 5th column of the predicted box inside probIoU. The DFL targets come
//! from the axis-aligned version of the target (θ ignored) and carry no θ dependence.

use rayon::prelude::*;

use crate::assigner::{assign_image, AnchorSource, AssignerConfig, GtBox, Positive};
use crate::blocks::{assign_dense_with, bbox_loss_with, expect_shape, BboxLossInputs, BboxLossOutput, DenseAssignment};
use crate::detection::{cells_covered, check_grad_buffers, check_preds_finite, class_terms, preds_error_first, per_image_grads, score_divisor, sigmoid, times_batch, with_extra, with_fresh_grads, without_grads, DetBatch, DetectionConfig, GradBufs, GradScales, Head, ImagePreds, LossOutput, LossValues, TermSums, V8DetectionLoss};
use crate::dfl::{dfl_side_grad_acc, dfl_side_loss, softmax_expectation, softmax_expectation_grad_acc, DflTarget};
use crate::error::{LossError, Result};
use crate::geometry::{bbox2dist, xywh2xyxy};
use crate::labels::{preprocess_rows, validate_labels, GtTable, Labels};
use crate::probiou::{gauss, probiou, probiou_ciou_grad, probiou_gauss, probiou_grad, Gauss, PROBIOU_EPS};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

/// The OBB assigner's top-k, fixed in the reference whatever `tal_topk` says (SPEC §2, §18 item 8).
pub const OBB_TOPK: usize = 10;

// ---------------------------------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------------------------------

/// `dist2rbox`: distances (l, t, r, b) in the box's rotated frame, angle θ and the anchor → (cx, cy, w, h).
#[inline]
pub fn dist2rbox<F: Real>(d: [F; 4], theta: F, anchor: [F; 2]) -> [F; 4] {
    let two = F::c(2.0);
    let (cos, sin) = (theta.cos(), theta.sin());
    let (xf, yf) = ((d[2] - d[0]) / two, (d[3] - d[1]) / two);
    [xf * cos - yf * sin + anchor[0], xf * sin + yf * cos + anchor[1], d[0] + d[2], d[1] + d[3]]
}

/// Gradient of Σ up·dist2rbox(d, θ, anchor) with respect to the distances and the angle.
#[inline]
pub fn dist2rbox_grad<F: Real>(d: [F; 4], theta: F, up: [F; 4]) -> ([F; 4], F) {
    let two = F::c(2.0);
    let (cos, sin) = (theta.cos(), theta.sin());
    let (xf, yf) = ((d[2] - d[0]) / two, (d[3] - d[1]) / two);
    let g_xf = up[0] * cos + up[1] * sin;
    let g_yf = up[1] * cos - up[0] * sin;
    let g_theta = up[0] * (-xf * sin - yf * cos) + up[1] * (xf * cos - yf * sin);
    ([up[2] - g_xf / two, up[3] - g_yf / two, up[2] + g_xf / two, up[3] + g_yf / two], g_theta)
}

/// The four corners of an (cx, cy, w, h, θ) box in the reference's order P1..P4 (SPEC §5).
#[inline]
pub fn xywhr_corners<F: Real>(b: [F; 5]) -> [[F; 2]; 4] {
    let two = F::c(2.0);
    let (cos, sin) = (b[4].cos(), b[4].sin());
    let v1 = [b[2] / two * cos, b[2] / two * sin];
    let v2 = [-b[3] / two * sin, b[3] / two * cos];
    let (c, v) = ([b[0], b[1]], [v1, v2]);
    let p = |s1: F, s2: F| [c[0] + s1 * v[0][0] + s2 * v[1][0], c[1] + s1 * v[0][1] + s2 * v[1][1]];
    let (one, m1) = (F::one(), -F::one());
    // (ctr ± v1) ± v2, evaluated left to right like the reference (the ±1 factors are exact).
    [p(one, one), p(one, m1), p(m1, m1), p(m1, one)]
}

/// Rotated centre-in-box of the OBB assigner (SPEC §7): with e1 = P2 − P1, e2 = P4 − P1, q = p − P1,
/// inside iff 0 ≤ q·e1 ≤ |e1|² and 0 ≤ q·e2 ≤ |e2|² (inclusive, no eps).
#[inline]
pub fn center_in_rotated_box<F: Real>(p: [F; 2], b: [F; 5]) -> bool {
    let k = xywhr_corners(b);
    let (a, bb, d) = (k[0], k[1], k[3]);
    let ab = [bb[0] - a[0], bb[1] - a[1]];
    let ad = [d[0] - a[0], d[1] - a[1]];
    let ap = [p[0] - a[0], p[1] - a[1]];
    let n_ab = ab[0] * ab[0] + ab[1] * ab[1];
    let n_ad = ad[0] * ad[0] + ad[1] * ad[1];
    let q_ab = ap[0] * ab[0] + ap[1] * ab[1];
    let q_ad = ap[0] * ad[0] + ap[1] * ad[1];
    let z = F::zero();
    q_ab >= z && q_ab <= n_ab && q_ad >= z && q_ad <= n_ad
}

/// Axis-aligned bounding rectangle (x1, y1, x2, y2) of a rotated box's corners.
#[inline]
fn corner_bounds<F: Real>(b: [F; 5]) -> [F; 4] {
    let k = xywhr_corners(b);
    let mut r = [k[0][0], k[0][1], k[0][0], k[0][1]];
    for c in &k[1..] {
        r[0] = r[0].min(c[0]);
        r[1] = r[1].min(c[1]);
        r[2] = r[2].max(c[0]);
        r[3] = r[3].max(c[1]);
    }
    r
}

// ---------------------------------------------------------------------------------------------------
// Labels
// ---------------------------------------------------------------------------------------------------

impl<F: Real> Labels<F, 5> {
    /// The loss's tiny-box filter (SPEC §13 step 3, §18 item 17): keeps a label iff w·H_img ≥ 2 and
    /// h·W_img ≥ 2 — the normalized width is scaled by the image *height* and the height by the width.
    pub fn without_tiny(&self, img_h: F, img_w: F) -> Self {
        let two = F::c(2.0);
        let keep: Vec<usize> = (0..self.len()).filter(|&i| self.boxes[i][2] * img_h >= two && self.boxes[i][3] * img_w >= two).collect();
        Self { image: keep.iter().map(|&i| self.image[i]).collect(), cls: keep.iter().map(|&i| self.cls[i]).collect(), boxes: keep.iter().map(|&i| self.boxes[i]).collect() }
    }
}

/// Labels with `[N, 5]` boxes: see [`validate_labels`].
pub fn validate_obb_labels<F: Real>(batch_idx: TensorRef<F>, cls: TensorRef<F>, bboxes: TensorRef<F>, batch_size: usize, nc: usize) -> Result<Labels<F, 5>> {
    validate_labels::<F, 5>(batch_idx, cls, bboxes, batch_size, nc)
}

/// The oriented-box GT table: pixel (cx, cy, w, h, θ) per slot.
pub type ObbGtTable<F> = GtTable<F, 5>;

/// `v8OBBLoss.preprocess(targets [N,7], batch_size, scale)`: rows of targets are
/// (batch_idx, cls, cx, cy, w, h, θ). Returns `[B, M, 6]` data and its shape. (No tiny-box filter:
/// the reference applies it in `__call__`, before preprocess.)
pub fn preprocess_obb<F: Real>(targets: TensorRef<F>, batch_size: usize, scale: [F; 4]) -> Result<(Vec<F>, Vec<usize>)> {
    preprocess_rows::<F, 5>(targets, batch_size, scale, |l| ObbGtTable::build_rotated(l, batch_size, scale))
}

// ---------------------------------------------------------------------------------------------------
// Assignment on the head's anchors
// ---------------------------------------------------------------------------------------------------

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
        Self { inner: ImagePreds::new(head, b, false), angle: &angle[b * a..(b + 1) * a], cache: vec![None; a], last_gt: None }
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

/// Runs the rotated assigner on every image (in parallel).
/// Each image's channels outside the class window are checked for finiteness first (then in cache for the decode);
/// the flag is whether all were finite.
fn assign_batch_rotated<'a, F: Real>(head: &Head<'a, F>, angle: &'a [F], gt: &ObbGtTable<F>, cfg: &AssignerConfig) -> (Vec<Vec<Positive<F>>>, bool) {
    let per_image: Vec<(Vec<Positive<F>>, bool)> = (0..head.batch)
        .into_par_iter()
        .map(|b| {
            let finite = head.image_finite_outside_class_window(b);
            let gts = gt.gt_boxes(b);
            let mut preds = RotatedPreds::new(head, angle, b);
            if estimated_candidates(head, &gts) > head.grid.num_anchors {
                preds.inner.decode_all();
            }
            (assign_image(cfg, head.grid.num_anchors, &gts, &mut preds), finite)
        })
        .collect();
    let finite = per_image.iter().all(|(_, f)| *f);
    (per_image.into_iter().map(|(p, _)| p).collect(), finite)
}

// ---------------------------------------------------------------------------------------------------
// v8OBBLoss
// ---------------------------------------------------------------------------------------------------

/// The label part of the batch dict for OBB: `bboxes` is `[N, 5]` (normalized cx, cy, w, h, θ).
pub type ObbBatch<'a, F> = DetBatch<'a, F>;

#[derive(Debug, Clone)]
pub struct V8OBBLoss {
    pub cfg: DetectionConfig,
}

impl V8OBBLoss {
    /// Validates the configuration like `v8DetectionLoss`; `tal_topk` is ignored (the rotated
    /// assigner always uses top-10).
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        let cfg = DetectionConfig { tal_topk: OBB_TOPK, ..cfg };
        let det = V8DetectionLoss::new(cfg)?;
        Ok(Self { cfg: det.cfg })
    }

    /// `__call__`: loss and loss items, no gradient.
    pub fn call<F: Real>(&self, feats: &[TensorRef<F>], angle: TensorRef<F>, batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        without_grads(|g| self.run(feats, angle, batch, g))
    }

    /// Loss, loss items and the gradients: one per level tensor, then the angle's `[B, 1, A]`.
    pub fn value_and_grad<F: Real>(&self, feats: &[TensorRef<F>], angle: TensorRef<F>, batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        with_fresh_grads(&with_extra(feats, &[angle]), |g| self.run(feats, angle, batch, g))
    }

    /// As [`value_and_grad`](Self::value_and_grad) into caller-provided zero-filled buffers (levels,
    /// then the angle); returns (loss, loss items).
    pub fn value_and_grad_into<F: Real>(&self, feats: &[TensorRef<F>], angle: TensorRef<F>, batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &with_extra(feats, &[angle]))?;
        self.run(feats, angle, batch, grads)
    }

    /// `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R], pred_angle [B,A,1])` → (`[B,A,5]` grid
    /// (cx, cy, w, h, θ), shape).
    pub fn bbox_decode<F: Real>(&self, anchor_points: TensorRef<F>, pred_dist: TensorRef<F>, pred_angle: TensorRef<F>) -> Result<(Vec<F>, Vec<usize>)> {
        bbox_decode_rotated(anchor_points, pred_dist, pred_angle, self.cfg.reg_max)
    }

    /// `preprocess(targets [N,7], batch_size, scale_tensor)` → `[B, M, 6]`.
    pub fn preprocess<F: Real>(&self, targets: TensorRef<F>, batch_size: usize, scale: [F; 4]) -> Result<(Vec<F>, Vec<usize>)> {
        preprocess_obb(targets, batch_size, scale)
    }

    /// The validated head and GT table. The level tensors' finiteness is checked by parts as in
    /// `V8DetectionLoss::run_window` (class window in the class pass, other channels in the assignment; see `run`),
    /// errors in the order of the validation in one go.
    fn prepare<'a, F: Real>(&self, feats: &[TensorRef<'a, F>], angle: TensorRef<'a, F>, batch: &DetBatch<F>) -> Result<(Head<'a, F>, ObbGtTable<F>)> {
        let cfg = &self.cfg;
        let head = Head::validate_shapes(feats, &cfg.strides, cfg.reg_max, 4 * cfg.reg_max + cfg.nc, 4 * cfg.reg_max, cfg.nc)?;
        let gt = self.prepare_labels(&head, angle, batch).map_err(|e| preds_error_first(feats, e))?;
        Ok((head, gt))
    }

    /// The angle's shape and finiteness, the labels and the GT table of [`prepare`](Self::prepare).
    fn prepare_labels<F: Real>(&self, head: &Head<F>, angle: TensorRef<F>, batch: &DetBatch<F>) -> Result<ObbGtTable<F>> {
        let cfg = &self.cfg;
        let a = head.grid.num_anchors;
        angle.check_len("preds.angle")?;
        if angle.shape != [head.batch, 1, a] {
            return Err(LossError::shape(format!(
                "preds.angle: expected shape [{}, 1, {a}] (batch size and total anchor count of the level tensors), got {}",
                head.batch,
                fmt_shape(angle.shape)
            )));
        }
        angle.check_finite("preds.angle")?;
        let labels = validate_obb_labels(batch.batch_idx, batch.cls, batch.bboxes, head.batch, cfg.nc)?;
        let (img_h, img_w) = head.image_size();
        let gt = ObbGtTable::build_rotated(&labels.without_tiny(img_h, img_w), head.batch, [img_w, img_h, img_w, img_h]);
        gt.check_finite()?;
        if gt.max_labels > 0 && a < OBB_TOPK {
            return Err(LossError::shape(format!("preds: expected at least topk = {OBB_TOPK} anchors in total, got {a} (feature maps too small)")));
        }
        Ok(gt)
    }

    fn run<F: Real>(&self, feats: &[TensorRef<F>], angle: TensorRef<F>, batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let (head, gt) = self.prepare(feats, angle, batch)?;
        let (positives, finite) = assign_batch_rotated(&head, angle.data, &gt, &AssignerConfig::for_loss(OBB_TOPK, self.cfg.nc));
        if !finite {
            check_preds_finite(feats)?;
        }
        let s = score_divisor::<F>(&positives);
        let (values, bce_sum) = self.losses_into(&head, angle.data, &gt, &positives, s, grads);
        if !bce_sum.is_finite() {
            check_preds_finite(feats)?;
        }
        Ok(values)
    }

    /// The loss terms and gradients for a fixed assignment and divisor S (the function autograd
    /// differentiates: the assigner and S are constants), and the raw class sum (non-finite when a class logit is).
    fn losses_into<F: Real>(&self, head: &Head<F>, angle: &[F], gt: &ObbGtTable<F>, positives: &[Vec<Positive<F>>], s: F, grads: GradBufs<F>) -> (LossValues<F>, f64) {
        let gains = [self.cfg.hyp.box_gain, self.cfg.hyp.cls, self.cfg.hyp.dfl];
        let scales = GradScales::new(head.batch, gains, s);
        let sums = per_image_grads(grads, head.batch, |b, g| {
            let bce = class_terms(head, gt, b, &positives[b], scales.cls, g);
            let (iou, dfl) = rotated_box_terms(head, angle, gt, b, &positives[b], &scales, g);
            TermSums { bce, iou, dfl }
        });
        // No positives: box = Σ(θ·0) = 0 (θ is finite), with a zero gradient.
        let items: Vec<F> = [sums.iou, sums.bce, sums.dfl].iter().zip(gains).map(|(&v, g)| F::c(v) / s * F::c(g)).collect();
        ((times_batch(&items, head.batch), items), sums.bce)
    }

    /// [`losses_into`](Self::losses_into) with fresh buffers (or none), for the finite-difference tests.
    #[cfg(test)]
    fn losses_given_assignment<F: Real>(&self, head: &Head<F>, angle: &[F], gt: &ObbGtTable<F>, positives: &[Vec<Positive<F>>], s: F, want_grad: bool) -> LossOutput<F> {
        let run = |g: GradBufs<F>| Ok(self.losses_into(head, angle, gt, positives, s, g).0);
        let out = if want_grad { with_fresh_grads(&[head.levels.as_slice(), &[angle]].concat(), run) } else { without_grads(run) };
        out.unwrap_or_else(|e: crate::error::LossError| panic!("{e}"))
    }
}

/// Σ (1 − probIoU)·w and Σ DFL·w over image `b`'s positives (grid units), with their gradients into
/// the box channels (`grads[l]`) and the angle (`grads[L]`, this image's `[A]` slice).
fn rotated_box_terms<F: Real>(head: &Head<F>, angle: &[F], gt: &ObbGtTable<F>, b: usize, positives: &[Positive<F>], sc: &GradScales<F>, grads: &mut [&mut [F]]) -> (f64, f64) {
    let mut preds = ImagePreds::new(head, b, false);
    let na = head.grid.num_anchors;
    let theta_img = &angle[b * na..(b + 1) * na];
    let nl = head.grid.levels.len();
    let r = head.reg_max;
    let (mut iou_sum, mut dfl_sum) = (0.0f64, 0.0f64);
    let mut z = vec![F::zero(); r];
    let mut gz = vec![F::zero(); r];
    let eps = F::c(PROBIOU_EPS);
    for (pi, p) in positives.iter().enumerate() {
        let pos = head.grid.locate(p.anchor);
        let hw = head.grid.levels[pos.level].len();
        let w = p.score;
        let stride = F::c(head.grid.levels[pos.level].stride);
        let tb = gt.boxes[b * gt.max_labels + p.gt];
        // target_bboxes[..., :4] /= stride (in place in the reference), θ untouched.
        let target = [tb[0] / stride, tb[1] / stride, tb[2] / stride, tb[3] / stride, tb[4]];
        let anchor = head.grid.point::<F>(pos);
        let theta = theta_img[p.anchor];
        // The positives come in increasing anchor order: decoded by runs, with the bits of `distances`.
        let dist = preds.run_distances(pos, positives[pi..].iter().map(|q| q.anchor));
        let rb = dist2rbox(dist, theta, anchor);
        let pred = [rb[0], rb[1], rb[2], rb[3], theta];
        let (iou, gp, _) = probiou_grad(pred, target, eps, -sc.iou * w);
        iou_sum += ((F::one() - iou) * w).f64();
        let want = !grads.is_empty();
        let (g_dist, g_theta) = dist2rbox_grad(dist, theta, [gp[0], gp[1], gp[2], gp[3]]);
        // Each gradient element below belongs to one positive (one per anchor): stored once into the zero-filled
        // buffer as `0 + v` (the bits of `+=`) rather than read first, which would map the shared zero page and fault
        // again on the write (see detection's box_terms).
        if want {
            grads[nl][p.anchor] = F::zero() + (g_theta + gp[4]);
        }
        if r == 1 {
            if want {
                let g = &mut grads[pos.level];
                for (s, gd) in g_dist.iter().enumerate() {
                    g[s * hw + pos.cell] = F::zero() + *gd;
                }
            }
            continue;
        }
        // DFL on the axis-aligned version of the target (θ ignored).
        let ltrb = bbox2dist(anchor, xywh2xyxy([target[0], target[1], target[2], target[3]]), (r - 1) as f64);
        let mut dfl = F::zero();
        for s in 0..4 {
            let t = DflTarget::new(ltrb[s], r);
            for (k, zk) in z.iter_mut().enumerate() {
                *zk = preds.logit(pos, s * r + k);
            }
            dfl += dfl_side_loss(&z, &t);
            if want {
                gz.iter_mut().for_each(|v| *v = F::zero());
                let probs = preds.side_probs(s);
                dfl_side_grad_acc(probs, &t, sc.dfl * w / F::c(4.0), &mut gz);
                softmax_expectation_grad_acc(probs, dist[s], g_dist[s], &mut gz);
                let g = &mut grads[pos.level];
                for (k, v) in gz.iter().enumerate() {
                    g[(s * r + k) * hw + pos.cell] = F::zero() + *v;
                }
            }
        }
        dfl_sum += (dfl / F::c(4.0) * w).f64();
    }
    (iou_sum, dfl_sum)
}

// ---------------------------------------------------------------------------------------------------
// Building blocks on dense, channel-last tensors
// ---------------------------------------------------------------------------------------------------

fn check_upstream<F: Real>(upstream: Option<&[F]>, n: usize, layout: &str) -> Result<()> {
    if let Some(u) = upstream {
        if u.len() != n {
            return Err(LossError::shape(format!("upstream: expected {n} values ({layout}), got {}", u.len())));
        }
        if !F::all_finite(u) {
            return Err(LossError::non_finite("upstream: expected finite values"));
        }
    }
    Ok(())
}

fn row<F: Real, const N: usize>(d: &[F], i: usize) -> [F; N] {
    std::array::from_fn(|k| d[N * i + k])
}

/// `probiou` on `[N, 5]` inputs: the values `[N]` (the reference's `[N, 1]`) and, given `upstream [N]`,
/// the gradients of Σ iou·upstream with respect to both inputs (`[N, 5]` each).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbiouOutput<F> {
    pub iou: Vec<F>,
    pub grad_obb1: Vec<F>,
    pub grad_obb2: Vec<F>,
}

/// `probiou(obb1, obb2, CIoU, eps)` row by row. Gradients are empty when `upstream` is `None`.
pub fn probiou_batch<F: Real>(obb1: TensorRef<F>, obb2: TensorRef<F>, ciou: bool, eps: F, upstream: Option<&[F]>) -> Result<ProbiouOutput<F>> {
    obb1.check_rank("obb1", 2, "[N, 5] of (cx, cy, w, h, angle)")?;
    let n = obb1.shape[0];
    expect_shape(&obb1, "obb1", &[n, 5])?;
    expect_shape(&obb2, "obb2", &[n, 5])?;
    if !eps.is_finite() {
        return Err(LossError::non_finite(format!("eps: expected a finite value, got {eps}")));
    }
    check_upstream(upstream, n, "one per box pair")?;
    let want = upstream.is_some();
    let mut out = ProbiouOutput { iou: Vec::with_capacity(n), grad_obb1: Vec::new(), grad_obb2: Vec::new() };
    if want {
        out.grad_obb1.reserve(5 * n);
        out.grad_obb2.reserve(5 * n);
    }
    for i in 0..n {
        let (a, b) = (row::<F, 5>(obb1.data, i), row::<F, 5>(obb2.data, i));
        let up = upstream.map_or(F::zero(), |u| u[i]);
        let (v, g1, g2) = if ciou { probiou_ciou_grad(a, b, eps, up, None) } else { probiou_grad(a, b, eps, up) };
        out.iou.push(v);
        if want {
            out.grad_obb1.extend_from_slice(&g1);
            out.grad_obb2.extend_from_slice(&g2);
        }
    }
    Ok(out)
}

/// `dist2rbox` on dense inputs and, given `upstream` (shaped like `boxes`), its gradients.
#[derive(Debug, Clone, PartialEq)]
pub struct Dist2RboxOutput<F> {
    /// `[..., A, 4]` (cx, cy, w, h), shaped like `pred_dist`.
    pub boxes: Vec<F>,
    pub shape: Vec<usize>,
    pub grad_pred_dist: Vec<F>,
    pub grad_pred_angle: Vec<F>,
}

/// `dist2rbox(pred_dist [..., A, 4], pred_angle [..., A, 1], anchor_points [A, 2])`, anchors broadcast
/// over the leading dimensions.
pub fn dist2rbox_batch<F: Real>(pred_dist: TensorRef<F>, pred_angle: TensorRef<F>, anchor_points: TensorRef<F>, upstream: Option<&[F]>) -> Result<Dist2RboxOutput<F>> {
    pred_dist.check_len("pred_dist")?;
    let rank = pred_dist.shape.len();
    if rank < 2 || pred_dist.shape[rank - 1] != 4 {
        return Err(LossError::shape(format!("pred_dist: expected shape [..., A, 4] (l, t, r, b per anchor), got {}", fmt_shape(pred_dist.shape))));
    }
    let a = pred_dist.shape[rank - 2];
    let mut angle_shape = pred_dist.shape.to_vec();
    angle_shape[rank - 1] = 1;
    expect_shape(&pred_dist, "pred_dist", pred_dist.shape)?;
    expect_shape(&pred_angle, "pred_angle", &angle_shape)?;
    expect_shape(&anchor_points, "anchor_points", &[a, 2])?;
    let n = pred_angle.data.len();
    check_upstream(upstream, 4 * n, "shaped like pred_dist")?;
    let mut out = Dist2RboxOutput { boxes: Vec::with_capacity(4 * n), shape: pred_dist.shape.to_vec(), grad_pred_dist: Vec::new(), grad_pred_angle: Vec::new() };
    for i in 0..n {
        let ai = if a == 0 { 0 } else { i % a };
        let d = row::<F, 4>(pred_dist.data, i);
        let anchor = row::<F, 2>(anchor_points.data, ai);
        let theta = pred_angle.data[i];
        out.boxes.extend_from_slice(&dist2rbox(d, theta, anchor));
        if let Some(u) = upstream {
            let (gd, gt) = dist2rbox_grad(d, theta, row::<F, 4>(u, i));
            out.grad_pred_dist.extend_from_slice(&gd);
            out.grad_pred_angle.push(gt);
        }
    }
    Ok(out)
}

/// `bbox_decode` of v8OBBLoss on channel-last predictions: anchor_points `[A,2]`, pred_dist
/// `[B,A,4R]`, pred_angle `[B,A,1]` → `[B,A,5]` grid (cx, cy, w, h, θ).
pub fn bbox_decode_rotated<F: Real>(anchor_points: TensorRef<F>, pred_dist: TensorRef<F>, pred_angle: TensorRef<F>, reg_max: usize) -> Result<(Vec<F>, Vec<usize>)> {
    if reg_max == 0 {
        return Err(LossError::invalid("reg_max: expected at least 1, got 0"));
    }
    anchor_points.check_rank("anchor_points", 2, "[A, 2]")?;
    pred_dist.check_rank("pred_dist", 3, &format!("[B, A, {}]", 4 * reg_max))?;
    let a = anchor_points.shape[0];
    let bsz = pred_dist.shape[0];
    expect_shape(&anchor_points, "anchor_points", &[a, 2])?;
    expect_shape(&pred_dist, "pred_dist", &[bsz, a, 4 * reg_max])?;
    expect_shape(&pred_angle, "pred_angle", &[bsz, a, 1])?;
    let mut out = Vec::with_capacity(bsz * a * 5);
    let mut probs = vec![F::zero(); reg_max];
    for (i, zrow) in pred_dist.data.chunks(4 * reg_max).enumerate() {
        let d: [F; 4] = std::array::from_fn(|s| {
            let z = &zrow[s * reg_max..(s + 1) * reg_max];
            if reg_max == 1 {
                z[0]
            } else {
                softmax_expectation(z, &mut probs)
            }
        });
        let theta = pred_angle.data[i];
        out.extend_from_slice(&dist2rbox(d, theta, row::<F, 2>(anchor_points.data, i % a.max(1))));
        out.push(theta);
    }
    Ok((out, vec![bsz, a, 5]))
}

/// RotatedBboxLoss.forward (SPEC §8.5) on the [`BboxLossInputs`] of BboxLoss with 5-wide boxes:
/// `pred_dist [B,A,4R]`, `pred_bboxes [B,A,5]` (grid cx, cy, w, h, θ), `anchor_points [A,2]`,
/// `target_bboxes [B,A,5]`, `target_scores [B,A,nc]`, `fg_mask [B,A]`. The gradients are those of
/// loss_iou + loss_dfl with `pred_dist` and `pred_bboxes` as independent leaves: `grad_pred_dist` is
/// the DFL part only (zeros for R = 1), `grad_pred_bboxes` is `[B,A,5]`.
pub fn rotated_bbox_loss<F: Real>(inp: &BboxLossInputs<F>, reg_max: usize) -> Result<BboxLossOutput<F>> {
    let iou = |p: [F; 5], t: [F; 5], up: F| {
        let (v, g, _) = probiou_grad(p, t, F::c(PROBIOU_EPS), up);
        (v, g)
    };
    // DFL supervises the unrotated box of the target (θ ignored), SPEC §8.5.
    bbox_loss_with::<F, 5>(inp, reg_max, iou, |t| xywh2xyxy([t[0], t[1], t[2], t[3]]))
}

/// RotatedTaskAlignedAssigner.forward on dense inputs: `pd_scores [B,A,nc]` (probabilities),
/// `pd_bboxes [B,A,5]`, `anc_points [A,2]`, `gt_labels [B,M,1]`, `gt_bboxes [B,M,5]`, `mask_gt [B,M,1]`,
/// boxes as pixel (cx, cy, w, h, θ). `target_bboxes` of the result is `[B,A,5]`.
pub fn assign_dense_rotated<F: Real>(
    cfg: &AssignerConfig,
    pd_scores: TensorRef<F>,
    pd_bboxes: TensorRef<F>,
    anc_points: TensorRef<F>,
    gt_labels: TensorRef<F>,
    gt_bboxes: TensorRef<F>,
    mask_gt: TensorRef<F>,
) -> Result<DenseAssignment<F>> {
    let inside = |p: [F; 2], b: &[F; 5]| center_in_rotated_box(p, *b);
    let overlap = |gt: &[F; 5], pred: [F; 5]| probiou(*gt, pred, F::c(PROBIOU_EPS));
    assign_dense_with::<F, 5>(cfg, [pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt], inside, overlap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hyp::Hyp;

    use crate::testing::{random_levels, Lcg};

    fn config(nc: usize, reg_max: usize, strides: &[f64]) -> DetectionConfig {
        DetectionConfig { nc, reg_max, strides: strides.to_vec(), hyp: Hyp { box_gain: 7.5, cls: 0.5, dfl: 1.5, ..Hyp::default() }, tal_topk: 3 }
    }

    /// Central differences in f64 of the whole OBB loss with the assignment (and S) held fixed, against
    /// the analytic gradient, for every logit and every angle of a case with overlapping rotated boxes.
    #[test]
    fn gradient_matches_finite_differences_with_frozen_assignment() {
        for reg_max in [16usize, 1] {
            let (nc, strides) = (3, vec![8.0, 16.0]);
            let crit = V8OBBLoss::new(config(nc, reg_max, &strides)).unwrap();
            assert_eq!(crit.cfg.tal_topk, OBB_TOPK);
            let c = 4 * reg_max + nc;
            let shapes = [vec![2usize, c, 6, 8], vec![2, c, 3, 4]];
            let na = 6 * 8 + 3 * 4;
            let mut rng = Lcg(17 + reg_max as u64);
            let mut levels = random_levels(&mut rng, &shapes, reg_max, 0.8);
            let mut angle: Vec<f64> = (0..2 * na).map(|_| rng.next() * 3.0 - 0.7).collect();
            let bi = [0.0, 0.0, 1.0, 1.0];
            let cls = [1.0, 2.0, 0.0, 2.0];
            let boxes = [0.45, 0.5, 0.5, 0.3, 0.4, 0.5, 0.45, 0.4, 0.35, 1.2, 0.5, 0.55, 0.6, 0.5, 0.05, 0.3, 0.4, 0.3, 0.6, 1.5];
            let (s1, s2, s5) = ([4usize], [4usize, 1usize], [4usize, 5usize]);
            let batch = DetBatch { batch_idx: TensorRef::new(&bi, &s1), cls: TensorRef::new(&cls, &s2), bboxes: TensorRef::new(&boxes, &s5) };
            let ashape = [2usize, 1, na];
            let feats: Vec<TensorRef<f64>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let (head, gt) = crit.prepare(&feats, TensorRef::new(&angle, &ashape), &batch).unwrap();
            let (positives, _) = assign_batch_rotated(&head, &angle, &gt, &AssignerConfig::for_loss(OBB_TOPK, nc));
            assert!(positives.iter().map(|p| p.len()).sum::<usize>() >= 10, "the case must have positives");
            let s = score_divisor::<f64>(&positives);
            let base = crit.losses_given_assignment(&head, &angle, &gt, &positives, s, true);
            let full = crit.value_and_grad(&feats, TensorRef::new(&angle, &ashape), &batch).unwrap();
            assert_eq!(full.loss, base.loss);
            let total = |lv: &[Vec<f64>], ang: &[f64]| -> f64 {
                let feats: Vec<TensorRef<f64>> = lv.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
                let head = Head::validate(&feats, &strides, reg_max, nc).unwrap();
                crit.losses_given_assignment(&head, ang, &gt, &positives, s, false).loss.iter().sum()
            };
            let h = 1e-6;
            let check = |fd: f64, an: f64, what: &str| assert!((fd - an).abs() < 1e-6 * (1.0 + fd.abs()), "reg_max {reg_max} {what}: fd {fd} analytic {an}");
            for l in 0..levels.len() {
                for i in 0..levels[l].len() {
                    let orig = levels[l][i];
                    levels[l][i] = orig + h;
                    let fp = total(&levels, &angle);
                    levels[l][i] = orig - h;
                    let fm = total(&levels, &angle);
                    levels[l][i] = orig;
                    check((fp - fm) / (2.0 * h), base.grads[l][i], &format!("level {l} elem {i}"));
                }
            }
            let mut nonzero = 0;
            for i in 0..angle.len() {
                let orig = angle[i];
                angle[i] = orig + h;
                let fp = total(&levels, &angle);
                angle[i] = orig - h;
                let fm = total(&levels, &angle);
                angle[i] = orig;
                let an = base.grads[levels.len()][i];
                check((fp - fm) / (2.0 * h), an, &format!("angle {i}"));
                nonzero += (an != 0.0) as usize;
            }
            assert!(nonzero >= 10, "the angle must receive gradient at the positives");
        }
    }

    #[test]
    fn dist2rbox_gradient_matches_finite_differences() {
        let mut rng = Lcg(5);
        for _ in 0..50 {
            let d: [f64; 4] = std::array::from_fn(|_| rng.next() * 10.0);
            let th = rng.next() * 3.0 - 0.8;
            let a = [rng.next() * 20.0, rng.next() * 20.0];
            let up: [f64; 4] = std::array::from_fn(|_| rng.next() * 2.0 - 1.0);
            let f = |d: [f64; 4], th: f64| dist2rbox(d, th, a).iter().zip(&up).map(|(x, u)| x * u).sum::<f64>();
            let (gd, gt) = dist2rbox_grad(d, th, up);
            let h = 1e-6;
            for k in 0..4 {
                let (mut dp, mut dm) = (d, d);
                dp[k] += h;
                dm[k] -= h;
                let fd = (f(dp, th) - f(dm, th)) / (2.0 * h);
                assert!((fd - gd[k]).abs() < 1e-7, "d{k}: fd {fd} analytic {}", gd[k]);
            }
            let fd = (f(d, th + h) - f(d, th - h)) / (2.0 * h);
            assert!((fd - gt).abs() < 1e-7, "theta: fd {fd} analytic {gt}");
        }
        // θ = 0: the plain centre/size decode.
        assert_eq!(dist2rbox([1.0f64, 2.0, 3.0, 6.0], 0.0, [10.0, 20.0]), [11.0, 22.0, 4.0, 8.0]);
    }

    #[test]
    fn rotated_centre_in_box_is_inclusive() {
        // θ = 0: corners are exact, anchors on the edges count.
        let b = [60.0f32, 60.0, 32.0, 48.0, 0.0];
        assert!(center_in_rotated_box([44.0, 36.0], b));
        assert!(center_in_rotated_box([76.0, 84.0], b));
        assert!(!center_in_rotated_box([76.01, 60.0], b));
        assert!(!center_in_rotated_box([60.0, 35.99], b));
        // 45°: the centre and points along the rotated axes.
        let r = [0.0f64, 0.0, 4.0, 2.0, std::f64::consts::FRAC_PI_4];
        assert!(center_in_rotated_box([0.0, 0.0], r));
        assert!(center_in_rotated_box([1.3, 1.3], r));
        assert!(!center_in_rotated_box([1.3, -1.3], r));
        assert!(!center_in_rotated_box([1.5, 0.0], r));
        // The bounding rectangle covers every corner.
        let k = xywhr_corners(r);
        let bb = corner_bounds(r);
        for p in k {
            assert!(p[0] >= bb[0] && p[0] <= bb[2] && p[1] >= bb[1] && p[1] <= bb[3]);
        }
    }

    #[test]
    fn labels_filter_and_padding_follow_the_reference() {
        let bi = [0.0f32, 1.0, 0.0];
        let cls = [1.0f32, 0.0, 2.0];
        // Image 64 (H) × 192 (W): width scaled by H, height by W.
        let boxes = [0.5f32, 0.5, 2.5 / 64.0, 0.2, 0.3, 0.5, 0.5, 0.4, 0.3, 0.1, 0.2, 0.2, 0.5, 1.9 / 192.0, 0.0];
        let (s1, s2, s5) = ([3usize], [3usize, 1usize], [3usize, 5usize]);
        let labels = validate_obb_labels(TensorRef::new(&bi, &s1), TensorRef::new(&cls, &s2), TensorRef::new(&boxes, &s5), 2, 3).unwrap();
        let kept = labels.without_tiny(64.0, 192.0);
        assert_eq!(kept.image, vec![0, 1]);
        let t = ObbGtTable::build_rotated(&kept, 2, [192.0, 64.0, 192.0, 64.0]);
        assert_eq!(t.max_labels, 1);
        assert_eq!(t.boxes[0], [96.0, 32.0, 2.5 * 3.0, 0.2 * 64.0, 0.3]);
        // A box whose five values sum to ≤ 0 is padding (θ counts).
        let zero = [0.0f32, 0.0, 0.0, 0.0, 0.0];
        let neg = [0.0f32, 0.0, 0.0, 0.0, -0.5];
        for (b, valid) in [(zero, false), (neg, false), ([0.0, 0.0, 0.0, 0.0, 0.5], true)] {
            let l = Labels::<f32, 5> { image: vec![0], cls: vec![0.0], boxes: vec![b] };
            assert_eq!(ObbGtTable::build_rotated(&l, 1, [1.0; 4]).valid, vec![valid]);
        }
        let (rows, shape) = preprocess_obb(TensorRef::new(&[1.0f32, 2.0, 0.5, 0.5, 0.25, 0.5, 1.0], &[1, 7]), 2, [100.0, 50.0, 100.0, 50.0]).unwrap();
        assert_eq!(shape, vec![2, 1, 6]);
        assert_eq!(rows, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 50.0, 25.0, 25.0, 25.0, 1.0]);
    }

    #[test]
    fn no_positives_give_zero_box_terms_and_zero_angle_gradient() {
        let crit = V8OBBLoss::new(config(2, 16, &[8.0, 16.0])).unwrap();
        let c = 64 + 2;
        let l0 = vec![0.1f32; 2 * c * 8 * 8];
        let l1 = vec![-0.2f32; 2 * c * 4 * 4];
        let (sh0, sh1) = ([2usize, c, 8, 8], [2usize, c, 4, 4]);
        let angle = vec![0.3f32; 2 * 80];
        let ash = [2usize, 1, 80];
        // One 3×3 px GT between anchor centres.
        let (bi, cls, bb) = ([0.0f32], [1.0f32], [10.0 / 64.0, 26.0 / 64.0, 3.0 / 64.0, 3.0 / 64.0, 0.3]);
        let batch = DetBatch { batch_idx: TensorRef::new(&bi, &[1]), cls: TensorRef::new(&cls, &[1, 1]), bboxes: TensorRef::new(&bb, &[1, 5]) };
        let out = crit.value_and_grad(&[TensorRef::new(&l0, &sh0), TensorRef::new(&l1, &sh1)], TensorRef::new(&angle, &ash), &batch).unwrap();
        assert_eq!(out.loss[0], 0.0);
        assert_eq!(out.loss[2], 0.0);
        assert!(out.loss[1] > 0.0);
        assert_eq!(out.grads.len(), 3);
        assert!(out.grads[2].iter().all(|&g| g == 0.0));
        // Box channels get nothing; class channels do.
        assert!(out.grads[0][..64 * 64].iter().all(|&g| g == 0.0));
        assert!(out.grads[0][64 * 64..66 * 64].iter().all(|&g| g > 0.0));
    }

    #[test]
    fn bad_inputs_are_rejected() {
        use crate::error::ErrorCode;
        let crit = V8OBBLoss::new(config(2, 1, &[8.0])).unwrap();
        let l0 = vec![0.5f32; 6 * 4 * 4];
        let sh0 = [1usize, 6, 4, 4];
        let feats = [TensorRef::new(&l0, &sh0)];
        let angle = vec![0.1f32; 16];
        let (bi, cls, bb) = ([0.0f32], [1.0f32], [0.5f32, 0.5, 0.5, 0.5, 0.2]);
        let batch = DetBatch { batch_idx: TensorRef::new(&bi, &[1]), cls: TensorRef::new(&cls, &[1, 1]), bboxes: TensorRef::new(&bb, &[1, 5]) };
        assert!(crit.call(&feats, TensorRef::new(&angle, &[1, 1, 16]), &batch).is_ok());
        let e = crit.call(&feats, TensorRef::new(&angle, &[1, 16, 1]), &batch).unwrap_err();
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
        assert!(e.message.contains("preds.angle"), "{}", e.message);
        let mut bad = angle.clone();
        bad[3] = f32::NAN;
        let e = crit.call(&feats, TensorRef::new(&bad, &[1, 1, 16]), &batch).unwrap_err();
        assert_eq!(e.code, ErrorCode::NonFinite);
        let bb4 = [0.5f32, 0.5, 0.5, 0.5];
        let b4 = DetBatch { bboxes: TensorRef::new(&bb4, &[1, 4]), ..batch };
        let e = crit.call(&feats, TensorRef::new(&angle, &[1, 1, 16]), &b4).unwrap_err();
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
        assert!(e.message.contains("[1, 5]"), "{}", e.message);
        let bbi = [0.5f32, 0.5, 0.5, 0.5, f32::INFINITY];
        let binf = DetBatch { bboxes: TensorRef::new(&bbi, &[1, 5]), ..batch };
        assert_eq!(crit.call(&feats, TensorRef::new(&angle, &[1, 1, 16]), &binf).unwrap_err().code, ErrorCode::NonFinite);
        // Finite when normalized, infinite in pixels.
        let bbo = [0.5f32, 0.5, 3e37, 0.5, 0.1];
        let bov = DetBatch { bboxes: TensorRef::new(&bbo, &[1, 5]), ..batch };
        let e = crit.call(&feats, TensorRef::new(&angle, &[1, 1, 16]), &bov).unwrap_err();
        assert_eq!(e.code, ErrorCode::NonFinite);
        assert!(e.message.contains("batch.bboxes"), "{}", e.message);
        let cls_bad = [2.0f32];
        let bc = DetBatch { cls: TensorRef::new(&cls_bad, &[1, 1]), ..batch };
        assert_eq!(crit.call(&feats, TensorRef::new(&angle, &[1, 1, 16]), &bc).unwrap_err().code, ErrorCode::LabelOutOfRange);
        // Fewer anchors than the fixed top-10 while labels exist.
        let l_small = vec![0.5f32; 6 * 3 * 3];
        let e = crit.call(&[TensorRef::new(&l_small, &[1, 6, 3, 3])], TensorRef::new(&angle[..9], &[1, 1, 9]), &batch).unwrap_err();
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
        // Building blocks.
        let o = [1.0f32, 2.0, 3.0, 4.0, 0.5];
        let e = probiou_batch(TensorRef::new(&o, &[1, 5]), TensorRef::new(&o[..4], &[1, 4]), false, 1e-7, None).unwrap_err();
        assert!(e.message.contains("obb2"), "{}", e.message);
        let on = [1.0f32, 2.0, 3.0, 4.0, f32::NAN];
        assert_eq!(probiou_batch(TensorRef::new(&o, &[1, 5]), TensorRef::new(&on, &[1, 5]), false, 1e-7, None).unwrap_err().code, ErrorCode::NonFinite);
        let d = [1.0f32, 2.0, 3.0, 4.0];
        let e = dist2rbox_batch(TensorRef::new(&d, &[1, 4]), TensorRef::new(&[f32::INFINITY], &[1, 1]), TensorRef::new(&[0.0f32, 0.0], &[1, 2]), None).unwrap_err();
        assert_eq!(e.code, ErrorCode::NonFinite);
        assert!(e.message.contains("pred_angle"), "{}", e.message);
        let e = dist2rbox_batch(TensorRef::new(&d, &[1, 4]), TensorRef::new(&[0.1f32], &[1, 1]), TensorRef::new(&[0.0f32, 0.0, 1.0, 1.0], &[2, 2]), None).unwrap_err();
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
    }

    /// The dense RotatedBboxLoss gradients against finite differences (pred boxes and DFL logits as
    /// independent leaves, as in the reference module).
    #[test]
    fn rotated_bbox_loss_gradient_matches_finite_differences() {
        let mut rng = Lcg(3);
        let (b, a, nc, r) = (2usize, 5usize, 2usize, 8usize);
        let anchors: Vec<f64> = (0..a).flat_map(|i| [i as f64 + 0.5, 1.5]).collect();
        let target: Vec<f64> = (0..b * a).flat_map(|i| [(i % a) as f64 + 0.7, 1.2, 3.0, 2.0, 0.4]).collect();
        let mut pred: Vec<f64> = target.iter().map(|&v| v * (1.0 + 0.2 * (rng.next() - 0.5)) + 0.1).collect();
        let mut dist: Vec<f64> = (0..b * a * 4 * r).map(|_| rng.next() * 3.0 - 1.5).collect();
        let mut scores = vec![0.0f64; b * a * nc];
        let fg: Vec<bool> = (0..b * a).map(|i| i % 3 != 1).collect();
        for i in 0..b * a {
            if fg[i] {
                scores[i * nc + i % nc] = 0.2 + 0.6 * rng.next();
            }
        }
        let sh = |v: Vec<usize>| v;
        let (s_d, s_b, s_a, s_s) = (sh(vec![b, a, 4 * r]), sh(vec![b, a, 5]), sh(vec![a, 2]), sh(vec![b, a, nc]));
        let run = |dist: &[f64], pred: &[f64]| {
            let inp = BboxLossInputs {
                pred_dist: TensorRef::new(dist, &s_d),
                pred_bboxes: TensorRef::new(pred, &s_b),
                anchor_points: TensorRef::new(&anchors, &s_a),
                target_bboxes: TensorRef::new(&target, &s_b),
                target_scores: TensorRef::new(&scores, &s_s),
                target_scores_sum: 1.7,
                fg_mask: &fg,
            };
            rotated_bbox_loss(&inp, r).unwrap()
        };
        let base = run(&dist, &pred);
        let h = 1e-6;
        for i in 0..pred.len() {
            let o = pred[i];
            pred[i] = o + h;
            let p = run(&dist, &pred);
            pred[i] = o - h;
            let m = run(&dist, &pred);
            pred[i] = o;
            let fd = (p.loss_iou + p.loss_dfl - m.loss_iou - m.loss_dfl) / (2.0 * h);
            assert!((fd - base.grad_pred_bboxes[i]).abs() < 1e-6 * (1.0 + fd.abs()), "box {i}: fd {fd} analytic {}", base.grad_pred_bboxes[i]);
        }
        for i in 0..dist.len() {
            let o = dist[i];
            dist[i] = o + h;
            let p = run(&dist, &pred);
            dist[i] = o - h;
            let m = run(&dist, &pred);
            dist[i] = o;
            let fd = (p.loss_iou + p.loss_dfl - m.loss_iou - m.loss_dfl) / (2.0 * h);
            assert!((fd - base.grad_pred_dist[i]).abs() < 1e-6 * (1.0 + fd.abs()), "dist {i}: fd {fd} analytic {}", base.grad_pred_dist[i]);
        }
    }

    /// The fused loss path and the dense building blocks agree: decode, assignment, and RotatedBboxLoss.
    #[test]
    fn fused_loss_agrees_with_dense_blocks() {
        let (nc, r, strides) = (2usize, 16usize, vec![8.0, 16.0]);
        let crit = V8OBBLoss::new(config(nc, r, &strides)).unwrap();
        let c = 4 * r + nc;
        let (h0, w0, h1, w1) = (6usize, 8usize, 3usize, 4usize);
        let na = h0 * w0 + h1 * w1;
        let mut rng = Lcg(99);
        let l0: Vec<f64> = (0..c * h0 * w0).map(|_| rng.next() * 3.0 - 1.5).collect();
        let l1: Vec<f64> = (0..c * h1 * w1).map(|_| rng.next() * 3.0 - 1.5).collect();
        let angle: Vec<f64> = (0..na).map(|_| rng.next() * 2.0 - 0.5).collect();
        let (bi, cls, bb) = ([0.0f64, 0.0], [1.0f64, 0.0], [0.4f64, 0.5, 0.6, 0.5, 0.7, 0.6, 0.45, 0.3, 0.6, 1.2]);
        let batch = DetBatch { batch_idx: TensorRef::new(&bi, &[2]), cls: TensorRef::new(&cls, &[2, 1]), bboxes: TensorRef::new(&bb, &[2, 5]) };
        let (sh0, sh1) = ([1usize, c, h0, w0], [1usize, c, h1, w1]);
        let feats = [TensorRef::new(&l0, &sh0), TensorRef::new(&l1, &sh1)];
        let out = crit.value_and_grad(&feats, TensorRef::new(&angle, &[1, 1, na]), &batch).unwrap();
        // Channel-last copies for the dense blocks.
        let head = Head::validate(&feats, &strides, r, nc).unwrap();
        let (anc, st) = head.grid.make_anchors::<f64>(0.5);
        let mut pd = Vec::new();
        let mut sc = Vec::new();
        for a in 0..na {
            let p = head.grid.locate(a);
            let hw = head.grid.levels[p.level].len();
            let lv = if p.level == 0 { &l0 } else { &l1 };
            pd.extend((0..4 * r).map(|k| lv[k * hw + p.cell]));
            sc.extend((0..nc).map(|k| sigmoid(lv[(4 * r + k) * hw + p.cell])));
        }
        let (dec, _) = crit.bbox_decode(TensorRef::new(&anc, &[na, 2]), TensorRef::new(&pd, &[1, na, 4 * r]), TensorRef::new(&angle, &[1, na, 1])).unwrap();
        let px: Vec<f64> = dec.chunks(5).zip(&st).flat_map(|(b, &s)| [b[0] * s, b[1] * s, b[2] * s, b[3] * s, b[4]]).collect();
        let anc_px: Vec<f64> = anc.chunks(2).zip(&st).flat_map(|(p, &s)| [p[0] * s, p[1] * s]).collect();
        let (img_h, img_w) = (48.0, 64.0);
        let gtb: Vec<f64> = bb.chunks(5).flat_map(|b| [b[0] * img_w, b[1] * img_h, b[2] * img_w, b[3] * img_h, b[4]]).collect();
        let asg = assign_dense_rotated(
            &AssignerConfig::for_loss(OBB_TOPK, nc),
            TensorRef::new(&sc, &[1, na, nc]),
            TensorRef::new(&px, &[1, na, 5]),
            TensorRef::new(&anc_px, &[na, 2]),
            TensorRef::new(&cls, &[1, 2, 1]),
            TensorRef::new(&gtb, &[1, 2, 5]),
            TensorRef::new(&[1.0, 1.0], &[1, 2, 1]),
        )
        .unwrap();
        assert!(asg.fg_mask.iter().filter(|&&f| f).count() >= 5);
        let s = asg.target_scores.iter().sum::<f64>().max(1.0);
        let tb: Vec<f64> = asg.target_bboxes.chunks(5).zip(&st).flat_map(|(b, &s)| [b[0] / s, b[1] / s, b[2] / s, b[3] / s, b[4]]).collect();
        let (s_d, s_b, s_a, s_s) = ([1, na, 4 * r], [1, na, 5], [na, 2], [1, na, nc]);
        let inp = BboxLossInputs {
            pred_dist: TensorRef::new(&pd, &s_d),
            pred_bboxes: TensorRef::new(&dec, &s_b),
            anchor_points: TensorRef::new(&anc, &s_a),
            target_bboxes: TensorRef::new(&tb, &s_b),
            target_scores: TensorRef::new(&asg.target_scores, &s_s),
            target_scores_sum: s,
            fg_mask: &asg.fg_mask,
        };
        let bl = rotated_bbox_loss(&inp, r).unwrap();
        assert!((out.loss_items[0] - bl.loss_iou * 7.5).abs() < 1e-12, "{} vs {}", out.loss_items[0], bl.loss_iou * 7.5);
        assert!((out.loss_items[2] - bl.loss_dfl * 1.5).abs() < 1e-12);
        // The fused angle gradient = the dense block's gradient for the predicted box, chained through
        // dist2rbox (centre rotation) plus its 5th column (probIoU covariance); B = 1, box gain 7.5.
        let mut probs = vec![0.0f64; r];
        for a in 0..na {
            let g: [f64; 5] = std::array::from_fn(|k| bl.grad_pred_bboxes[5 * a + k]);
            let d: [f64; 4] = std::array::from_fn(|s| softmax_expectation(&pd[(4 * a + s) * r..(4 * a + s + 1) * r], &mut probs));
            let want = 7.5 * (g[4] + dist2rbox_grad(d, angle[a], [g[0], g[1], g[2], g[3]]).1);
            assert!((out.grads[2][a] - want).abs() < 1e-12, "anchor {a}: fused {} dense {want}", out.grads[2][a]);
            if !asg.fg_mask[a] {
                assert_eq!(out.grads[2][a], 0.0);
            }
        }
    }
}
