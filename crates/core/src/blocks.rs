//! The building-block modules of loss.py on dense, channel-last tensors, each with a gradient form:
//! DFLoss (§8.3), BboxLoss (§8.4) and the dense TaskAlignedAssigner (§7) on arbitrary anchor points.
//! The task losses use the same math through sparse, fused paths; these exist for users who call the
//! blocks directly and to test the pieces one at a time.

use crate::assigner::{assign_image, AnchorSource, AssignerConfig, GtBox};
use crate::dfl::{dfl_side_grad_acc, dfl_side_loss, softmax_expectation, DflTarget};
use crate::error::{LossError, Result};
use crate::geometry::{bbox2dist, center_in_box};
use crate::iou::{bbox_iou, bbox_iou_grad, IouKind, IOU_EPS};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

/// Exact shape, exact length, finite values.
pub(crate) fn expect_shape<F: Real>(t: &TensorRef<F>, name: &str, want: &[usize]) -> Result<()> {
    t.check_len(name)?;
    if t.shape != want {
        return Err(LossError::shape(format!(
            "{name}: expected shape {}, got {}",
            fmt_shape(want),
            fmt_shape(t.shape)
        )));
    }
    t.check_finite(name)
}

/// DFLoss: `pred_dist [n·4, R]`, `target [n, 4]` → per-anchor loss `[n]` (mean over the 4 sides),
/// and, given `upstream [n]`, the gradient of Σ loss·upstream w.r.t. `pred_dist`.
pub fn dfl_loss<F: Real>(
    pred_dist: TensorRef<F>,
    target: TensorRef<F>,
    reg_max: usize,
    upstream: Option<&[F]>,
) -> Result<(Vec<F>, Vec<F>)> {
    if reg_max < 2 {
        return Err(LossError::invalid(format!("reg_max: expected at least 2 for DFLoss, got {reg_max}")));
    }
    target.check_rank("target", 2, "[n, 4]")?;
    let n = target.shape[0];
    expect_shape(&target, "target", &[n, 4])?;
    expect_shape(&pred_dist, "pred_dist", &[n * 4, reg_max])?;
    if let Some(u) = upstream {
        if u.len() != n {
            return Err(LossError::shape(format!("upstream: expected {n} values, got {}", u.len())));
        }
    }
    let mut loss = vec![F::zero(); n];
    let mut grad = if upstream.is_some() { vec![F::zero(); pred_dist.data.len()] } else { Vec::new() };
    let mut probs = vec![F::zero(); reg_max];
    for i in 0..n {
        let mut acc = F::zero();
        for s in 0..4 {
            let row = 4 * i + s;
            let z = &pred_dist.data[row * reg_max..(row + 1) * reg_max];
            let t = DflTarget::new(target.data[4 * i + s], reg_max);
            acc += dfl_side_loss(z, &t);
            if let Some(u) = upstream {
                softmax_expectation(z, &mut probs);
                dfl_side_grad_acc(&probs, &t, u[i] / F::c(4.0), &mut grad[row * reg_max..(row + 1) * reg_max]);
            }
        }
        loss[i] = acc / F::c(4.0);
    }
    Ok((loss, grad))
}

/// Inputs of BboxLoss.forward, channel-last: `pred_dist [B,A,4R]`, `pred_bboxes [B,A,4]` (grid xyxy),
/// `anchor_points [A,2]`, `target_bboxes [B,A,4]`, `target_scores [B,A,nc]`, `fg_mask [B,A]`.
pub struct BboxLossInputs<'a, F> {
    pub pred_dist: TensorRef<'a, F>,
    pub pred_bboxes: TensorRef<'a, F>,
    pub anchor_points: TensorRef<'a, F>,
    pub target_bboxes: TensorRef<'a, F>,
    pub target_scores: TensorRef<'a, F>,
    pub target_scores_sum: F,
    pub fg_mask: &'a [bool],
}

