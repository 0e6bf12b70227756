//! The loss terms the detection-family losses share, per image and with their gradients: the class BCE over every
//! logit, the CIoU and DFL box terms at the positives; the per-image gradient slices and the sums they return.

use rayon::prelude::*;

use crate::assigner::Positive;
use crate::dfl::{dfl_side_grad_acc, dfl_side_loss_lse, softmax_expectation_grad_acc, DflTarget};
use crate::family::head::Head;
use crate::family::image_preds::ImagePreds;
use crate::geometry::{bbox2dist, dist2bbox};
use crate::iou::{bbox_iou_grad_alpha, IouKind, IOU_EPS};
use crate::labels::GtTable;
use crate::loss::GradBufs;
use crate::real::Real;

/// Sums of one image's loss terms (before division by S and gains).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TermSums {
    pub bce: f64,
    pub iou: f64,
    pub dfl: f64,
}

impl std::ops::Add for TermSums {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self { bce: self.bce + o.bce, iou: self.iou + o.iou, dfl: self.dfl + o.dfl }
    }
}

/// Per-image sums of N loss terms, added across images.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sums<const N: usize>(pub [f64; N]);

impl<const N: usize> Default for Sums<N> {
    fn default() -> Self {
        Sums([0.0; N])
    }
}

impl<const N: usize> std::ops::Add for Sums<N> {
    type Output = Self;
    fn add(mut self, o: Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
        self
    }
}

/// Gradient scale factors: ∂(sum of the returned loss)/∂(each raw sum).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GradScales<'f, F> {
    pub cls: F,
    pub iou: F,
    pub dfl: F,
    /// Tests only: CIoU's α per image and positive, frozen so finite differences see what autograd sees.
    pub frozen_alpha: Option<&'f [Vec<F>]>,
}

impl<'f, F: Real> GradScales<'f, F> {
    /// ∂(B · gain · sum / S)/∂sum for the (box, cls, dfl) gains.
    pub fn new(batch: usize, gains: [f64; 3], s: F) -> Self {
        let bsz = F::from_usize_(batch);
        GradScales {
            iou: bsz * F::c(gains[0]) / s,
            cls: bsz * F::c(gains[1]) / s,
            dfl: bsz * F::c(gains[2]) / s,
            frozen_alpha: None,
        }
    }
}

/// The first return value of the task losses: the items times the batch size.
pub(crate) fn times_batch<F: Real>(items: &[F], batch: usize) -> Vec<F> {
    let b = F::from_usize_(batch);
    items.iter().map(|&v| v * b).collect()
}

/// Hands each image its own slices of every level's gradient and runs `f` in parallel; sums the terms.
pub(crate) fn per_image_grads<F: Real, R, T>(grads: GradBufs<F>, batch: usize, f: T) -> R
where
    R: Send + Default + std::ops::Add<Output = R>,
    T: Fn(usize, &mut [&mut [F]]) -> R + Sync,
{
    let mut per_image: Vec<Vec<&mut [F]>> = (0..batch).map(|_| Vec::with_capacity(grads.len())).collect();
    for g in grads.iter_mut() {
        let chunk = g.len() / batch.max(1);
        for (b, c) in g.chunks_mut(chunk.max(1)).enumerate().take(batch) {
            per_image[b].push(c);
        }
    }
    per_image.into_par_iter().enumerate().map(|(b, mut g)| f(b, &mut g)).reduce(R::default, |a, b| a + b)
}

