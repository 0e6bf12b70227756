//! The building blocks of the losses as plain native functions (the facade wraps them in Ultralytics'
//! classes): VarifocalLoss, FocalLoss, DFLoss, BboxLoss, RotatedBboxLoss, KeypointLoss, the two task-aligned
//! assigners, and the helpers make_anchors, dist2bbox, bbox2dist, dist2rbox, bbox_iou, probiou.
//!
//! Every function reads its `Float32Array`s in place, runs under the panic guard, and returns fresh arrays (V8-owned
//! copies of the core's results, which the garbage collector frees even in a loop that never yields). The
//! differentiable ones take `want_grad` (and, where the value is not a scalar, an optional `upstream` shaped
//! like the value: the gradient returned is that of `sum(value · upstream)`, of `sum(value)` without one).

use napi::bindgen_prelude::Float32Array;
use napi::Env;
use napi_derive::napi;
use yolo_loss_core::assigner::AssignerConfig;
use yolo_loss_core::blocks::{assign_dense, bbox_loss, dfl_loss, BboxLossInputs, DenseAssignment};
use yolo_loss_core::focal::{focal_loss, varifocal_loss};
use yolo_loss_core::geometry::{bbox2dist, dist2bbox, AnchorGrid};
use yolo_loss_core::iou::{bbox_iou_grad, IouKind};
use yolo_loss_core::obb::{assign_dense_rotated, dist2rbox_batch, rotated_bbox_loss};
use yolo_loss_core::pose::keypoint_loss;
use yolo_loss_core::probiou::{probiou_ciou_grad, probiou_grad};
use yolo_loss_core::tensor::fmt_shape;
use yolo_loss_core::{LossError, TensorRef};

use crate::{
    arg, guarded_js, invalid, js_copy, out_tensor, out_tensor_from, to_usize, with_views, Code, CoreResult,
    NativeTensor,
};

// ------------------------------------------------------------------------------------------------------------
// Plumbing

/// A value and, when asked for, one gradient per differentiable input (shaped like that input).
#[napi(object)]
pub struct NativeValueGrads {
    pub value: NativeTensor,
    pub grads: Vec<Float32Array>,
}

/// The value, and `grads` only when they were asked for.
fn value_grads(
    env: &Env,
    value: Vec<f32>,
    dims: &[usize],
    want_grad: bool,
    grads: Vec<Vec<f32>>,
) -> CoreResult<NativeValueGrads> {
    Ok(NativeValueGrads {
        value: out_tensor(env, &value, dims)?,
        grads: if want_grad { grads.iter().map(|g| js_copy(env, g)).collect::<CoreResult<_>>()? } else { Vec::new() },
    })
}

/// A finite scalar configuration value.
fn finite(name: &str, v: f64) -> CoreResult<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(invalid(format!("{name}: expected a finite number, got {v}")))
    }
}

/// The upstream gradient of a non-scalar value: the given tensor (shaped like the value, finite), or ones.
fn upstream(t: Option<&NativeTensor>, value_dims: &[usize]) -> CoreResult<Vec<f32>> {
    let n: usize = value_dims.iter().product();
    match t {
        None => Ok(vec![1.0; n]),
        Some(u) => with_views(&[arg("upstream", u)], |v| {
            let d = v[0].shape;
            if d != value_dims {
                return Err(LossError::shape(format!(
                    "upstream: expected shape {} (that of the value), got {}",
                    fmt_shape(value_dims),
                    fmt_shape(d)
                )));
            }
            v[0].check_finite("upstream")?;
            Ok(u.data.to_vec())
        }),
    }
}

/// The upstream gradient when the gradient is asked for.
fn upstream_if(want_grad: bool, t: Option<&NativeTensor>, value_dims: &[usize]) -> CoreResult<Option<Vec<f32>>> {
    want_grad.then(|| upstream(t, value_dims)).transpose()
}

/// A 0/1 mask given as float32 (`fg_mask`): anything else is refused.
fn bool_mask(name: &str, t: &TensorRef<'_, f32>) -> CoreResult<Vec<bool>> {
    t.check_finite(name)?;
    t.data
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            0.0 => Ok(false),
            1.0 => Ok(true),
            _ => Err(invalid(format!("{name}: expected 0 or 1 (a boolean mask), got {v} at flat index {i}"))),
        })
        .collect()
}