/// (loss_iou, loss_dfl, ∂(loss_iou + loss_dfl)/∂pred_dist, ∂(loss_iou + loss_dfl)/∂pred_bboxes).
pub struct BboxLossOutput<F> {
    pub loss_iou: F,
    pub loss_dfl: F,
    pub grad_pred_dist: Vec<F>,
    pub grad_pred_bboxes: Vec<F>,
}

/// BboxLoss.forward (docs/spec.md §8.4): CIoU and DFL terms over the positives, with the gradients of
/// loss_iou + loss_dfl for `pred_dist` and `pred_bboxes` as independent leaves.
pub fn bbox_loss<F: Real>(inp: &BboxLossInputs<F>, reg_max: usize) -> Result<BboxLossOutput<F>> {
    let iou = |p: [F; 4], t: [F; 4], up: F| {
        let (v, g, _) = bbox_iou_grad(p, t, false, IouKind::CIoU, F::c(IOU_EPS), up);
        (v, g)
    };
    bbox_loss_with::<F, 4>(inp, reg_max, iou, |t| t)
}

/// `iou(pred, target, up)` → (overlap, `up`·its gradient w.r.t. `pred`), for `W`-value boxes.
type IouWithGrad<F, const W: usize> = fn([F; W], [F; W], F) -> (F, [F; W]);

/// The box loss for `W`-value boxes: `iou(pred, target, up)` gives the overlap and `up`·its gradient
/// for the prediction; `dfl_box(target)` the xyxy box whose distances the DFL term supervises.
pub(crate) fn bbox_loss_with<F: Real, const W: usize>(
    inp: &BboxLossInputs<F>,
    reg_max: usize,
    iou: IouWithGrad<F, W>,
    dfl_box: fn([F; W]) -> [F; 4],
) -> Result<BboxLossOutput<F>> {
    if reg_max == 0 {
        return Err(LossError::invalid("reg_max: expected at least 1, got 0"));
    }
    inp.pred_bboxes.check_rank("pred_bboxes", 3, &format!("[B, A, {W}]"))?;
    let (b, a) = (inp.pred_bboxes.shape[0], inp.pred_bboxes.shape[1]);
    expect_shape(&inp.pred_bboxes, "pred_bboxes", &[b, a, W])?;
    expect_shape(&inp.pred_dist, "pred_dist", &[b, a, 4 * reg_max])?;
    expect_shape(&inp.anchor_points, "anchor_points", &[a, 2])?;
    expect_shape(&inp.target_bboxes, "target_bboxes", &[b, a, W])?;
    inp.target_scores.check_rank("target_scores", 3, "[B, A, nc]")?;
    let nc = inp.target_scores.shape[2];
    expect_shape(&inp.target_scores, "target_scores", &[b, a, nc])?;
    if inp.fg_mask.len() != b * a {
        return Err(LossError::shape(format!(
            "fg_mask: expected {} values ([{b}, {a}]), got {}",
            b * a,
            inp.fg_mask.len()
        )));
    }
    let s = inp.target_scores_sum;
    if !s.is_finite() {
        return Err(LossError::non_finite(format!("target_scores_sum: expected a finite value, got {s}")));
    }
    let (mut liou, mut ldfl) = (0.0f64, 0.0f64);
    let mut g_dist = vec![F::zero(); inp.pred_dist.data.len()];
    let mut g_box = vec![F::zero(); inp.pred_bboxes.data.len()];
    let mut probs = vec![F::zero(); reg_max];
    for i in (0..b * a).filter(|&i| inp.fg_mask[i]) {
        let w: F = inp.target_scores.data[i * nc..(i + 1) * nc].iter().copied().sum();
        let pb: [F; W] = std::array::from_fn(|k| inp.pred_bboxes.data[W * i + k]);
        let tb: [F; W] = std::array::from_fn(|k| inp.target_bboxes.data[W * i + k]);
        let (v, gp) = iou(pb, tb, -w / s);
        liou += ((F::one() - v) * w).f64();
        g_box[W * i..W * (i + 1)].copy_from_slice(&gp);
        if reg_max > 1 {
            let ai = i % a;
            let anchor = [inp.anchor_points.data[2 * ai], inp.anchor_points.data[2 * ai + 1]];
            let ltrb = bbox2dist(anchor, dfl_box(tb), (reg_max - 1) as f64);
            let mut acc = F::zero();
            for (side, &dist) in ltrb.iter().enumerate() {
                let off = (i * 4 + side) * reg_max;
                let z = &inp.pred_dist.data[off..off + reg_max];
                let t = DflTarget::new(dist, reg_max);
                acc += dfl_side_loss(z, &t);
                softmax_expectation(z, &mut probs);
                dfl_side_grad_acc(&probs, &t, w / (F::c(4.0) * s), &mut g_dist[off..off + reg_max]);
            }
            ldfl += (acc / F::c(4.0) * w).f64();
        }
    }
    Ok(BboxLossOutput {
        loss_iou: F::c(liou) / s,
        loss_dfl: F::c(ldfl) / s,
        grad_pred_dist: g_dist,
        grad_pred_bboxes: g_box,
    })
}

