//! The OBB building blocks on dense, channel-last tensors (docs/spec.md §8.5, §16): probIoU, dist2rbox and the
//! rotated decode with their gradient forms, RotatedBboxLoss and the dense rotated assigner.

use super::geometry::{center_in_rotated_box, dist2rbox, dist2rbox_grad};
use crate::assigner::AssignerConfig;
use crate::blocks::{assign_dense_with, bbox_loss_with, expect_shape, BboxLossInputs, BboxLossOutput, DenseAssignment};
use crate::dfl::softmax_expectation;
use crate::error::{LossError, Result};
use crate::geometry::xywh2xyxy;
use crate::probiou::{probiou, probiou_ciou_grad, probiou_grad, PROBIOU_EPS};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

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
pub fn probiou_batch<F: Real>(
    obb1: TensorRef<F>,
    obb2: TensorRef<F>,
    ciou: bool,
    eps: F,
    upstream: Option<&[F]>,
) -> Result<ProbiouOutput<F>> {
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
pub fn dist2rbox_batch<F: Real>(
    pred_dist: TensorRef<F>,
    pred_angle: TensorRef<F>,
    anchor_points: TensorRef<F>,
    upstream: Option<&[F]>,
) -> Result<Dist2RboxOutput<F>> {
    pred_dist.check_len("pred_dist")?;
    let rank = pred_dist.shape.len();
    if rank < 2 || pred_dist.shape[rank - 1] != 4 {
        return Err(LossError::shape(format!(
            "pred_dist: expected shape [..., A, 4] (l, t, r, b per anchor), got {}",
            fmt_shape(pred_dist.shape)
        )));
    }
    let a = pred_dist.shape[rank - 2];
    let mut angle_shape = pred_dist.shape.to_vec();
    angle_shape[rank - 1] = 1;
    expect_shape(&pred_dist, "pred_dist", pred_dist.shape)?;
    expect_shape(&pred_angle, "pred_angle", &angle_shape)?;
    expect_shape(&anchor_points, "anchor_points", &[a, 2])?;
    let n = pred_angle.data.len();
    check_upstream(upstream, 4 * n, "shaped like pred_dist")?;
    let mut out = Dist2RboxOutput {
        boxes: Vec::with_capacity(4 * n),
        shape: pred_dist.shape.to_vec(),
        grad_pred_dist: Vec::new(),
        grad_pred_angle: Vec::new(),
    };
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
pub fn bbox_decode_rotated<F: Real>(
    anchor_points: TensorRef<F>,
    pred_dist: TensorRef<F>,
    pred_angle: TensorRef<F>,
    reg_max: usize,
) -> Result<(Vec<F>, Vec<usize>)> {
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

/// RotatedBboxLoss.forward (docs/spec.md §8.5) on the [`BboxLossInputs`] of BboxLoss with 5-wide boxes:
/// `pred_dist [B,A,4R]`, `pred_bboxes [B,A,5]` (grid cx, cy, w, h, θ), `anchor_points [A,2]`,
/// `target_bboxes [B,A,5]`, `target_scores [B,A,nc]`, `fg_mask [B,A]`. The gradients are those of
/// loss_iou + loss_dfl with `pred_dist` and `pred_bboxes` as independent leaves: `grad_pred_dist` is
/// the DFL part only (zeros for R = 1), `grad_pred_bboxes` is `[B,A,5]`.
pub fn rotated_bbox_loss<F: Real>(inp: &BboxLossInputs<F>, reg_max: usize) -> Result<BboxLossOutput<F>> {
    let iou = |p: [F; 5], t: [F; 5], up: F| {
        let (v, g, _) = probiou_grad(p, t, F::c(PROBIOU_EPS), up);
        (v, g)
    };
    // DFL supervises the unrotated box of the target (θ ignored), docs/spec.md §8.5.
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