/// Broadcast results larger than this many rows are refused (instead of exhausting memory).
const MAX_BROADCAST_ROWS: usize = 1 << 27;

/// Row-wise broadcasting of two tensors whose last axis holds one record each (a box, a point): the leading
/// axes broadcast as in NumPy. Returns the leading shape of the result and, for each of its rows, the row of
/// each input.
fn broadcast_rows(n1: &str, s1: &[usize], n2: &str, s2: &[usize]) -> CoreResult<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let (l1, l2) = (&s1[..s1.len() - 1], &s2[..s2.len() - 1]);
    let rank = l1.len().max(l2.len());
    let pad = |l: &[usize]| {
        let mut v = vec![1usize; rank - l.len()];
        v.extend_from_slice(l);
        v
    };
    let (a, b) = (pad(l1), pad(l2));
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        out.push(match (a[i], b[i]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(LossError::shape(format!(
                    "{n2}: expected leading dimensions that broadcast with {n1}'s {}, got shape {}",
                    fmt_shape(l1),
                    fmt_shape(s2)
                )))
            }
        });
    }
    let n = out.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= MAX_BROADCAST_ROWS).ok_or_else(
        || {
            invalid(format!(
                "{n1}, {n2}: expected a broadcast result of at most {MAX_BROADCAST_ROWS} rows, got leading shape {}",
                fmt_shape(&out)
            ))
        },
    )?;
    // Row-major strides of each input over the broadcast axes (0 where it is broadcast).
    let strides = |l: &[usize]| {
        let mut st = vec![0usize; rank];
        let mut acc = 1;
        for i in (0..rank).rev() {
            st[i] = if l[i] == 1 { 0 } else { acc };
            acc *= l[i];
        }
        st
    };
    let (st1, st2) = (strides(&a), strides(&b));
    let (mut r1, mut r2) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut idx = vec![0usize; rank];
    let (mut o1, mut o2) = (0usize, 0usize);
    for _ in 0..n {
        r1.push(o1);
        r2.push(o2);
        // Odometer step over the output's leading axes.
        for i in (0..rank).rev() {
            idx[i] += 1;
            o1 += st1[i];
            o2 += st2[i];
            if idx[i] < out[i] {
                break;
            }
            o1 -= st1[i] * out[i];
            o2 -= st2[i] * out[i];
            idx[i] = 0;
        }
    }
    Ok((out, r1, r2))
}

/// Checks that a tensor is at least rank 1 with `width` values on its last axis.
fn records(name: &str, d: &[usize], width: usize, what: &str) -> CoreResult<()> {
    if d.last() != Some(&width) {
        return Err(LossError::shape(format!("{name}: expected shape [..., {width}] ({what}), got {}", fmt_shape(d))));
    }
    Ok(())
}

fn row<const N: usize>(d: &[f32], i: usize) -> [f32; N] {
    std::array::from_fn(|k| d[N * i + k])
}

// ------------------------------------------------------------------------------------------------------------
// Losses

/// `VarifocalLoss(gamma, alpha).forward(pred_score, gt_score, label)`: scalar; grads [pred_score, gt_score].
#[napi]
pub fn varifocal_loss_native(
    env: Env,
    pred_score: NativeTensor,
    gt_score: NativeTensor,
    label: NativeTensor,
    gamma: f64,
    alpha: f64,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    guarded_js("VarifocalLoss.forward", || {
        let args = [arg("predScore", &pred_score), arg("gtScore", &gt_score), arg("label", &label)];
        with_views(&args, |v| {
            let (loss, gp, gq) = varifocal_loss(v[0], v[1], v[2], finite("gamma", gamma)?, finite("alpha", alpha)?)?;
            value_grads(&env, vec![loss], &[], want_grad, vec![gp, gq])
        })
    })
}

