//! Task-aligned assignment (docs/spec.md §7), one image at a time, without any (labels × anchors) buffer.
//!
//! The reference materialises several (B, M, A) tensors. Here each GT is processed in turn: its
//! candidate anchors (centres inside the box) are enumerated into a scratch list, its top-k picks
//! are kept (at most k per GT), and the per-anchor "best overlap over all GTs containing me" used for
//! conflict resolution is folded into A-sized arrays. Memory is O(A + M·k) per image.
//!
//! Top-k ties follow docs/spec.md §D2: larger metric first, then lower anchor index. When a GT has
//! fewer than k anchors with a positive metric, the remaining picks are the lowest-index anchors with
//! a zero metric (inside the GT or not); those inside the GT become positives with score 0, exactly as
//! the reference does with its (implementation-defined) tie order.

use crate::real::Real;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AssignerConfig {
    pub topk: usize,
    pub num_classes: usize,
    pub alpha: f64,
    pub beta: f64,
    pub eps: f64,
}

impl AssignerConfig {
    /// The assigner every detection-family loss builds (alpha 0.5, beta 6, eps 1e-9).
    pub fn for_loss(topk: usize, num_classes: usize) -> Self {
        Self { topk, num_classes, alpha: 0.5, beta: 6.0, eps: 1e-9 }
    }
}

/// One GT slot of an image (padding included: `valid == false`). `B` is the box: `[F; 4]` pixel
/// xyxy for the axis-aligned assigner, `[F; 5]` pixel xywhr for the rotated one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtBox<B> {
    /// Class index (the float id truncated, as `.long()` does).
    pub label: usize,
    pub bbox: B,
    pub valid: bool,
}

/// What the assigner reads about one image's anchors and predictions.
pub trait AnchorSource<F: Real, B> {
    /// Calls `visit(a)` for every anchor whose centre is inside `b` by the assigner's rule.
    fn for_each_inside(&self, b: &B, visit: &mut dyn FnMut(usize));
    /// Predicted probability of class `cls` at anchor `a` (σ of the logit).
    fn score(&mut self, a: usize, cls: usize) -> F;
    /// Overlap of GT box `gt` with the prediction at anchor `a`, before the clamp at 0
    /// (CIoU for axis-aligned boxes, probIoU for rotated ones).
    fn overlap(&mut self, gt: &B, a: usize) -> F;
    /// `out[i] = overlap(gt, anchors[i])` for every i (`out` as long as `anchors`); a source may compute them as
    /// one batch, with the same numbers.
    fn overlaps(&mut self, gt: &B, anchors: &[usize], out: &mut [F]) {
        for (o, &a) in out.iter_mut().zip(anchors) {
            *o = self.overlap(gt, a);
        }
    }
    /// A hint that GT box `b` of class `cls` comes next: the source may start loading what `score` will
    /// read for it. Changes no result.
    fn prefetch(&mut self, _b: &B, _cls: usize) {}
}

/// A positive anchor after conflict resolution, with its soft target score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Positive<F> {
    pub anchor: usize,
    /// GT slot of the image (`target_gt_idx`).
    pub gt: usize,
    /// Normalised align metric: the value of `target_scores` at the GT's class.
    pub score: F,
}

/// Per-anchor bookkeeping, A-sized, reused across GTs of one image.
struct Claims<F> {
    count: Vec<u8>,
    gt: Vec<u32>,
    align: Vec<F>,
    overlap: Vec<F>,
    best_overlap: Vec<F>,
    best_align: Vec<F>,
    best_gt: Vec<u32>,
    touched: Vec<usize>,
}

