//! v8SegmentationLoss (docs/spec.md §10): the detection terms plus the mask term, computed per positive over
//! its crop box only (exact: the crop zeroes everything outside it), so nothing of size
//! (positives × H_m × W_m) is ever allocated.

use crate::detection::{DetBatch, DetectionConfig, V8DetectionLoss};
use crate::error::{LossError, Result};
use crate::family::assigned::Assigned;
use crate::family::head::{check_preds_finite, preds_error_first, Head};
use crate::family::terms::{box_terms, class_terms, per_image_grads, times_batch, GradScales, Sums};
use crate::loss::{GradBufs, LossValues, Predictions, TaskLoss};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

/// The segmentation batch: detection labels plus `masks` — `[B, H', W']` index maps when
/// `overlap_mask` (value j ≥ 1 = the image's j-th label, 0 = background), else `[N, H', W']` 0/1 maps.
#[derive(Debug, Clone, Copy)]
pub struct SegBatch<'a, F> {
    pub det: DetBatch<'a, F>,
    pub masks: TensorRef<'a, F>,
}

#[derive(Debug, Clone)]
pub struct V8SegmentationLoss {
    pub cfg: DetectionConfig,
}

/// Prototype and coefficient tensors, validated.
struct MaskHead<'a, F> {
    nm: usize,
    mh: usize,
    mw: usize,
    pred_masks: &'a [F],
    proto: &'a [F],
}

/// GT masks resampled (lazily, by index maps) to the prototype size.
struct GtMasks<'a, F> {
    data: &'a [F],
    h: usize,
    w: usize,
    /// Source row of each prototype row, source column of each prototype column (nearest, PyTorch legacy).
    rows: Vec<usize>,
    cols: Vec<usize>,
    overlap: bool,
    /// Non-overlap mode: mask row of the first label of each image, then consecutive rows in batch order.
    rows_of_image: Vec<Vec<usize>>,
}

impl<'a, F: Real> GtMasks<'a, F> {
    #[inline]
    fn value(&self, b: usize, slot: usize, r: usize, c: usize) -> F {
        let (sr, sc) = (self.rows[r], self.cols[c]);
        if self.overlap {
            let v = self.data[(b * self.h + sr) * self.w + sc];
            if v == F::from_usize_(slot + 1) {
                F::one()
            } else {
                F::zero()
            }
        } else {
            let m = self.rows_of_image[b][slot];
            self.data[(m * self.h + sr) * self.w + sc]
        }
    }
}

/// `F.interpolate(mode="nearest")` source indices: ⌊dst · (in/out)⌋ in f32, capped at in − 1.
fn nearest_map(input: usize, output: usize) -> Vec<usize> {
    if input == output {
        return (0..output).collect();
    }
    let scale = input as f32 / output as f32;
    (0..output).map(|d| ((d as f32 * scale).floor() as usize).min(input - 1)).collect()
}