/// `FocalLoss(gamma, alpha).forward(pred, label)`: scalar; grads [pred].
#[napi]
pub fn focal_loss_native(
    env: Env,
    pred: NativeTensor,
    label: NativeTensor,
    gamma: f64,
    alpha: f64,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    guarded_js("FocalLoss.forward", || {
        with_views(&[arg("pred", &pred), arg("label", &label)], |v| {
            let (loss, gp) = focal_loss(v[0], v[1], finite("gamma", gamma)?, finite("alpha", alpha)?)?;
            value_grads(&env, vec![loss], &[], want_grad, vec![gp])
        })
    })
}

/// `DFLoss(reg_max)(pred_dist [4n, R], target [n, 4])` → `[n, 1]`; grads [pred_dist] of sum(value · upstream).
#[napi]
pub fn df_loss_native(
    env: Env,
    pred_dist: NativeTensor,
    target: NativeTensor,
    reg_max: f64,
    upstream_grad: Option<NativeTensor>,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    guarded_js("DFLoss", || {
        let r = to_usize("reg_max", reg_max)?;
        with_views(&[arg("predDist", &pred_dist), arg("target", &target)], |v| {
            let dt = v[1].shape;
            if dt.len() != 2 || dt[1] != 4 {
                return Err(LossError::shape(format!(
                    "target: expected shape [n, 4] (l, t, r, b distances per anchor), got {}",
                    fmt_shape(dt)
                )));
            }
            let up = upstream_if(want_grad, upstream_grad.as_ref(), &[dt[0], 1])?;
            let (loss, grad) = dfl_loss(v[0], v[1], r, up.as_deref())?;
            let vd = [loss.len(), 1];
            value_grads(&env, loss, &vd, want_grad, vec![grad])
        })
    })
}

/// The inputs of `BboxLoss.forward` / `RotatedBboxLoss.forward`.
#[napi(object)]
pub struct NativeBboxLossInputs {
    pub pred_dist: NativeTensor,
    pub pred_bboxes: NativeTensor,
    pub anchor_points: NativeTensor,
    pub target_bboxes: NativeTensor,
    pub target_scores: NativeTensor,
    pub target_scores_sum: f64,
    /// `[B, A]` of 0/1.
    pub fg_mask: NativeTensor,
}

/// `BboxLoss(reg_max).forward(...)` (`rotated`: RotatedBboxLoss) → value `[2]` = (loss_iou, loss_dfl); grads
/// [pred_dist, pred_bboxes] of loss_iou + loss_dfl.
#[napi]
pub fn bbox_loss_native(
    env: Env,
    inputs: NativeBboxLossInputs,
    reg_max: f64,
    rotated: bool,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    let what = if rotated { "RotatedBboxLoss.forward" } else { "BboxLoss.forward" };
    guarded_js(what, || {
        let i = &inputs;
        let r = to_usize("reg_max", reg_max)?;
        if r == 0 {
            return Err(invalid("reg_max: expected a positive integer, got 0".to_string()));
        }
        let s = inputs.target_scores_sum;
        if !s.is_finite() {
            return Err(LossError::non_finite(format!("targetScoresSum: expected a finite number, got {s}")));
        }
        if s <= 0.0 {
            return Err(invalid(format!(
                "targetScoresSum: expected a positive divisor (the losses pass max(sum, 1)), got {s}"
            )));
        }
        let args = [
            arg("predDist", &i.pred_dist),
            arg("predBboxes", &i.pred_bboxes),
            arg("anchorPoints", &i.anchor_points),
            arg("targetBboxes", &i.target_bboxes),
            arg("targetScores", &i.target_scores),
            arg("fgMask", &i.fg_mask),
        ];
        with_views(&args, |vs| {
            let fg = bool_mask("fg_mask", &vs[5])?;
            let inp = BboxLossInputs {
                pred_dist: vs[0],
                pred_bboxes: vs[1],
                anchor_points: vs[2],
                target_bboxes: vs[3],
                target_scores: vs[4],
                target_scores_sum: s as f32,
                fg_mask: &fg,
            };
            let out = if rotated { rotated_bbox_loss(&inp, r)? } else { bbox_loss(&inp, r)? };
            value_grads(
                &env,
                vec![out.loss_iou, out.loss_dfl],
                &[2],
                want_grad,
                vec![out.grad_pred_dist, out.grad_pred_bboxes],
            )
        })
    })
}