/// Assigns one image. `gts` are the image's M slots in order. Returns the positives sorted by anchor.
pub fn assign_image<F: Real, B, S: AnchorSource<F, B>>(
    cfg: &AssignerConfig,
    num_anchors: usize,
    gts: &[GtBox<B>],
    src: &mut S,
) -> Vec<Positive<F>> {
    if gts.iter().all(|g| !g.valid) {
        return Vec::new();
    }
    let z = F::zero();
    let mut cl = Claims {
        count: vec![0u8; num_anchors],
        gt: vec![0u32; num_anchors],
        align: vec![z; num_anchors],
        overlap: vec![z; num_anchors],
        best_overlap: vec![z; num_anchors],
        best_align: vec![z; num_anchors],
        best_gt: vec![0u32; num_anchors],
        touched: Vec::new(),
    };
    let (alpha, beta) = (F::c(cfg.alpha), F::c(cfg.beta));
    // (anchor, align metric, overlap) of the current GT's candidates.
    let mut cands: Vec<(usize, F, F)> = Vec::new();
    let (mut anchors, mut overlaps): (Vec<usize>, Vec<F>) = (Vec::new(), Vec::new());
    // Each GT's scores come from its own class plane, with many GTs mostly from memory: the next GT's are
    // requested while this one is processed.
    let next_valid = |from: usize| gts[from..].iter().find(|g| g.valid);
    if let Some(first) = next_valid(0) {
        src.prefetch(&first.bbox, first.label);
    }
    for (g, gt) in gts.iter().enumerate() {
        if !gt.valid {
            continue;
        }
        if let Some(next) = next_valid(g + 1) {
            src.prefetch(&next.bbox, next.label);
        }
        anchors.clear();
        src.for_each_inside(&gt.bbox, &mut |a| anchors.push(a));
        // The scores first, in a loop of their own: with many GTs each reads its own class plane, mostly from
        // beyond the cache, and a tight loop of independent loads lets the CPU overlap those misses (inside the
        // overlap loop below they waited one by one). Then the overlaps as one batch. Scores and overlaps are
        // independent: same numbers.
        cands.clear();
        cands.extend(anchors.iter().map(|&a| (a, src.score(a, gt.label), z)));
        overlaps.resize(anchors.len(), z);
        src.overlaps(&gt.bbox, &anchors, &mut overlaps);
        for (c, &o) in cands.iter_mut().zip(&overlaps) {
            let u = o.max(z);
            let s = c.1;
            c.1 = pow_metric(s, cfg.alpha, alpha) * pow_metric(u, cfg.beta, beta);
            c.2 = u;
            // argmax over all GT slots, first index on ties (strict >): conflict resolution target.
            if u > cl.best_overlap[c.0] {
                cl.best_overlap[c.0] = u;
                cl.best_align[c.0] = c.1;
                cl.best_gt[c.0] = g as u32;
            }
        }
        for (a, t, u) in top_k_picks(&mut cands, cfg.topk) {
            if cl.count[a] == 0 {
                cl.touched.push(a);
            }
            cl.count[a] = cl.count[a].saturating_add(1);
            cl.gt[a] = g as u32;
            cl.align[a] = t;
            cl.overlap[a] = u;
        }
    }

    // Resolve conflicts, then normalise the align metric per GT (docs/spec.md §7 steps 6 and 8).
    cl.touched.sort_unstable();
    let mut resolved: Vec<(usize, usize, F, F)> = Vec::with_capacity(cl.touched.len());
    for &a in &cl.touched {
        if cl.count[a] > 1 {
            resolved.push((a, cl.best_gt[a] as usize, cl.best_align[a], cl.best_overlap[a]));
        } else {
            resolved.push((a, cl.gt[a] as usize, cl.align[a], cl.overlap[a]));
        }
    }
    let mut max_align = vec![z; gts.len()];
    let mut max_overlap = vec![z; gts.len()];
    for &(_, g, t, u) in &resolved {
        max_align[g] = max_align[g].max(t);
        max_overlap[g] = max_overlap[g].max(u);
    }
    let eps = F::c(cfg.eps);
    resolved
        .into_iter()
        .map(|(a, g, t, _)| Positive { anchor: a, gt: g, score: t * max_overlap[g] / (max_align[g] + eps) })
        .collect()
}

/// x^e as the reference's `tensor.pow(e)`: √x for 0.5 (PyTorch's own special case), exact products
/// for small integer exponents (within an ulp or two of `pow`), `powf` otherwise.
#[inline(always)]
fn pow_metric<F: Real>(x: F, e: f64, ef: F) -> F {
    if e == 0.5 {
        x.sqrt()
    } else if e == 1.0 {
        x
    } else if e == 6.0 {
        let x2 = x * x;
        x2 * x2 * x2
    } else {
        x.powf(ef)
    }
}

