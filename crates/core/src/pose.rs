//! v8PoseLoss (docs/spec.md §11) and the KeypointLoss block (§8.6). The keypoint terms are evaluated in f64:
//! the reference does so for the 17 COCO keypoints (float64 OKS sigmas, docs/spec.md §D1), and for
//! other shapes f64 differs from its f32 only far below the parity tolerance.

use crate::detection::{DetBatch, DetectionConfig, V8DetectionLoss};
use crate::error::{LossError, Result};
use crate::family::assigned::Assigned;
use crate::family::head::{check_preds_finite, preds_error_first, Head};
use crate::family::terms::{box_terms, class_terms, per_image_grads, times_batch, GradScales, Sums};
use crate::loss::{GradBufs, LossValues, Predictions, TaskLoss};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

/// OKS sigmas of the 17 COCO keypoints (metrics.py), float64, computed as the reference does (the
/// tenths divided by 10, which is not always the nearest double to the decimal literal).
pub const OKS_SIGMA: [f64; 17] = [
    0.26 / 10.0,
    0.25 / 10.0,
    0.25 / 10.0,
    0.35 / 10.0,
    0.35 / 10.0,
    0.79 / 10.0,
    0.79 / 10.0,
    0.72 / 10.0,
    0.72 / 10.0,
    0.62 / 10.0,
    0.62 / 10.0,
    1.07 / 10.0,
    1.07 / 10.0,
    0.87 / 10.0,
    0.87 / 10.0,
    0.89 / 10.0,
    0.89 / 10.0,
];

#[derive(Debug, Clone, PartialEq)]
pub struct PoseConfig {
    pub det: DetectionConfig,
    /// (K, D): keypoints per instance, values per keypoint (2: x, y; 3: x, y, visibility).
    pub kpt_shape: (usize, usize),
    /// The reference uses the COCO OKS sigmas only when `kpt_shape == [17, 3]` compares equal to a
    /// *list*; a tuple (17, 3) gets uniform sigmas. `None` picks OKS exactly for (17, 3).
    pub oks_sigmas: Option<bool>,
}

impl PoseConfig {
    /// The per-keypoint sigmas the reference's KeypointLoss holds.
    pub fn sigmas(&self) -> Vec<f64> {
        let (k, d) = self.kpt_shape;
        if self.oks_sigmas.unwrap_or(k == 17 && d == 3) && k == 17 && d == 3 {
            OKS_SIGMA.to_vec()
        } else {
            // torch.ones(K) / K in float32.
            vec![(1.0f32 / k as f32) as f64; k]
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PoseBatch<'a, F> {
    pub det: DetBatch<'a, F>,
    /// `[N, K, D]` normalized x, y (and visibility).
    pub keypoints: TensorRef<'a, F>,
}

#[derive(Debug, Clone)]
pub struct V8PoseLoss {
    pub cfg: PoseConfig,
    sigmas: Vec<f64>,
}

impl V8PoseLoss {
    pub fn new(cfg: PoseConfig) -> Result<Self> {
        V8DetectionLoss::new(cfg.det.clone())?;
        let (k, d) = cfg.kpt_shape;
        if k == 0 || !(d == 2 || d == 3) {
            return Err(LossError::invalid(format!(
                "model.kpt_shape: expected [K, D] with K ≥ 1 and D = 2 or 3, got [{k}, {d}]"
            )));
        }
        for (name, v) in [("pose", cfg.det.hyp.pose), ("kobj", cfg.det.hyp.kobj)] {
            if !v.is_finite() {
                return Err(LossError::non_finite(format!("model.args.{name}: expected a finite gain, got {v}")));
            }
        }
        let sigmas = cfg.sigmas();
        Ok(Self { cfg, sigmas })
    }
}

/// The prediction tensors of the pose loss, in the order of their gradients: the level tensors, then `kpts`
/// `[B, K·D, A]`.
#[derive(Debug, Clone, Copy)]
pub struct PosePreds<'a, F> {
    pub feats: &'a [TensorRef<'a, F>],
    pub kpts: TensorRef<'a, F>,
}