/// Outputs of the dense assigner, in the reference's layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseAssignment<F> {
    /// `[B, A]` class of the assigned GT (GT slot 0's for background; `num_classes` when M = 0).
    pub target_labels: Vec<i64>,
    /// `[B, A, 4]`
    pub target_bboxes: Vec<F>,
    /// `[B, A, nc]`
    pub target_scores: Vec<F>,
    /// `[B, A]`
    pub fg_mask: Vec<bool>,
    /// `[B, A]`
    pub target_gt_idx: Vec<i64>,
}

/// Anchors given as explicit points (the building-block API): a linear scan per GT. `W` values per
/// box; the box kind brings its centre-in-box rule and its overlap (CIoU, or probIoU when rotated).
struct PointAnchors<'a, F, const W: usize> {
    points: &'a [F],
    scores: &'a [F],
    boxes: &'a [F],
    nc: usize,
    inside: fn([F; 2], &[F; W]) -> bool,
    overlap: fn(&[F; W], [F; W]) -> F,
}

impl<'a, F: Real, const W: usize> AnchorSource<F, [F; W]> for PointAnchors<'a, F, W> {
    fn for_each_inside(&self, b: &[F; W], visit: &mut dyn FnMut(usize)) {
        for a in 0..self.points.len() / 2 {
            if (self.inside)([self.points[2 * a], self.points[2 * a + 1]], b) {
                visit(a);
            }
        }
    }
    fn score(&mut self, a: usize, cls: usize) -> F {
        self.scores[a * self.nc + cls]
    }
    fn overlap(&mut self, gt: &[F; W], a: usize) -> F {
        (self.overlap)(gt, std::array::from_fn(|k| self.boxes[W * a + k]))
    }
}

/// TaskAlignedAssigner.forward on dense inputs: `pd_scores [B,A,nc]` (probabilities), `pd_bboxes [B,A,4]`,
/// `anc_points [A,2]`, `gt_labels [B,M,1]`, `gt_bboxes [B,M,4]`, `mask_gt [B,M,1]`, all in pixels.
pub fn assign_dense<F: Real>(
    cfg: &AssignerConfig,
    pd_scores: TensorRef<F>,
    pd_bboxes: TensorRef<F>,
    anc_points: TensorRef<F>,
    gt_labels: TensorRef<F>,
    gt_bboxes: TensorRef<F>,
    mask_gt: TensorRef<F>,
) -> Result<DenseAssignment<F>> {
    let inside = |p: [F; 2], b: &[F; 4]| center_in_box(p, *b, F::c(1e-9));
    let overlap = |gt: &[F; 4], pred: [F; 4]| bbox_iou(*gt, pred, false, IouKind::CIoU, F::c(IOU_EPS));
    assign_dense_with::<F, 4>(cfg, [pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt], inside, overlap)
}