/// The anchors a GT's top-k selects that are inside it: the k best positive metrics (ties to the lower
/// anchor index), then, if fewer than k metrics are positive, the zero-metric anchors that the
/// lowest-index fill reaches. `cands` holds every inside anchor of the GT (any order).
fn top_k_picks<F: Real>(cands: &mut [(usize, F, F)], k: usize) -> Vec<(usize, F, F)> {
    let z = F::zero();
    if let Some(best) = k_best_positive(cands, k) {
        return best;
    }
    // Fewer than k positive metrics: all of them (moved first), then the zero metrics (by anchor index).
    let npos = partition(cands, |c| c.1 > z);
    let (pos, zero) = cands.split_at_mut(npos);
    let mut picks = pos.to_vec();
    if zero.is_empty() {
        return picks;
    }
    // The fill takes the `need` lowest anchor indices that do not carry a positive metric.
    let need = k - pos.len();
    let mut taken: Vec<usize> = pos.iter().map(|c| c.0).collect();
    taken.sort_unstable();
    let mut last = 0usize;
    let (mut a, mut ti, mut got) = (0usize, 0usize, 0usize);
    while got < need {
        if ti < taken.len() && taken[ti] == a {
            ti += 1;
        } else {
            last = a;
            got += 1;
        }
        a += 1;
    }
    picks.extend(zero.iter().filter(|c| c.0 <= last).copied());
    picks
}

/// The `k` candidates of positive metric ranked first by larger metric, then lower anchor index (any order among
/// them), or None when fewer than `k` metrics are positive. One pass with a heap of the best `k` so far, its worst on
/// top: a candidate that does not beat that worst costs one comparison. A partition and then a quickselect over the
/// positives (computing both keys at every comparison) added ~2 % to the instructions of a call with 1000 labels per
/// image; sorted insertion and a quickselect over precomputed keys were no better than the heap.
fn k_best_positive<F: Real>(cands: &[(usize, F, F)], k: usize) -> Option<Vec<(usize, F, F)>> {
    let z = F::zero();
    // Positive floats order as their bit patterns do (widening to f64 is exact): an integer key ranks them as
    // `partial_cmp` does, at a fraction of the cost. Anchors are distinct, so no two keys are equal.
    let key = |c: &(usize, F, F)| (std::cmp::Reverse(c.1.f64().to_bits()), c.0);
    let mut best = std::collections::BinaryHeap::with_capacity(k + 1);
    for (i, c) in cands.iter().enumerate().filter(|(_, c)| c.1 > z) {
        let kc = key(c);
        if best.len() < k {
            best.push((kc, i));
        } else if let Some(mut worst) = best.peek_mut() {
            if kc < worst.0 {
                *worst = (kc, i);
            }
        }
    }
    (best.len() == k).then(|| best.into_iter().map(|(_, i)| cands[i]).collect())
}

/// Stable-enough in-place partition; returns the count of elements satisfying `pred`, moved to the front.
fn partition<T>(v: &mut [T], pred: impl Fn(&T) -> bool) -> usize {
    let mut n = 0;
    for i in 0..v.len() {
        if pred(&v[i]) {
            v.swap(n, i);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selection picks what ranking every positive candidate would (larger metric, then lower anchor): with ties
    /// of metric across anchors, zero metrics mixed in, for k below and at the count of positives and any input order;
    /// none above that count.
    #[test]
    fn k_best_positive_picks_the_ranked_first_k() {
        let n = 300;
        // Few distinct metrics (many ties), every fifth zero, anchors in a scrambled order.
        let metric = |i: usize| if i.is_multiple_of(5) { 0.0 } else { ((i * 31) % 17 + 1) as f32 / 8.0 };
        let cands: Vec<(usize, f32, f32)> = (0..n).map(|i| ((i * 7919) % n, metric(i), i as f32)).collect();
        let mut ranked: Vec<_> = cands.iter().copied().filter(|c| c.1 > 0.0).collect();
        ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        for k in [0, 1, 2, 10, 13, ranked.len() - 1, ranked.len()] {
            let mut want: Vec<usize> = ranked[..k].iter().map(|c| c.0).collect();
            let mut got: Vec<usize> = k_best_positive(&cands, k).unwrap().iter().map(|c| c.0).collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "k {k}");
        }
        assert_eq!(k_best_positive(&cands, ranked.len() + 1), None);
    }
}