/// `KeypointLoss(sigmas).forward(pred_kpts, gt_kpts, kpt_mask, area)`: scalar; grads [pred_kpts].
#[napi]
pub fn keypoint_loss_native(
    env: Env,
    pred_kpts: NativeTensor,
    gt_kpts: NativeTensor,
    kpt_mask: NativeTensor,
    area: NativeTensor,
    sigmas: Vec<f64>,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    guarded_js("KeypointLoss.forward", || {
        if let Some((i, v)) = sigmas.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
            return Err(invalid(format!("sigmas[{i}]: expected a positive finite number, got {v}")));
        }
        let args =
            [arg("predKpts", &pred_kpts), arg("gtKpts", &gt_kpts), arg("kptMask", &kpt_mask), arg("area", &area)];
        with_views(&args, |v| {
            let (loss, grad) = keypoint_loss(v[0], v[1], v[2], v[3], &sigmas)?;
            value_grads(&env, vec![loss], &[], want_grad, vec![grad])
        })
    })
}

// ------------------------------------------------------------------------------------------------------------
// Assigners

#[napi(object)]
pub struct NativeAssignerConfig {
    pub topk: f64,
    pub num_classes: f64,
    pub alpha: f64,
    pub beta: f64,
    pub eps: f64,
}

/// `TaskAlignedAssigner.forward` (`rotated`: RotatedTaskAlignedAssigner) → [target_labels [B,A],
/// target_bboxes [B,A,4|5], target_scores [B,A,nc], fg_mask [B,A] (0/1), target_gt_idx [B,A]].
#[allow(clippy::too_many_arguments)]
#[napi]
pub fn task_aligned_assign_native(
    env: Env,
    config: NativeAssignerConfig,
    pd_scores: NativeTensor,
    pd_bboxes: NativeTensor,
    anc_points: NativeTensor,
    gt_labels: NativeTensor,
    gt_bboxes: NativeTensor,
    mask_gt: NativeTensor,
    rotated: bool,
) -> napi::Result<Vec<NativeTensor>, Code> {
    let what = if rotated { "RotatedTaskAlignedAssigner.forward" } else { "TaskAlignedAssigner.forward" };
    guarded_js(what, || {
        let topk = to_usize("topk", config.topk)?;
        let num_classes = to_usize("num_classes", config.num_classes)?;
        if topk == 0 || num_classes == 0 {
            return Err(invalid(format!("topk, num_classes: expected positive integers, got {topk}, {num_classes}")));
        }
        let cfg = AssignerConfig {
            topk,
            num_classes,
            alpha: finite("alpha", config.alpha)?,
            beta: finite("beta", config.beta)?,
            eps: finite("eps", config.eps)?,
        };
        let args = [
            arg("pd_scores", &pd_scores),
            arg("pd_bboxes", &pd_bboxes),
            arg("anc_points", &anc_points),
            arg("gt_labels", &gt_labels),
            arg("gt_bboxes", &gt_bboxes),
            arg("mask_gt", &mask_gt),
        ];
        with_views(&args, |vs| {
            let assign = if rotated { assign_dense_rotated } else { assign_dense };
            let out: DenseAssignment<f32> = assign(&cfg, vs[0], vs[1], vs[2], vs[3], vs[4], vs[5])?;
            // pd_scores was validated as [B, A, nc].
            let (b, a, nc) = (vs[0].shape[0], vs[0].shape[1], vs[0].shape[2]);
            let w = if rotated { 5 } else { 4 };
            Ok(vec![
                out_tensor_from(&env, out.target_labels.iter().map(|&x| x as f32), &[b, a])?,
                out_tensor(&env, &out.target_bboxes, &[b, a, w])?,
                out_tensor(&env, &out.target_scores, &[b, a, nc])?,
                out_tensor_from(&env, out.fg_mask.iter().map(|&f| f as u8 as f32), &[b, a])?,
                out_tensor_from(&env, out.target_gt_idx.iter().map(|&x| x as f32), &[b, a])?,
            ])
        })
    })
}

// ------------------------------------------------------------------------------------------------------------
// Geometry helpers