impl<'a, F> Predictions<'a, F> for PosePreds<'a, F> {
    fn tensors(&self) -> Vec<&'a [F]> {
        self.feats.iter().chain([&self.kpts]).map(|t| t.data).collect()
    }
}

/// Loss `[box, pose, kobj, cls, dfl]·B`, items, and gradients: one per level, then `kpts`.
impl<F: Real> TaskLoss<F> for V8PoseLoss {
    type Preds<'a> = PosePreds<'a, F>;
    type Batch<'a> = PoseBatch<'a, F>;

    fn run(&self, preds: PosePreds<F>, batch: &PoseBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let PosePreds { feats, kpts } = preds;
        let det = &self.cfg.det;
        let (k, d) = self.cfg.kpt_shape;
        // The level tensors' finiteness checked by parts as in `V8DetectionLoss::run_window` (class window in the class
        // pass, other channels in the assignment), errors in the order of the validation in one go.
        let head =
            Head::validate_shapes(feats, &det.strides, det.reg_max, 4 * det.reg_max + det.nc, 4 * det.reg_max, det.nc)?;
        check_keypoints(self.cfg.kpt_shape, (head.batch, head.grid.num_anchors), kpts, batch)
            .map_err(|e| preds_error_first(feats, e))?;
        let (asg, finite) =
            Assigned::new_checking(head, &batch.det, det.tal_topk, true).map_err(|e| preds_error_first(feats, e))?;
        if !finite {
            check_preds_finite(feats)?;
        }
        let head = &asg.head;
        let gains = [det.hyp.box_gain, det.hyp.cls, det.hyp.dfl];
        let scales = GradScales::new(head.batch, gains, asg.s);
        let p = asg.num_positives();
        let pk = (p * k) as f64;
        let bsz = head.batch as f64;
        let kp_scales = if p > 0 { (bsz * det.hyp.pose / pk, bsz * det.hyp.kobj / pk) } else { (0.0, 0.0) };
        let mut rows_of_image = vec![Vec::new(); head.batch];
        for (row, &i) in asg.labels.image.iter().enumerate() {
            rows_of_image[i].push(row);
        }
        let levels = head.levels.len();
        let ctx = KptCtx {
            asg: &asg,
            kpts: kpts.data,
            gt: batch.keypoints.data,
            k,
            d,
            sigmas: &self.sigmas,
            rows_of_image: &rows_of_image,
            scales: kp_scales,
        };
        let sums = per_image_grads(grads, head.batch, |b, g| {
            let bce = class_terms(head, &asg.gt, b, &asg.positives[b], scales.cls, g);
            let (iou, dfl) = box_terms(head, &asg.gt, b, &asg.positives[b], &scales, g);
            let (pose, kobj) = ctx.image_terms(b, g.get_mut(levels).map(|s| &mut **s));
            Sums([iou, pose, kobj, bce, dfl])
        })
        .0;
        if !sums[3].is_finite() {
            check_preds_finite(feats)?;
        }
        let mut items = asg.items(&[sums[0], 0.0, 0.0, sums[3], sums[4]], &[gains[0], 0.0, 0.0, gains[1], gains[2]]);
        if p > 0 {
            items[1] = F::c(sums[1] / pk * det.hyp.pose);
            items[2] = F::c(sums[2] / pk * det.hyp.kobj);
        }
        Ok((times_batch(&items, head.batch), items))
    }
}