impl V8SegmentationLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        V8DetectionLoss::new(cfg.clone())?;
        Ok(Self { cfg })
    }

    /// The shared body. `cls_ch0`/`nc` select the class channels the loss uses (TVP strips text
    /// prompts); `only_cls` makes the gradient that of the cls component alone (TVPSegmentLoss).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_window<F: Real>(
        &self,
        feats: &[TensorRef<F>],
        pred_masks: TensorRef<F>,
        proto: TensorRef<F>,
        batch: &SegBatch<F>,
        grads: GradBufs<F>,
        cls_ch0: usize,
        nc: usize,
        only_cls: bool,
    ) -> Result<LossValues<F>> {
        let cfg = &self.cfg;
        let channels = feats.first().and_then(|f| f.shape.get(1).copied()).unwrap_or(0).max(cls_ch0 + nc);
        // The level tensors' finiteness checked by parts as in `V8DetectionLoss::run_window` (class window in the class
        // pass, other channels in the assignment), errors in the order of the validation in one go.
        let head = Head::validate_shapes(feats, &cfg.strides, cfg.reg_max, channels, cls_ch0, nc)?;
        let mh = validate_mask_head(&head, pred_masks, proto).map_err(|e| preds_error_first(feats, e))?;
        let (asg, finite) =
            Assigned::new_checking(head, &batch.det, cfg.tal_topk, true).map_err(|e| preds_error_first(feats, e))?;
        if !finite {
            check_preds_finite(feats)?;
        }
        let gtm = validate_gt_masks(asg.head.batch, &asg.labels.image, batch.masks, cfg.hyp.overlap_mask, mh.mh, mh.mw)
            .map_err(|e| preds_error_first(feats, e))?;
        let head = &asg.head;
        let gains = [cfg.hyp.box_gain, cfg.hyp.cls, cfg.hyp.dfl];
        let mut scales = GradScales::new(head.batch, gains, asg.s);
        let p = asg.num_positives();
        let bsz = F::from_usize_(head.batch);
        // ∂J/∂(mask sum) = B·g_box / P (the sum is over positives of mean-over-map / area).
        let mut mask_scale = if p > 0 { bsz * F::c(cfg.hyp.box_gain) / F::from_usize_(p) } else { F::zero() };
        if only_cls {
            scales.iou = F::zero();
            scales.dfl = F::zero();
            mask_scale = F::zero();
        }
        let levels = head.levels.len();
        let sums = per_image_grads(grads, head.batch, |b, g| {
            let bce = class_terms(head, &asg.gt, b, &asg.positives[b], scales.cls, g);
            let (iou, dfl) = box_terms(head, &asg.gt, b, &asg.positives[b], &scales, g);
            let mask = image_mask_term(&asg, &mh, &gtm, b, mask_scale, g, levels);
            Sums([iou, mask, bce, dfl])
        })
        .0;
        if !sums[2].is_finite() {
            check_preds_finite(feats)?;
        }
        let mut items = asg.items(&[sums[0], 0.0, sums[2], sums[3]], &[gains[0], 0.0, gains[1], gains[2]]);
        if p > 0 {
            items[1] = F::c(sums[1]) / F::from_usize_(p) * F::c(cfg.hyp.box_gain);
        }
        Ok((times_batch(&items, head.batch), items))
    }
}

/// The prediction tensors of a segmentation loss, in the order of their gradients: the level tensors, `pred_masks`
/// `[B, nm, A]` (the mask coefficients), `proto` `[B, nm, Hm, Wm]`.
#[derive(Debug, Clone, Copy)]
pub struct SegPreds<'a, F> {
    pub feats: &'a [TensorRef<'a, F>],
    pub pred_masks: TensorRef<'a, F>,
    pub proto: TensorRef<'a, F>,
}

impl<'a, F> Predictions<'a, F> for SegPreds<'a, F> {
    fn tensors(&self) -> Vec<&'a [F]> {
        self.feats.iter().chain([&self.pred_masks, &self.proto]).map(|t| t.data).collect()
    }
}

/// Loss `[box, seg, cls, dfl]·B`, items, and gradients: one per level, then `pred_masks`, then `proto`.
impl<F: Real> TaskLoss<F> for V8SegmentationLoss {
    type Preds<'a> = SegPreds<'a, F>;
    type Batch<'a> = SegBatch<'a, F>;

    fn run(&self, preds: SegPreds<F>, batch: &SegBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        self.run_window(
            preds.feats,
            preds.pred_masks,
            preds.proto,
            batch,
            grads,
            4 * self.cfg.reg_max,
            self.cfg.nc,
            false,
        )
    }
}

/// The mask inputs as another backend needs them, checked exactly as the CPU backend checks them (same order,
/// codes and messages): `(nm, Hm, Wm)` of `proto` (after checking it and `pred_masks` against `head`, finiteness
/// included).
pub fn check_mask_head<F: Real>(
    head: &Head<F>,
    pred_masks: TensorRef<F>,
    proto: TensorRef<F>,
) -> Result<(usize, usize, usize)> {
    let m = validate_mask_head(head, pred_masks, proto)?;
    Ok((m.nm, m.mh, m.mw))
}