/// `make_anchors` from level sizes `[[H, W], ...]` → [anchor_points [A, 2], stride_tensor [A, 1]].
#[napi]
pub fn make_anchors_native(
    env: Env,
    shapes: Vec<Vec<f64>>,
    strides: Vec<f64>,
    offset: f64,
) -> napi::Result<Vec<NativeTensor>, Code> {
    guarded_js("make_anchors", || {
        if shapes.len() != strides.len() {
            return Err(LossError::shape(format!(
                "strides: expected one stride per level ({} levels), got {}",
                shapes.len(),
                strides.len()
            )));
        }
        let hw = shapes
            .iter()
            .enumerate()
            .map(|(l, s)| match s.as_slice() {
                [h, w] => {
                    Ok((to_usize(&format!("feats[{l}] height"), *h)?, to_usize(&format!("feats[{l}] width"), *w)?))
                }
                other => Err(LossError::shape(format!(
                    "feats[{l}]: expected a level size [H, W], got {} values",
                    other.len()
                ))),
            })
            .collect::<CoreResult<Vec<_>>>()?;
        for (l, s) in strides.iter().enumerate() {
            finite(&format!("strides[{l}]"), *s)?;
        }
        let offset = finite("grid_cell_offset", offset)?;
        // Only numbers decide the size here: bound it (a failed allocation would abort the process).
        let a = hw
            .iter()
            .try_fold(0usize, |acc, (h, w)| h.checked_mul(*w).and_then(|n| acc.checked_add(n)))
            .filter(|&a| a <= MAX_BROADCAST_ROWS)
            .ok_or_else(|| {
                invalid(format!(
                    "feats: expected at most {MAX_BROADCAST_ROWS} anchors in total, got level sizes {hw:?}"
                ))
            })?;
        let (points, st) = AnchorGrid::new(&hw, &strides).make_anchors::<f32>(offset);
        Ok(vec![out_tensor(&env, &points, &[a, 2])?, out_tensor(&env, &st, &[a, 1])?])
    })
}

/// A tensor of records for [`pairwise`]: its name, `width` values per record on the last axis (`what` they are).
struct Records<'a> {
    name: &'a str,
    t: &'a NativeTensor,
    width: usize,
    what: &'a str,
}

fn rec<'a>(name: &'a str, t: &'a NativeTensor, width: usize, what: &'a str) -> Records<'a> {
    Records { name, t, width, what }
}

/// What [`pairwise`] computed: the values and their shape, the shapes of the inputs and, for each output row, the
/// row of each input.
struct Pairwise {
    out: Vec<f32>,
    shape: Vec<usize>,
    inputs: [Vec<usize>; 2],
    rows: [Vec<usize>; 2],
}

/// Runs `f(row1, row2, out)` over the broadcast rows of two record tensors; `f` writes `out_w` values per row.
fn pairwise(
    x: Records<'_>,
    y: Records<'_>,
    out_w: usize,
    mut f: impl FnMut(&[f32], &[f32], &mut [f32]),
) -> CoreResult<Pairwise> {
    with_views(&[arg(x.name, x.t), arg(y.name, y.t)], |v| {
        let (d1, d2) = (v[0].shape, v[1].shape);
        records(x.name, d1, x.width, x.what)?;
        records(y.name, d2, y.width, y.what)?;
        v[0].check_finite(x.name)?;
        v[1].check_finite(y.name)?;
        let (lead, r1, r2) = broadcast_rows(x.name, d1, y.name, d2)?;
        let (w1, w2) = (x.width, y.width);
        let mut out = vec![0f32; r1.len() * out_w];
        for (o, (&i, &j)) in r1.iter().zip(&r2).enumerate() {
            f(&v[0].data[i * w1..(i + 1) * w1], &v[1].data[j * w2..(j + 1) * w2], &mut out[o * out_w..(o + 1) * out_w]);
        }
        let mut shape = lead;
        shape.push(out_w);
        Ok(Pairwise { out, shape, inputs: [d1.to_vec(), d2.to_vec()], rows: [r1, r2] })
    })
}