/// The keypoint inputs' checks of the loss, after the head's and before the labels', in its order and with its
/// messages: `kpts [B, K·D, A]` and `batch.keypoints [N, K, D]`, both finite. Shared with the CUDA backend.
pub fn check_keypoints<F: Real>(
    (k, d): (usize, usize),
    (b, a): (usize, usize),
    kpts: TensorRef<F>,
    batch: &PoseBatch<F>,
) -> Result<()> {
    kpts.check_rank("kpts", 3, &format!("[B, K·D = {}, A]", k * d))?;
    if kpts.shape != [b, k * d, a] {
        return Err(LossError::shape(format!(
            "kpts: expected shape [{b}, {}, {a}] (K·D = {k}·{d} for kpt_shape [{k}, {d}]), got {}",
            k * d,
            fmt_shape(kpts.shape)
        )));
    }
    kpts.check_finite("kpts")?;
    let gt_kp = batch.keypoints;
    let n = batch.det.batch_idx.data.len();
    gt_kp.check_len("batch.keypoints")?;
    if gt_kp.shape != [n, k, d] {
        return Err(LossError::shape(format!(
            "batch.keypoints: expected shape [{n}, {k}, {d}] (one [K, D] set per label, kpt_shape [{k}, {d}]), got {}",
            fmt_shape(gt_kp.shape)
        )));
    }
    gt_kp.check_finite("batch.keypoints")
}

struct KptCtx<'c, 'a, F> {
    asg: &'c Assigned<'a, F>,
    kpts: &'a [F],
    gt: &'a [F],
    k: usize,
    d: usize,
    sigmas: &'c [f64],
    rows_of_image: &'c [Vec<usize>],
    /// ∂J/∂(Σ pose terms), ∂J/∂(Σ kobj terms): B·gain / (P·K).
    scales: (f64, f64),
}

impl<'c, 'a, F: Real> KptCtx<'c, 'a, F> {
    /// Σ over image `b`'s positives of the keypoint location and visibility terms (before / (P·K)).
    fn image_terms(&self, b: usize, grad: Option<&mut [F]>) -> (f64, f64) {
        let (k, d) = (self.k, self.d);
        let head = &self.asg.head;
        let a_total = head.grid.num_anchors;
        let kp = &self.kpts[b * k * d * a_total..(b + 1) * k * d * a_total];
        let mut grad = grad;
        let (img_h, img_w) = head.image_size();
        let (mut pose, mut kobj) = (0.0f64, 0.0f64);
        for p in &self.asg.positives[b] {
            let pos = head.grid.locate(p.anchor);
            let stride = F::c(head.grid.levels[pos.level].stride);
            let anchor = head.grid.point::<F>(pos);
            let tb = self.asg.gt.boxes[b * self.asg.gt.max_labels + p.gt];
            let tg = [tb[0] / stride, tb[1] / stride, tb[2] / stride, tb[3] / stride];
            let area = ((tg[2] - tg[0]) * (tg[3] - tg[1])).f64();
            let row = self.rows_of_image[b][p.gt];
            let g = &self.gt[row * k * d..(row + 1) * k * d];
            let vis = |kk: usize| d < 3 || g[kk * d + 2] != F::zero();
            let nvis = (0..k).filter(|&kk| vis(kk)).count();
            let factor = (k as f32 / (nvis as f32 + 1e-9)) as f64;
            for kk in 0..k {
                let v = if vis(kk) { 1.0 } else { 0.0 };
                let raw = |dd: usize| kp[(kk * d + dd) * a_total + p.anchor];
                // Decode: 2·p + (anchor − 0.5), in grid units.
                let x = (raw(0) * F::c(2.0) + (anchor[0] - F::c(0.5))).f64();
                let y = (raw(1) * F::c(2.0) + (anchor[1] - F::c(0.5))).f64();
                let gx = (g[kk * d] * img_w / stride).f64();
                let gy = (g[kk * d + 1] * img_h / stride).f64();
                let dist = (x - gx).powi(2) + (y - gy).powi(2);
                let den = (2.0 * self.sigmas[kk]).powi(2) * (area + 1e-9) * 2.0;
                let ex = (-(dist / den)).exp();
                pose += factor * (1.0 - ex) * v;
                // Each element belongs to one positive (one per anchor), so it is stored once into the zero-filled
                // buffer as `0 + v` (the bits of `+=`) rather than read first: a fresh page whose first touch is a
                // read maps the shared zero page, and the write that follows costs a second fault (see box_terms).
                if let Some(gr) = grad.as_deref_mut() {
                    // ∂/∂raw = 2·∂/∂X; ∂e/∂X = 2(X − gx)/den.
                    let c = self.scales.0 * factor * v * ex * 2.0 / den * 2.0;
                    gr[(kk * d) * a_total + p.anchor] = F::zero() + F::c(c * (x - gx));
                    gr[(kk * d + 1) * a_total + p.anchor] = F::zero() + F::c(c * (y - gy));
                }
                if d == 3 {
                    let z = raw(2).f64();
                    kobj += z.max(0.0) - z * v + (-z.abs()).exp().ln_1p();
                    if let Some(gr) = grad.as_deref_mut() {
                        let sig = 1.0 / (1.0 + (-z).exp());
                        gr[(kk * d + 2) * a_total + p.anchor] = F::zero() + F::c(self.scales.1 * (sig - v));
                    }
                }
            }
        }
        (pose, kobj)
    }
}