/// How the GT masks are read at the prototype size, for another backend: the nearest source row of each prototype
/// row and source column of each prototype column, and per label (in batch order) the mask it reads: its row of
/// `masks` when not `overlap`, else its image's index map, where it is the value (its index in the image) + 1.
#[derive(Debug, Clone, PartialEq)]
pub struct GtMaskIndex {
    pub rows: Vec<usize>,
    pub cols: Vec<usize>,
    /// Per image, the label rows of its labels in order (the GT slots of the image).
    pub rows_of_image: Vec<Vec<usize>>,
}

/// `batch.masks` checked as the CPU backend checks it (`label_image`: each label's image, in batch order).
pub fn check_gt_masks<F: Real>(
    batch: usize,
    label_image: &[usize],
    masks: TensorRef<F>,
    overlap: bool,
    mh: usize,
    mw: usize,
) -> Result<GtMaskIndex> {
    let g = validate_gt_masks(batch, label_image, masks, overlap, mh, mw)?;
    Ok(GtMaskIndex { rows: g.rows, cols: g.cols, rows_of_image: g.rows_of_image })
}

fn validate_mask_head<'a, F: Real>(
    head: &Head<F>,
    pred_masks: TensorRef<'a, F>,
    proto: TensorRef<'a, F>,
) -> Result<MaskHead<'a, F>> {
    proto.check_rank("proto", 4, "[B, nm, Hm, Wm]")?;
    let (b, nm, mh, mw) = (proto.shape[0], proto.shape[1], proto.shape[2], proto.shape[3]);
    if b != head.batch || nm == 0 || mh == 0 || mw == 0 {
        return Err(LossError::shape(format!(
            "proto: expected shape [{}, nm, Hm, Wm] with nm, Hm, Wm ≥ 1, got {}",
            head.batch,
            fmt_shape(proto.shape)
        )));
    }
    pred_masks.check_rank("pred_masks", 3, "[B, nm, A]")?;
    let a = head.grid.num_anchors;
    if pred_masks.shape != [head.batch, nm, a] {
        return Err(LossError::shape(format!(
            "pred_masks: expected shape [{}, {nm}, {a}] (batch, proto's nm, anchors of all levels), got {}",
            head.batch,
            fmt_shape(pred_masks.shape)
        )));
    }
    pred_masks.check_finite("pred_masks")?;
    proto.check_finite("proto")?;
    Ok(MaskHead { nm, mh, mw, pred_masks: pred_masks.data, proto: proto.data })
}

fn validate_gt_masks<'a, F: Real>(
    bsz: usize,
    label_image: &[usize],
    masks: TensorRef<'a, F>,
    overlap: bool,
    mh: usize,
    mw: usize,
) -> Result<GtMasks<'a, F>> {
    let n = label_image.len();
    let lead = if overlap { bsz } else { n };
    masks.check_rank(
        "batch.masks",
        3,
        if overlap { "[B, H, W] index maps (overlap_mask)" } else { "[N, H, W] one mask per label" },
    )?;
    if masks.shape[0] != lead || masks.shape[1] == 0 || masks.shape[2] == 0 {
        return Err(LossError::shape(format!(
            "batch.masks: expected shape [{lead}, H, W] ({}), got {}",
            if overlap {
                "one index map per image, overlap_mask = true"
            } else {
                "one mask per label, overlap_mask = false"
            },
            fmt_shape(masks.shape)
        )));
    }
    masks.check_finite("batch.masks")?;
    let (h, w) = (masks.shape[1], masks.shape[2]);
    let mut counts = vec![0usize; bsz];
    let mut rows_of_image = vec![Vec::new(); bsz];
    for (k, &i) in label_image.iter().enumerate() {
        counts[i] += 1;
        rows_of_image[i].push(k);
    }
    if overlap {
        for (i, plane) in masks.data.chunks(h * w).enumerate() {
            if let Some(j) =
                plane.iter().position(|v| *v < F::zero() || v.fract() != F::zero() || *v > F::from_usize_(counts[i]))
            {
                return Err(LossError::label(format!(
                    "batch.masks[{i}]: expected label indices in 0..={} (image {i} has {} labels), got {} at pixel {}",
                    counts[i], counts[i], plane[j], j
                )));
            }
        }
    } else if let Some(j) = masks.data.iter().position(|v| *v < F::zero() || *v > F::one()) {
        return Err(LossError::label(format!(
            "batch.masks: expected values in [0, 1], got {} at flat index {j}",
            masks.data[j]
        )));
    }
    Ok(GtMasks { data: masks.data, h, w, rows: nearest_map(h, mh), cols: nearest_map(w, mw), overlap, rows_of_image })
}