/// `dist2bbox(distance [..., 4], anchor_points [..., 2], xywh)` → `[..., 4]` (leading axes broadcast).
#[napi(js_name = "dist2bboxNative")]
pub fn dist2bbox_native(
    env: Env,
    distance: NativeTensor,
    anchor_points: NativeTensor,
    xywh: bool,
) -> napi::Result<NativeTensor, Code> {
    guarded_js("dist2bbox", || {
        let p = pairwise(
            rec("distance", &distance, 4, "l, t, r, b"),
            rec("anchor_points", &anchor_points, 2, "x, y"),
            4,
            |d, a, o| o.copy_from_slice(&dist2bbox([d[0], d[1], d[2], d[3]], [a[0], a[1]], xywh)),
        )?;
        out_tensor(&env, &p.out, &p.shape)
    })
}

/// `bbox2dist(anchor_points [..., 2], bbox [..., 4] xyxy, reg_max)` → `[..., 4]` clamped to [0, reg_max − 0.01].
#[napi(js_name = "bbox2distNative")]
pub fn bbox2dist_native(
    env: Env,
    anchor_points: NativeTensor,
    bbox: NativeTensor,
    reg_max: f64,
) -> napi::Result<NativeTensor, Code> {
    guarded_js("bbox2dist", || {
        let r = finite("reg_max", reg_max)?;
        let p = pairwise(
            rec("anchor_points", &anchor_points, 2, "x, y"),
            rec("bbox", &bbox, 4, "x1, y1, x2, y2"),
            4,
            |a, b, o| o.copy_from_slice(&bbox2dist([a[0], a[1]], [b[0], b[1], b[2], b[3]], r)),
        )?;
        out_tensor(&env, &p.out, &p.shape)
    })
}

/// Pairwise IoU-like function over broadcast rows, with the gradients of sum(value · upstream).
#[allow(clippy::too_many_arguments)]
fn pairwise_grad<const W: usize>(
    env: &Env,
    n1: &str,
    t1: &NativeTensor,
    n2: &str,
    t2: &NativeTensor,
    what: &str,
    up: Option<&NativeTensor>,
    want_grad: bool,
    f: impl Fn([f32; W], [f32; W], f32) -> (f32, [f32; W], [f32; W]),
) -> CoreResult<NativeValueGrads> {
    // First pass: values (and the broadcast maps).
    let p = pairwise(rec(n1, t1, W, what), rec(n2, t2, W, what), 1, |a, b, o| {
        o[0] = f(row::<W>(a, 0), row::<W>(b, 0), 0.0).0;
    })?;
    if !want_grad {
        return value_grads(env, p.out, &p.shape, false, Vec::new());
    }
    let u = upstream(up, &p.shape)?;
    let mut g1 = vec![0f32; t1.data.len()];
    let mut g2 = vec![0f32; t2.data.len()];
    let [r1, r2] = &p.rows;
    for (o, (&i, &j)) in r1.iter().zip(r2).enumerate() {
        let (_, ga, gb) = f(row::<W>(&t1.data, i), row::<W>(&t2.data, j), u[o]);
        for k in 0..W {
            g1[i * W + k] += ga[k];
            g2[j * W + k] += gb[k];
        }
    }
    debug_assert_eq!(p.inputs[0].iter().product::<usize>(), g1.len());
    debug_assert_eq!(p.inputs[1].iter().product::<usize>(), g2.len());
    value_grads(env, p.out, &p.shape, true, vec![g1, g2])
}

#[napi(object)]
pub struct NativeIouOptions {
    pub xywh: bool,
    pub giou: bool,
    pub diou: bool,
    pub ciou: bool,
    pub eps: f64,
}

/// `bbox_iou(box1 [..., 4], box2 [..., 4], xywh, GIoU, DIoU, CIoU, eps)` → `[..., 1]`; grads [box1, box2].
#[napi]
pub fn bbox_iou_native(
    env: Env,
    box1: NativeTensor,
    box2: NativeTensor,
    options: NativeIouOptions,
    upstream_grad: Option<NativeTensor>,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    guarded_js("bbox_iou", || {
        let eps = finite("eps", options.eps)? as f32;
        let kind = IouKind::from_flags(options.giou, options.diou, options.ciou);
        let what = if options.xywh { "cx, cy, w, h" } else { "x1, y1, x2, y2" };
        pairwise_grad::<4>(&env, "box1", &box1, "box2", &box2, what, upstream_grad.as_ref(), want_grad, |a, b, up| {
            bbox_iou_grad(a, b, options.xywh, kind, eps, up)
        })
    })
}