/// KeypointLoss.forward on dense inputs: `pred_kpts [P,K,D≥2]`, `gt_kpts [P,K,D≥2]`, `kpt_mask [P,K]`,
/// `area [P,1]`, `sigmas [K]`. Returns the loss and ∂loss/∂pred_kpts (zeros in channels ≥ 2).
pub fn keypoint_loss<F: Real>(
    pred: TensorRef<F>,
    gt: TensorRef<F>,
    mask: TensorRef<F>,
    area: TensorRef<F>,
    sigmas: &[f64],
) -> Result<(F, Vec<F>)> {
    pred.check_rank("pred_kpts", 3, "[P, K, D]")?;
    let (p, k, d) = (pred.shape[0], pred.shape[1], pred.shape[2]);
    if d < 2 {
        return Err(LossError::shape(format!(
            "pred_kpts: expected D ≥ 2 values per keypoint, got shape {}",
            fmt_shape(pred.shape)
        )));
    }
    gt.check_rank("gt_kpts", 3, "[P, K, D]")?;
    if gt.shape[0] != p || gt.shape[1] != k || gt.shape[2] < 2 {
        return Err(LossError::shape(format!(
            "gt_kpts: expected shape [{p}, {k}, D ≥ 2], got {}",
            fmt_shape(gt.shape)
        )));
    }
    mask.check_len("kpt_mask")?;
    if mask.shape != [p, k] {
        return Err(LossError::shape(format!("kpt_mask: expected shape [{p}, {k}], got {}", fmt_shape(mask.shape))));
    }
    area.check_len("area")?;
    if area.data.len() != p {
        return Err(LossError::shape(format!("area: expected shape [{p}, 1], got {}", fmt_shape(area.shape))));
    }
    if sigmas.len() != k {
        return Err(LossError::shape(format!("sigmas: expected {k} values (one per keypoint), got {}", sigmas.len())));
    }
    for (t, n) in [(&pred, "pred_kpts"), (&gt, "gt_kpts"), (&mask, "kpt_mask"), (&area, "area")] {
        t.check_finite(n)?;
    }
    let gd = gt.shape[2];
    let mut grad = vec![F::zero(); pred.data.len()];
    let mut total = 0.0f64;
    let n = (p * k) as f64;
    for i in 0..p {
        let nvis = (0..k).filter(|&j| mask.data[i * k + j] != F::zero()).count();
        let factor = (k as f32 / (nvis as f32 + 1e-9)) as f64;
        let ar = area.data[i].f64();
        for j in 0..k {
            let v = mask.data[i * k + j].f64();
            let (x, y) = (pred.data[(i * k + j) * d].f64(), pred.data[(i * k + j) * d + 1].f64());
            let (gx, gy) = (gt.data[(i * k + j) * gd].f64(), gt.data[(i * k + j) * gd + 1].f64());
            let den = (2.0 * sigmas[j]).powi(2) * (ar + 1e-9) * 2.0;
            let ex = (-(((x - gx).powi(2) + (y - gy).powi(2)) / den)).exp();
            total += factor * (1.0 - ex) * v;
            let c = factor * v * ex * 2.0 / den / n;
            grad[(i * k + j) * d] = F::c(c * (x - gx));
            grad[(i * k + j) * d + 1] = F::c(c * (y - gy));
        }
    }
    Ok((F::c(if p * k > 0 { total / n } else { f64::NAN }), grad))
}