/// Σ over image `b`'s positives of mean-over-map(crop · BCE(coef·proto, gt)) / area, and its gradient
/// into the coefficient and prototype slices (`grads[levels]`, `grads[levels + 1]`) times `scale`.
fn image_mask_term<F: Real>(
    asg: &Assigned<F>,
    mh: &MaskHead<F>,
    gtm: &GtMasks<F>,
    b: usize,
    scale: F,
    grads: &mut [&mut [F]],
    levels: usize,
) -> f64 {
    let positives = &asg.positives[b];
    if positives.is_empty() {
        return 0.0;
    }
    let (nm, hh, ww) = (mh.nm, mh.mh, mh.mw);
    let a_total = asg.head.grid.num_anchors;
    let coef_all = &mh.pred_masks[b * nm * a_total..(b + 1) * nm * a_total];
    let proto = &mh.proto[b * nm * hh * ww..(b + 1) * nm * hh * ww];
    let (img_h, img_w) = asg.head.image_size();
    // Gradient slices of this image: coefficients [nm, A] and prototypes [nm, Hm, Wm].
    let (mut g_coef, mut g_proto) = match grads.len() > levels {
        true => {
            let (lo, hi) = grads.split_at_mut(levels + 1);
            (Some(&mut *lo[levels]), Some(&mut *hi[0]))
        }
        false => (None, None),
    };
    let mut total = 0.0f64;
    let mut coef = vec![F::zero(); nm];
    // Per coefficient, LANES partial sums of ∂/∂coef over the crop (see `Lanes`).
    let mut gcoef = vec![[F::zero(); LANES]; nm];
    let (mut m, mut g, mut t) = (vec![F::zero(); ww], vec![F::zero(); ww], vec![F::zero(); ww]);
    let (mwf, mhf) = (F::from_usize_(ww), F::from_usize_(hh));
    let map_area = F::from_usize_(hh * ww);
    for p in positives {
        let tb = asg.gt.boxes[b * asg.gt.max_labels + p.gt];
        let tbn = [tb[0] / img_w, tb[1] / img_h, tb[2] / img_w, tb[3] / img_h];
        let area = (tbn[2] - tbn[0]) * (tbn[3] - tbn[1]);
        let mb = [tbn[0] * mwf, tbn[1] * mhf, tbn[2] * mwf, tbn[3] * mhf];
        let (c0, c1) = crop_range(mb[0], mb[2], ww);
        let (r0, r1) = crop_range(mb[1], mb[3], hh);
        for (j, cj) in coef.iter_mut().enumerate() {
            *cj = coef_all[j * a_total + p.anchor];
        }
        gcoef.iter_mut().for_each(|v| *v = [F::zero(); LANES]);
        let up = scale / (map_area * area);
        let mut sum = 0.0f64;
        for r in r0..r1 {
            let (m, g, t) = (&mut m[c0..c1], &mut g[c0..c1], &mut t[c0..c1]);
            m.iter_mut().for_each(|v| *v = F::zero());
            for (j, &cj) in coef.iter().enumerate() {
                let row = &proto[(j * hh + r) * ww + c0..(j * hh + r) * ww + c1];
                for (mv, &pv) in m.iter_mut().zip(row) {
                    *mv += cj * pv;
                }
            }
            for (k, tv) in t.iter_mut().enumerate() {
                *tv = gtm.value(b, p.gt, r, c0 + k);
            }
            sum += bce_row(m, t, up, g).f64();
            if let Some(gp_all) = g_proto.as_deref_mut() {
                for (j, &cj) in coef.iter().enumerate() {
                    let base = (j * hh + r) * ww + c0;
                    dot_axpy_row(
                        g,
                        &proto[base..base + (c1 - c0)],
                        cj,
                        &mut gp_all[base..base + (c1 - c0)],
                        &mut gcoef[j],
                    );
                }
            }
        }
        total += sum / map_area.f64() / area.f64();
        if let Some(gc_all) = g_coef.as_deref_mut() {
            // One positive per anchor: stored as `0 + v` (the bits of `+=`) without reading the fresh page first.
            for (j, dot) in gcoef.iter().enumerate() {
                gc_all[j * a_total + p.anchor] = F::zero() + lane_total(dot);
            }
        }
    }
    total
}