/// The dense assigner for `W`-value boxes: validates `[pd_scores, pd_bboxes, anc_points, gt_labels,
/// gt_bboxes, mask_gt]` and assigns image by image. `target_bboxes` of the result is `[B, A, W]`.
pub(crate) fn assign_dense_with<F: Real, const W: usize>(
    cfg: &AssignerConfig,
    inputs: [TensorRef<F>; 6],
    inside: fn([F; 2], &[F; W]) -> bool,
    overlap: fn(&[F; W], [F; W]) -> F,
) -> Result<DenseAssignment<F>> {
    let [pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt] = inputs;
    if cfg.topk == 0 {
        return Err(LossError::invalid("topk: expected at least 1, got 0"));
    }
    pd_scores.check_rank("pd_scores", 3, "[B, A, num_classes]")?;
    let (b, a, nc) = (pd_scores.shape[0], pd_scores.shape[1], pd_scores.shape[2]);
    if nc != cfg.num_classes {
        return Err(LossError::shape(format!(
            "pd_scores: expected {} classes (num_classes), got shape {}",
            cfg.num_classes,
            fmt_shape(pd_scores.shape)
        )));
    }
    expect_shape(&pd_scores, "pd_scores", &[b, a, nc])?;
    expect_shape(&pd_bboxes, "pd_bboxes", &[b, a, W])?;
    expect_shape(&anc_points, "anc_points", &[a, 2])?;
    gt_bboxes.check_rank("gt_bboxes", 3, &format!("[B, M, {W}]"))?;
    let m = gt_bboxes.shape[1];
    expect_shape(&gt_bboxes, "gt_bboxes", &[b, m, W])?;
    expect_shape(&gt_labels, "gt_labels", &[b, m, 1])?;
    expect_shape(&mask_gt, "mask_gt", &[b, m, 1])?;
    let mut out = DenseAssignment {
        target_labels: vec![if m == 0 { nc as i64 } else { 0 }; b * a],
        target_bboxes: vec![F::zero(); b * a * W],
        target_scores: vec![F::zero(); b * a * nc],
        fg_mask: vec![false; b * a],
        target_gt_idx: vec![0; b * a],
    };
    if m == 0 {
        return Ok(out);
    }
    if a < cfg.topk {
        return Err(LossError::shape(format!("pd_scores: expected at least topk = {} anchors, got {a}", cfg.topk)));
    }
    for bi in 0..b {
        let mut gts = Vec::with_capacity(m);
        for g in 0..m {
            let i = bi * m + g;
            let label = gt_labels.data[i];
            if (label < F::zero() || label.to_usize().unwrap_or(usize::MAX) >= nc) && mask_gt.data[i] != F::zero() {
                return Err(LossError::label(format!(
                    "gt_labels[{bi}, {g}]: expected a class id in [0, {nc}), got {label}"
                )));
            }
            let bbox: [F; W] = std::array::from_fn(|k| gt_bboxes.data[W * i + k]);
            gts.push(GtBox {
                label: label.max(F::zero()).to_usize().unwrap_or(0).min(nc - 1),
                bbox,
                valid: mask_gt.data[i] != F::zero(),
            });
        }
        let mut src = PointAnchors::<F, W> {
            points: anc_points.data,
            scores: &pd_scores.data[bi * a * nc..(bi + 1) * a * nc],
            boxes: &pd_bboxes.data[bi * a * W..(bi + 1) * a * W],
            nc,
            inside,
            overlap,
        };
        let positives = assign_image(cfg, a, &gts, &mut src);
        // Every anchor starts as background pointing at GT slot 0 (docs/spec.md §7 step 7).
        for ai in 0..a {
            let k = bi * a + ai;
            out.target_labels[k] = gt_labels.data[bi * m].to_i64().unwrap_or(0).max(0);
            out.target_bboxes[W * k..W * (k + 1)].copy_from_slice(&gts[0].bbox);
        }
        for p in positives {
            let k = bi * a + p.anchor;
            let g = &gts[p.gt];
            out.fg_mask[k] = true;
            out.target_gt_idx[k] = p.gt as i64;
            out.target_labels[k] = gt_labels.data[bi * m + p.gt].to_i64().unwrap_or(0).max(0);
            out.target_bboxes[W * k..W * (k + 1)].copy_from_slice(&g.bbox);
            out.target_scores[k * nc + g.label] = p.score;
        }
    }
    Ok(out)
}