/// `probiou(obb1 [..., 5], obb2 [..., 5], CIoU, eps)` → `[..., 1]`; grads [obb1, obb2].
#[napi]
pub fn probiou_native(
    env: Env,
    obb1: NativeTensor,
    obb2: NativeTensor,
    ciou: bool,
    eps: f64,
    upstream_grad: Option<NativeTensor>,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    guarded_js("probiou", || {
        let eps = finite("eps", eps)? as f32;
        pairwise_grad::<5>(
            &env,
            "obb1",
            &obb1,
            "obb2",
            &obb2,
            "cx, cy, w, h, angle",
            upstream_grad.as_ref(),
            want_grad,
            |a, b, up| {
                if ciou {
                    probiou_ciou_grad(a, b, eps, up, None)
                } else {
                    probiou_grad(a, b, eps, up)
                }
            },
        )
    })
}

/// `dist2rbox(pred_dist [..., A, 4], pred_angle [..., A, 1], anchor_points [A, 2])` → `[..., A, 4]` (cx, cy,
/// w, h); grads [pred_dist, pred_angle].
#[napi(js_name = "dist2rboxNative")]
pub fn dist2rbox_native(
    env: Env,
    pred_dist: NativeTensor,
    pred_angle: NativeTensor,
    anchor_points: NativeTensor,
    upstream_grad: Option<NativeTensor>,
    want_grad: bool,
) -> napi::Result<NativeValueGrads, Code> {
    guarded_js("dist2rbox", || {
        let args = [arg("pred_dist", &pred_dist), arg("pred_angle", &pred_angle), arg("anchor_points", &anchor_points)];
        with_views(&args, |v| {
            let up = upstream_if(want_grad, upstream_grad.as_ref(), v[0].shape)?;
            let out = dist2rbox_batch(v[0], v[1], v[2], up.as_deref())?;
            value_grads(&env, out.boxes, &out.shape, want_grad, vec![out.grad_pred_dist, out.grad_pred_angle])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_loss_core::ErrorCode;

    #[test]
    fn broadcasting_rows() {
        // [2, 1, 4] against [3, 4]: result [2, 3].
        let (lead, r1, r2) = broadcast_rows("a", &[2, 1, 4], "b", &[3, 4]).unwrap();
        assert_eq!(lead, vec![2, 3]);
        assert_eq!(r1, vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(r2, vec![0, 1, 2, 0, 1, 2]);
        // Equal shapes: row by row.
        let (lead, r1, r2) = broadcast_rows("a", &[3, 4], "b", &[3, 4]).unwrap();
        assert_eq!((lead, r1.clone()), (vec![3], vec![0, 1, 2]));
        assert_eq!(r1, r2);
        // A single record against many.
        let (lead, r1, r2) = broadcast_rows("a", &[4], "b", &[2, 2, 4]).unwrap();
        assert_eq!(lead, vec![2, 2]);
        assert_eq!(r1, vec![0; 4]);
        assert_eq!(r2, vec![0, 1, 2, 3]);
        let e = broadcast_rows("a", &[2, 4], "b", &[3, 4]).unwrap_err();
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
        assert!(e.message.starts_with("b: expected"), "{}", e.message);
        let e = broadcast_rows("a", &[1 << 20, 1, 4], "b", &[1 << 20, 4]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn masks_are_zero_or_one() {
        let d = [0.0f32, 1.0, 0.5];
        let s = [3usize];
        let e = bool_mask("fg_mask", &TensorRef::new(&d, &s)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        let d = [0.0f32, f32::NAN];
        let s = [2usize];
        let e = bool_mask("fg_mask", &TensorRef::new(&d, &s)).unwrap_err();
        assert_eq!(e.code, ErrorCode::NonFinite);
    }
}