/// Partial sums per reduction of the mask term. A single running sum over a crop row is a chain of additions, each
/// waiting for the last (a third of a segmentation call went to the coefficient gradients' dot products); element i
/// of a row goes to partial sum i mod LANES instead, the partial sums are independent (the compiler keeps them in
/// vector registers) and are added in a fixed order at the end: the same numbers on every machine.
const LANES: usize = 16;

/// Σ_i BCE(m_i, t_i) over a crop row (element i into partial sum i mod LANES), and g_i = (σ(m_i) − t_i)·up.
#[inline(always)]
fn bce_row<F: Real>(m: &[F], t: &[F], up: F, g: &mut [F]) -> F {
    let n = m.len();
    let (m, t, g) = (&m[..n], &t[..n], &mut g[..n]);
    let mut acc = [F::zero(); LANES];
    let step = |acc: &mut [F], m: &[F], t: &[F], g: &mut [F]| {
        for k in 0..m.len() {
            let (bce0, sig) = m[k].bce_sigmoid();
            acc[k] += bce0 - m[k] * t[k];
            g[k] = (sig - t[k]) * up;
        }
    };
    let (mc, tc, mut gc) = (m.chunks_exact(LANES), t.chunks_exact(LANES), g.chunks_exact_mut(LANES));
    let (mr, tr) = (mc.remainder(), tc.remainder());
    for ((mb, tb), gb) in mc.zip(tc).zip(&mut gc) {
        step(&mut acc[..], mb, tb, gb);
    }
    step(&mut acc[..mr.len()], mr, tr, gc.into_remainder());
    lane_total(&acc)
}

/// Over a crop row: dot[i mod LANES] += g_i·p_i (the coefficient's gradient) and gp_i += g_i·c (the prototype's).
#[inline(always)]
fn dot_axpy_row<F: Real>(g: &[F], p: &[F], c: F, gp: &mut [F], dot: &mut [F; LANES]) {
    let n = g.len();
    let (g, p, gp) = (&g[..n], &p[..n], &mut gp[..n]);
    let step = |dot: &mut [F], g: &[F], p: &[F], gp: &mut [F]| {
        for k in 0..g.len() {
            dot[k] += g[k] * p[k];
            gp[k] += g[k] * c;
        }
    };
    let (gc, pc, mut gpc) = (g.chunks_exact(LANES), p.chunks_exact(LANES), gp.chunks_exact_mut(LANES));
    let (gr, pr) = (gc.remainder(), pc.remainder());
    for ((gb, pb), gpb) in gc.zip(pc).zip(&mut gpc) {
        step(&mut dot[..], gb, pb, gpb);
    }
    step(&mut dot[..gr.len()], gr, pr, gpc.into_remainder());
}

/// The sum of LANES partial sums, as a balanced tree (a fixed order).
#[inline(always)]
fn lane_total<F: Real>(lanes: &[F; LANES]) -> F {
    let mut v = *lanes;
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for k in 0..width {
            v[k] += v[k + width];
        }
    }
    v[0]
}

/// Integer indices i in [0, n) with lo ≤ i < hi (crop_mask's selector along one axis).
fn crop_range<F: Real>(lo: F, hi: F, n: usize) -> (usize, usize) {
    let first = (0..n).find(|&i| F::from_usize_(i) >= lo).unwrap_or(n);
    let end = (first..n).find(|&i| F::from_usize_(i) >= hi).unwrap_or(n);
    (first, end.max(first))
}