/// Σ_{a,c} BCE(x, t) of image `b` over the loss's class channels; the gradient (σ(x) − t)·scale.
/// The dense part uses t = 0 everywhere; positives then get BCE(x, t) = BCE(x, 0) − x·t and −t·scale.
pub(crate) fn class_terms<F: Real, const W: usize>(
    head: &Head<F>,
    gt: &GtTable<F, W>,
    b: usize,
    positives: &[Positive<F>],
    scale: F,
    grads: &mut [&mut [F]],
) -> f64 {
    let (c0, nc) = (head.cls_ch0, head.nc);
    let mut total = 0.0f64;
    for l in 0..head.grid.levels.len() {
        let hw = head.grid.levels[l].len();
        let x = &head.image_level(b, l)[c0 * hw..(c0 + nc) * hw];
        // On every thread (same sum): when the batch has fewer images than threads, this pass would leave some idle.
        total += F::bce_zero_par(x, grads.get_mut(l).map(|g| &mut g[c0 * hw..(c0 + nc) * hw]), scale);
    }
    for p in positives {
        let pos = head.grid.locate(p.anchor);
        let hw = head.grid.levels[pos.level].len();
        let ch = c0 + gt.cls[b * gt.max_labels + p.gt].to_usize().unwrap_or(0);
        let x = head.image_level(b, pos.level)[ch * hw + pos.cell];
        total -= (x * p.score).f64();
        if let Some(g) = grads.get_mut(pos.level) {
            g[ch * hw + pos.cell] -= p.score * scale;
        }
    }
    total
}

/// Σ (1 − CIoU)·w and Σ DFL·w over image `b`'s positives (grid units: the target box divided by the
/// anchor's stride), with their gradients into the box channels.
pub(crate) fn box_terms<F: Real>(
    head: &Head<F>,
    gt: &GtTable<F>,
    b: usize,
    positives: &[Positive<F>],
    sc: &GradScales<F>,
    grads: &mut [&mut [F]],
) -> (f64, f64) {
    let mut preds = ImagePreds::new(head, b, false);
    let r = head.reg_max;
    let (mut iou_sum, mut dfl_sum) = (0.0f64, 0.0f64);
    let mut gz = vec![F::zero(); r];
    for (pi, p) in positives.iter().enumerate() {
        let pos = head.grid.locate(p.anchor);
        let hw = head.grid.levels[pos.level].len();
        let w = p.score;
        let stride = F::c(head.grid.levels[pos.level].stride);
        let tb = gt.boxes[b * gt.max_labels + p.gt];
        let target = [tb[0] / stride, tb[1] / stride, tb[2] / stride, tb[3] / stride];
        let anchor = head.grid.point::<F>(pos);
        let dist = preds.run_distances(pos, positives[pi..].iter().map(|q| q.anchor));
        let pred = dist2bbox(dist, anchor, false);
        let alpha = sc.frozen_alpha.map(|fa| fa[b][pi]);
        let (iou, gb, _) = bbox_iou_grad_alpha(pred, target, false, IouKind::CIoU, F::c(IOU_EPS), -sc.iou * w, alpha);
        iou_sum += ((F::one() - iou) * w).f64();
        // x1 = ax − l, y1 = ay − t, x2 = ax + r, y2 = ay + b.
        let g_dist = [-gb[0], -gb[1], gb[2], gb[3]];
        // Each box-channel element belongs to one positive (one per anchor), so it is stored once into the zero-filled
        // buffer as `0 + v` (the bits of `+=`, −0 included) rather than read first: a fresh gradient page whose first
        // touch is a read maps the shared zero page, and the write that follows costs a second fault and a TLB
        // shootdown of the other threads (about a third of det8's fresh-page cost).
        if r == 1 {
            if let Some(g) = grads.get_mut(pos.level) {
                for (s, gd) in g_dist.iter().enumerate() {
                    g[s * hw + pos.cell] = F::zero() + *gd;
                }
            }
            continue;
        }
        let ltrb = bbox2dist(anchor, target, (r - 1) as f64);
        let mut dfl = F::zero();
        for s in 0..4 {
            let t = DflTarget::new(ltrb[s], r);
            let (z, lse) = preds.side_logits(s);
            dfl += dfl_side_loss_lse(z, lse, &t);
            if let Some(g) = grads.get_mut(pos.level) {
                gz.iter_mut().for_each(|v| *v = F::zero());
                let probs = preds.side_probs(s);
                dfl_side_grad_acc(probs, &t, sc.dfl * w / F::c(4.0), &mut gz);
                softmax_expectation_grad_acc(probs, dist[s], g_dist[s], &mut gz);
                for (k, v) in gz.iter().enumerate() {
                    g[(s * r + k) * hw + pos.cell] = F::zero() + *v;
                }
            }
        }
        dfl_sum += (dfl / F::c(4.0) * w).f64();
    }
    (iou_sum, dfl_sum)
}
