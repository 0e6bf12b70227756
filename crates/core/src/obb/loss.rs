//! v8OBBLoss (docs/spec.md §13): the task loss over the rotated assignment, its rotated box terms (probIoU and DFL)
//! and their analytic backward, the angle's included.

use super::assign::assign_batch_rotated;
use super::blocks::bbox_decode_rotated;
use super::geometry::{dist2rbox, dist2rbox_grad};
use super::labels::{preprocess_obb, validate_obb_labels, ObbGtTable};
use super::OBB_TOPK;
use crate::assigner::{AssignerConfig, Positive};
use crate::detection::{DetBatch, DetectionConfig, V8DetectionLoss};
use crate::dfl::{dfl_side_grad_acc, dfl_side_loss, softmax_expectation_grad_acc, DflTarget};
use crate::error::{LossError, Result};
use crate::family::assigned::score_divisor;
use crate::family::head::{check_preds_finite, preds_error_first, Head};
use crate::family::image_preds::ImagePreds;
use crate::family::terms::{class_terms, per_image_grads, times_batch, GradScales, TermSums};
use crate::geometry::{bbox2dist, xywh2xyxy};
use crate::loss::{GradBufs, LossValues, Predictions, TaskLoss};
use crate::probiou::{probiou_grad, PROBIOU_EPS};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

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

    /// `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R], pred_angle [B,A,1])` → (`[B,A,5]` grid
    /// (cx, cy, w, h, θ), shape).
    pub fn bbox_decode<F: Real>(
        &self,
        anchor_points: TensorRef<F>,
        pred_dist: TensorRef<F>,
        pred_angle: TensorRef<F>,
    ) -> Result<(Vec<F>, Vec<usize>)> {
        bbox_decode_rotated(anchor_points, pred_dist, pred_angle, self.cfg.reg_max)
    }

    /// `preprocess(targets [N,7], batch_size, scale_tensor)` → `[B, M, 6]`.
    pub fn preprocess<F: Real>(
        &self,
        targets: TensorRef<F>,
        batch_size: usize,
        scale: [F; 4],
    ) -> Result<(Vec<F>, Vec<usize>)> {
        preprocess_obb(targets, batch_size, scale)
    }

    /// The validated head and GT table: the CPU backend's checks in its order, and the CUDA backend's. The level
    /// tensors' finiteness is checked by parts as in `V8DetectionLoss::run_window` (class window in the class pass,
    /// other channels in the assignment; see `run`), errors in the order of the validation in one go; a caller
    /// without those passes (the CUDA backend) checks the level tensors itself afterwards.
    pub fn prepare<'a, F: Real>(
        &self,
        feats: &[TensorRef<'a, F>],
        angle: TensorRef<'a, F>,
        batch: &DetBatch<F>,
    ) -> Result<(Head<'a, F>, ObbGtTable<F>)> {
        let cfg = &self.cfg;
        let head =
            Head::validate_shapes(feats, &cfg.strides, cfg.reg_max, 4 * cfg.reg_max + cfg.nc, 4 * cfg.reg_max, cfg.nc)?;
        let gt = self.prepare_labels(&head, angle, batch).map_err(|e| preds_error_first(feats, e))?;
        Ok((head, gt))
    }

    /// The angle's shape and finiteness, the labels and the GT table of [`prepare`](Self::prepare).
    fn prepare_labels<F: Real>(
        &self,
        head: &Head<F>,
        angle: TensorRef<F>,
        batch: &DetBatch<F>,
    ) -> Result<ObbGtTable<F>> {
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
        let gt =
            ObbGtTable::build_rotated(&labels.without_tiny(img_h, img_w), head.batch, [img_w, img_h, img_w, img_h]);
        gt.check_finite()?;
        if gt.max_labels > 0 && a < OBB_TOPK {
            return Err(LossError::shape(format!(
                "preds: expected at least topk = {OBB_TOPK} anchors in total, got {a} (feature maps too small)"
            )));
        }
        Ok(gt)
    }

    /// The loss terms and gradients for a fixed assignment and divisor S (the function autograd
    /// differentiates: the assigner and S are constants), and the raw class sum (non-finite when a class logit is).
    fn losses_into<F: Real>(
        &self,
        head: &Head<F>,
        angle: &[F],
        gt: &ObbGtTable<F>,
        positives: &[Vec<Positive<F>>],
        s: F,
        grads: GradBufs<F>,
    ) -> (LossValues<F>, f64) {
        let gains = [self.cfg.hyp.box_gain, self.cfg.hyp.cls, self.cfg.hyp.dfl];
        let scales = GradScales::new(head.batch, gains, s);
        let sums = per_image_grads(grads, head.batch, |b, g| {
            let bce = class_terms(head, gt, b, &positives[b], scales.cls, g);
            let (iou, dfl) = rotated_box_terms(head, angle, gt, b, &positives[b], &scales, g);
            TermSums { bce, iou, dfl }
        });
        // No positives: box = Σ(θ·0) = 0 (θ is finite), with a zero gradient.
        let items: Vec<F> =
            [sums.iou, sums.bce, sums.dfl].iter().zip(gains).map(|(&v, g)| F::c(v) / s * F::c(g)).collect();
        ((times_batch(&items, head.batch), items), sums.bce)
    }

    /// [`losses_into`](Self::losses_into) with fresh buffers (or none), for the finite-difference tests.
    #[cfg(test)]
    pub(super) fn losses_given_assignment<F: Real>(
        &self,
        head: &Head<F>,
        angle: &[F],
        gt: &ObbGtTable<F>,
        positives: &[Vec<Positive<F>>],
        s: F,
        want_grad: bool,
    ) -> crate::detection::LossOutput<F> {
        let run = |g: GradBufs<F>| Ok(self.losses_into(head, angle, gt, positives, s, g).0);
        let out = if want_grad {
            crate::loss::with_fresh_grads(&[head.levels.as_slice(), &[angle]].concat(), run)
        } else {
            crate::loss::without_grads(run)
        };
        out.unwrap_or_else(|e: crate::error::LossError| panic!("{e}"))
    }
}

/// The prediction tensors of the OBB loss, in the order of their gradients: the level tensors, then `angle`
/// `[B, 1, A]`.
#[derive(Debug, Clone, Copy)]
pub struct ObbPreds<'a, F> {
    pub feats: &'a [TensorRef<'a, F>],
    pub angle: TensorRef<'a, F>,
}

impl<'a, F> Predictions<'a, F> for ObbPreds<'a, F> {
    fn tensors(&self) -> Vec<&'a [F]> {
        self.feats.iter().chain([&self.angle]).map(|t| t.data).collect()
    }
}

/// Loss `[box, cls, dfl]·B`, items, and gradients: one per level tensor, then the angle's `[B, 1, A]`.
impl<F: Real> TaskLoss<F> for V8OBBLoss {
    type Preds<'a> = ObbPreds<'a, F>;
    type Batch<'a> = ObbBatch<'a, F>;

    fn run(&self, preds: ObbPreds<F>, batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let (head, gt) = self.prepare(preds.feats, preds.angle, batch)?;
        let (positives, finite) =
            assign_batch_rotated(&head, preds.angle.data, &gt, &AssignerConfig::for_loss(OBB_TOPK, self.cfg.nc));
        if !finite {
            check_preds_finite(preds.feats)?;
        }
        let s = score_divisor::<F>(&positives);
        let (values, bce_sum) = self.losses_into(&head, preds.angle.data, &gt, &positives, s, grads);
        if !bce_sum.is_finite() {
            check_preds_finite(preds.feats)?;
        }
        Ok(values)
    }
}

/// Σ (1 − probIoU)·w and Σ DFL·w over image `b`'s positives (grid units), with their gradients into
/// the box channels (`grads[l]`) and the angle (`grads[L]`, this image's `[A]` slice).
fn rotated_box_terms<F: Real>(
    head: &Head<F>,
    angle: &[F],
    gt: &ObbGtTable<F>,
    b: usize,
    positives: &[Positive<F>],
    sc: &GradScales<F>,
    grads: &mut [&mut [F]],
) -> (f64, f64) {
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
