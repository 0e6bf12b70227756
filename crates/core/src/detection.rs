//! v8DetectionLoss (SPEC §9): forward and analytic backward, parallel over images.
//!
//! One call runs in three phases:
//! 1. per image (parallel): task-aligned assignment, decoding only the anchors that lie inside a GT;
//! 2. the divisor S = max(Σ target scores, 1) over the batch;
//! 3. per image (parallel): one pass over the class logits (Σ BCE(x, 0) and σ(x) into the gradient),
//!    then sparse corrections and the box/DFL terms at the positives only.
//! Nothing of size (B × A × nc) is allocated besides the gradient itself, nothing of size (B × M × A) at all.

use std::ops::RangeInclusive;

use rayon::prelude::*;

use crate::assigner::{assign_image, AnchorSource, AssignerConfig, GtBox, Positive};
use crate::dfl::{dfl_side_grad_acc, dfl_side_loss_lse, softmax_expectation, softmax_expectation_grad_acc, softmax_expectation_lse, DflTarget, SoftmaxRun, RUN_CELLS, RUN_MAX_BINS};
use crate::error::{LossError, Result};
use crate::geometry::{bbox2dist, dist2bbox, AnchorGrid, AnchorPos};
use crate::hyp::Hyp;
use crate::iou::{aspect_atan, bbox_iou_grad_alpha, ciou_with_atans, IouKind, IOU_EPS};
use crate::labels::{validate_labels, GtTable};
use crate::real::Real;
use crate::tensor::{all_finite_parallel, fmt_shape, TensorRef};

/// What Ultralytics reads from the model and the constructor arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionConfig {
    pub nc: usize,
    pub reg_max: usize,
    pub strides: Vec<f64>,
    pub hyp: Hyp,
    pub tal_topk: usize,
}

/// The label part of the Ultralytics batch dict.
#[derive(Debug, Clone, Copy)]
pub struct DetBatch<'a, F> {
    /// `[N]` image index of each label.
    pub batch_idx: TensorRef<'a, F>,
    /// `[N, 1]` (or `[N]`) class ids, integer valued.
    pub cls: TensorRef<'a, F>,
    /// `[N, 4]` normalized cx, cy, w, h.
    pub bboxes: TensorRef<'a, F>,
}

/// Result of one call: `loss` (×B, back-propagated), `loss_items` (detached), and, when asked for,
/// the gradient of `sum(loss)` for each prediction tensor, in that tensor's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput<F> {
    pub loss: Vec<F>,
    pub loss_items: Vec<F>,
    pub grads: Vec<Vec<F>>,
}

#[derive(Debug, Clone)]
pub struct V8DetectionLoss {
    pub cfg: DetectionConfig,
}

/// Validated view of the head outputs: B, the anchor grid and the per-level data.
///
/// Public so that another backend of the detection-family losses (the CUDA crate) validates the head exactly as
/// the CPU losses do (same checks, same messages, same order) and sees the same image size and grid.
pub struct Head<'a, F> {
    /// B, the batch size shared by every level.
    pub batch: usize,
    /// The anchors of every level, in the losses' order.
    pub grid: AnchorGrid,
    /// The data of each level tensor `[B, channels, H_l, W_l]`.
    pub levels: Vec<&'a [F]>,
    /// Channels per level: 4R + nc (TVP: 4R + text prompts + visual prompts).
    pub channels: usize,
    /// R, the DFL bins per box side (1: raw distances).
    pub reg_max: usize,
    /// Channel of the first class logit the loss uses, and how many it uses.
    pub cls_ch0: usize,
    pub nc: usize,
}

impl<'a, F: Real> Head<'a, F> {
    /// `feats[l]` must be `[B, 4R + nc, H_l, W_l]`, finite, with H_l·s_l and W_l·s_l covering the
    /// image size (H_0·s_0, W_0·s_0) exactly as strided convolutions produce: H_l = ⌈H_0·s_0 / s_l⌉.
    pub fn validate(feats: &[TensorRef<'a, F>], strides: &[f64], reg_max: usize, nc: usize) -> Result<Self> {
        Self::validate_channels(feats, strides, reg_max, 4 * reg_max + nc, 4 * reg_max, nc)
    }

    /// As [`Head::validate`] with an explicit channel count and class-channel window (TVP losses).
    pub fn validate_channels(feats: &[TensorRef<'a, F>], strides: &[f64], reg_max: usize, channels: usize, cls_ch0: usize, nc: usize) -> Result<Self> {
        let head = Self::validate_shapes(feats, strides, reg_max, channels, cls_ch0, nc)?;
        check_preds_finite(feats)?;
        Ok(head)
    }

    /// [`Head::validate_channels`] without its last step, the finiteness check ([`check_preds_finite`]): for a
    /// backend that checks finiteness where the data lives. Every shape error comes first, as there.
    pub fn validate_shapes(feats: &[TensorRef<'a, F>], strides: &[f64], reg_max: usize, channels: usize, cls_ch0: usize, nc: usize) -> Result<Self> {
        if feats.len() != strides.len() {
            return Err(LossError::shape(format!("preds: expected {} level tensors (one per stride {:?}), got {}", strides.len(), strides, feats.len())));
        }
        let mut shapes = Vec::with_capacity(feats.len());
        let mut batch = 0;
        for (l, f) in feats.iter().enumerate() {
            let name = format!("preds[{l}]");
            f.check_rank(&name, 4, &format!("[B, {channels}, H, W] (4·reg_max + nc = 4·{reg_max} + {} channels)", channels - 4 * reg_max))?;
            if l == 0 {
                batch = f.shape[0];
            } else if f.shape[0] != batch {
                return Err(LossError::shape(format!("{name}: expected batch size {batch} like preds[0], got shape {}", fmt_shape(f.shape))));
            }
            if f.shape[1] != channels {
                return Err(LossError::shape(format!(
                    "{name}: expected {channels} channels (4·reg_max + nc = 4·{reg_max} + {}), got shape {}",
                    channels - 4 * reg_max,
                    fmt_shape(f.shape)
                )));
            }
            shapes.push((f.shape[2], f.shape[3]));
        }
        if batch == 0 {
            return Err(LossError::shape("preds[0]: expected a batch size of at least 1, got 0".to_string()));
        }
        let (h0, w0) = shapes[0];
        if h0 == 0 || w0 == 0 {
            return Err(LossError::shape(format!("preds[0]: expected a non-empty feature map, got shape {}", fmt_shape(feats[0].shape))));
        }
        let (img_h, img_w) = (h0 as f64 * strides[0], w0 as f64 * strides[0]);
        for (l, &(h, w)) in shapes.iter().enumerate().skip(1) {
            let (eh, ew) = ((img_h / strides[l]).ceil() as usize, (img_w / strides[l]).ceil() as usize);
            if h != eh || w != ew {
                return Err(LossError::shape(format!(
                    "preds[{l}]: expected spatial size [{eh}, {ew}] for stride {} (image {img_h}×{img_w} from preds[0] at stride {}), got shape {}",
                    strides[l],
                    strides[0],
                    fmt_shape(feats[l].shape)
                )));
            }
        }
        Ok(Self { batch, grid: AnchorGrid::new(&shapes, strides), levels: feats.iter().map(|f| f.data).collect(), channels, reg_max, cls_ch0, nc })
    }

    /// (H_img, W_img) as the losses see it: the first level's size times the first stride (the scale of the
    /// normalized label boxes).
    pub fn image_size(&self) -> (F, F) {
        let l0 = &self.grid.levels[0];
        (F::from_usize_(l0.h) * F::c(l0.stride), F::from_usize_(l0.w) * F::c(l0.stride))
    }

    /// Whether every channel of image `b` outside the class window `[cls_ch0, cls_ch0 + nc)` is finite.
    pub(crate) fn image_finite_outside_class_window(&self, b: usize) -> bool {
        (0..self.levels.len()).all(|l| {
            let hw = self.grid.levels[l].len();
            let d = self.image_level(b, l);
            all_finite_parallel(&d[..self.cls_ch0 * hw]) && all_finite_parallel(&d[(self.cls_ch0 + self.nc) * hw..])
        })
    }

    /// The slice of level `l` that belongs to image `b`: `[C, H_l·W_l]`.
    #[inline]
    pub fn image_level(&self, b: usize, l: usize) -> &'a [F] {
        let n = self.channels * self.grid.levels[l].len();
        &self.levels[l][b * n..(b + 1) * n]
    }
}

/// An error met before the level tensors are known to be finite, as the validation in one go would report it: the
/// first non-finite element's error when there is one (that check comes first there), else `e`. For the losses that
/// check finiteness by parts, as [`V8DetectionLoss`] does (the class window in the class pass, the other channels
/// image by image in the assignment), so that no separate pass reads the level tensors.
pub(crate) fn preds_error_first<F: Real>(feats: &[TensorRef<F>], e: LossError) -> LossError {
    check_preds_finite(feats).err().unwrap_or(e)
}

/// Every prediction tensor must be finite; the error names the first bad one as `preds[l]` (the last check of
/// [`Head::validate_channels`]).
pub fn check_preds_finite<F: Real>(feats: &[TensorRef<F>]) -> Result<()> {
    for (l, f) in feats.iter().enumerate() {
        f.check_finite(&format!("preds[{l}]"))?;
    }
    Ok(())
}

/// Reads one image's predictions for the assigner and the box loss; caches decoded anchors.
pub(crate) struct ImagePreds<'h, 'a, F> {
    pub head: &'h Head<'a, F>,
    pub data: Vec<&'a [F]>,
    /// Per anchor, once decoded: the pixel box and its CIoU aspect term atan(w/h).
    decoded: Vec<Option<([F; 4], F)>>,
    /// Distances of every anchor, decoded in one vectorised pass when most anchors will be needed.
    pub(crate) bulk: Vec<[F; 4]>,
    /// The last GT box met and its aspect term (the assigner visits a GT's candidates in a row).
    last_gt: Option<([F; 4], F)>,
    /// The 4R box logits of the last decoded anchor, their per-side softmax and log-sum-exp.
    logits: Vec<F>,
    probs: Vec<F>,
    lse: [F; 4],
    /// Scratch of `overlaps`: the candidates' pixel boxes (x1, y1, x2, y2) and aspect terms, one column each.
    columns: [Vec<F>; 5],
    /// The four sides' soft-argmax of the last run of cells decoded at once, and its anchors.
    runs: Vec<SoftmaxRun<F>>,
    run_anchors: std::ops::Range<usize>,
}

impl<'h, 'a, F: Real> ImagePreds<'h, 'a, F> {
    pub fn new(head: &'h Head<'a, F>, b: usize, cache: bool) -> Self {
        let data = (0..head.grid.levels.len()).map(|l| head.image_level(b, l)).collect();
        let decoded = if cache { vec![None; head.grid.num_anchors] } else { Vec::new() };
        Self { head, data, decoded, bulk: Vec::new(), last_gt: None, logits: vec![F::zero(); 4 * head.reg_max], probs: vec![F::zero(); 4 * head.reg_max], lse: [F::zero(); 4], columns: Default::default(), runs: Vec::new(), run_anchors: 0..0 }
    }

    /// Decodes the distances of every anchor of the image up front (channel-major, vectorised):
    /// cheaper than anchor-by-anchor gathers once the GTs cover a good part of the image.
    pub fn decode_all(&mut self) {
        let (r, grid) = (self.head.reg_max, &self.head.grid);
        let mut bulk = vec![[F::zero(); 4]; grid.num_anchors];
        let mut side = Vec::new();
        for (l, lv) in grid.levels.iter().enumerate() {
            let hw = lv.len();
            side.resize(hw, F::zero());
            for s in 0..4 {
                let z = &self.data[l][s * r * hw..(s + 1) * r * hw];
                if r == 1 {
                    side.copy_from_slice(z);
                } else {
                    F::softmax_expect_cells(z, hw, r, &mut side);
                }
                for (c, &d) in side.iter().enumerate() {
                    bulk[lv.offset + c][s] = d;
                }
            }
        }
        self.bulk = bulk;
    }

    /// Logit of channel `ch` at anchor `p`.
    #[inline]
    pub fn logit(&self, p: AnchorPos, ch: usize) -> F {
        self.data[p.level][ch * self.head.grid.levels[p.level].len() + p.cell]
    }

    /// Decoded distances (l, t, r, b) in grid units; leaves the anchor's box logits, their per-side
    /// softmax and log-sum-exp in `self` for the DFL term and the gradients.
    pub fn distances(&mut self, p: AnchorPos) -> [F; 4] {
        self.decode(p, true)
    }

    /// As [`distances`](Self::distances); the log-sum-exps only `with_lse` (the assigner needs none of them:
    /// four logarithms per candidate saved).
    fn decode(&mut self, p: AnchorPos, with_lse: bool) -> [F; 4] {
        let r = self.head.reg_max;
        for (ch, z) in self.logits.iter_mut().enumerate() {
            *z = self.data[p.level][ch * self.head.grid.levels[p.level].len() + p.cell];
        }
        let mut d = [F::zero(); 4];
        for (s, ds) in d.iter_mut().enumerate() {
            if r == 1 {
                *ds = self.logits[s];
                continue;
            }
            let (z, probs) = (&self.logits[s * r..(s + 1) * r], &mut self.probs[s * r..(s + 1) * r]);
            if with_lse {
                let (dist, lse) = softmax_expectation_lse(z, probs);
                *ds = dist;
                self.lse[s] = lse;
            } else {
                *ds = softmax_expectation(z, probs);
            }
        }
        d
    }

    /// Softmax of side `s` from the last `distances` call.
    pub fn side_probs(&self, s: usize) -> &[F] {
        let r = self.head.reg_max;
        &self.probs[s * r..(s + 1) * r]
    }

    /// The R logits of side `s` from the last `distances` call, and their log-sum-exp.
    pub fn side_logits(&self, s: usize) -> (&[F], F) {
        let r = self.head.reg_max;
        (&self.logits[s * r..(s + 1) * r], self.lse[s])
    }

    /// The predicted box in grid units (xyxy).
    #[cfg(test)]
    pub fn grid_box(&mut self, p: AnchorPos) -> [F; 4] {
        let d = self.distances(p);
        dist2bbox(d, self.head.grid.point(p), false)
    }

    /// The CIoU aspect term of GT box `gt` (the assigner asks for one GT's candidates in a row: the last is kept).
    fn gt_atan(&mut self, gt: &[F; 4]) -> F {
        match self.last_gt {
            Some((b, t)) if b == *gt => t,
            _ => {
                let t = aspect_atan(*gt, F::c(IOU_EPS));
                self.last_gt = Some((*gt, t));
                t
            }
        }
    }

    /// The predicted box in pixels, as the assigner receives it (grid box × stride), with its CIoU
    /// aspect term; cached per anchor.
    fn pixel_box(&mut self, a: usize) -> ([F; 4], F) {
        if let Some(b) = self.decoded.get(a).copied().flatten() {
            return b;
        }
        let p = self.head.grid.locate(a);
        let d = match self.bulk.get(a) {
            Some(&d) => d,
            None => self.decode(p, false),
        };
        let entry = self.pixel_entry(p, d);
        if let Some(slot) = self.decoded.get_mut(a) {
            *slot = Some(entry);
        }
        entry
    }

    /// The cache entry of anchor `p` from its distances: the pixel box and its aspect term.
    fn pixel_entry(&self, p: AnchorPos, d: [F; 4]) -> ([F; 4], F) {
        let g = dist2bbox(d, self.head.grid.point(p), false);
        let s = F::c(self.head.grid.levels[p.level].stride);
        let b = [g[0] * s, g[1] * s, g[2] * s, g[3] * s];
        (b, aspect_atan(b, F::c(IOU_EPS)))
    }

    /// Decodes into the cache the anchors of `anchors` not decoded yet, in runs of consecutive anchors (a GT's
    /// candidates come as row runs) with [`Real::softmax_run`]: one vector load per bin and run instead of R·4 scattered
    /// loads and a scalar soft-argmax per anchor, with the same distances. Only where anchors are decoded one by one (no
    /// bulk decode, a cache, 1 < R ≤ [`RUN_MAX_BINS`]).
    fn decode_runs(&mut self, anchors: &[usize]) {
        if !self.bulk.is_empty() || self.decoded.is_empty() || !self.runs_apply() {
            return;
        }
        let mut i = 0;
        while i < anchors.len() {
            let a = anchors[i];
            if self.decoded[a].is_some() {
                i += 1;
                continue;
            }
            let n = self.decode_run(anchors[i..].iter().copied());
            for b in a..a + n {
                if self.decoded[b].is_none() {
                    let j = b - a;
                    let d = std::array::from_fn(|s| self.runs[s].dist[j]);
                    self.decoded[b] = Some(self.pixel_entry(self.head.grid.locate(b), d));
                }
            }
            i += n;
        }
    }

    /// Whether this head's soft-argmax goes by runs of cells (1 < R ≤ [`RUN_MAX_BINS`]).
    fn runs_apply(&self) -> bool {
        (2..=RUN_MAX_BINS).contains(&self.head.reg_max)
    }

    /// Decodes the four sides at the run of consecutive anchors that `anchors` (increasing) starts with, at most
    /// [`RUN_CELLS`] and within the first one's level, into `self.runs`; returns the run's length.
    fn decode_run(&mut self, mut anchors: impl Iterator<Item = usize>) -> usize {
        let (grid, r) = (&self.head.grid, self.head.reg_max);
        let Some(a) = anchors.next() else { return 0 };
        let (l, c0) = grid.level_cell(a);
        let hw = grid.levels[l].len();
        let max = RUN_CELLS.min(hw - c0);
        let n = 1 + anchors.take(max - 1).enumerate().take_while(|&(i, b)| b == a + 1 + i).count();
        self.runs.resize_with(4, SoftmaxRun::default);
        for (s, run) in self.runs.iter_mut().enumerate() {
            F::softmax_run(&self.data[l][s * r * hw..(s + 1) * r * hw], hw, r, c0, n, run);
        }
        self.run_anchors = a..a + n;
        n
    }

    /// As [`distances`](Self::distances) for the first of `anchors`, the anchors still to come in increasing order (the
    /// positives from this one on): the run of consecutive anchors it starts is decoded at once unless the last run
    /// holds it, and its logits, softmax and log-sum-exp are left in `self` as `distances` leaves them, with the same
    /// bits.
    pub fn run_distances(&mut self, p: AnchorPos, anchors: impl Iterator<Item = usize>) -> [F; 4] {
        if !self.runs_apply() {
            return self.distances(p);
        }
        let a = self.head.grid.levels[p.level].offset + p.cell;
        if !self.run_anchors.contains(&a) {
            self.decode_run(anchors);
        }
        let (j, r) = (a - self.run_anchors.start, self.head.reg_max);
        let mut d = [F::zero(); 4];
        for (s, run) in self.runs.iter().enumerate() {
            for k in 0..r {
                self.logits[s * r + k] = run.z[k][j];
                self.probs[s * r + k] = run.p[k][j];
            }
            self.lse[s] = run.max[j] + run.sum[j].ln();
            d[s] = run.dist[j];
        }
        d
    }
}

#[inline(always)]
pub(crate) fn sigmoid<F: Real>(x: F) -> F {
    F::one() / (F::one() + (-x).exp())
}

impl<'h, 'a, F: Real> AnchorSource<F, [F; 4]> for ImagePreds<'h, 'a, F> {
    fn for_each_inside(&self, b: &[F; 4], visit: &mut dyn FnMut(usize)) {
        let b = *b;
        let grid = &self.head.grid;
        let eps = F::c(1e-9);
        // `center_in_box` taken apart instead of run per cell: the least of the four margins exceeds eps exactly when
        // each does (finite boxes and centres: no NaN); the x margins depend on the column alone, the y margins on the
        // row alone, and a centre grows with its index, so the columns (rows) that pass form one run. Found once per
        // level, the runs give the same cells in the same row-major order.
        let run = |l: usize, range: RangeInclusive<usize>, lo: F, hi: F| {
            let inside = |&i: &usize| {
                let p = grid.pixel_coord::<F>(l, i);
                p - lo > eps && hi - p > eps
            };
            let mut passing = range.skip_while(|i| !inside(i));
            let first = passing.next()?;
            Some(first..=passing.take_while(inside).last().unwrap_or(first))
        };
        grid.for_each_near_level(b, |l, xs, ys| {
            let (Some(xs), Some(ys)) = (run(l, xs, b[0], b[2]), run(l, ys, b[1], b[3])) else { return };
            let lv = &grid.levels[l];
            for y in ys {
                for x in xs.clone() {
                    visit(lv.offset + y * lv.w + x);
                }
            }
        });
    }
    fn score(&mut self, a: usize, cls: usize) -> F {
        let (level, cell) = self.head.grid.level_cell(a);
        let hw = self.head.grid.levels[level].len();
        sigmoid(self.data[level][(self.head.cls_ch0 + cls) * hw + cell])
    }
    fn overlap(&mut self, gt: &[F; 4], a: usize) -> F {
        let (pred, pred_atan) = self.pixel_box(a);
        ciou_with_atans(*gt, pred, self.gt_atan(gt), pred_atan, F::c(IOU_EPS))
    }
    fn overlaps(&mut self, gt: &[F; 4], anchors: &[usize], out: &mut [F]) {
        // The boxes gathered into columns first, so that the CIoU loop below is plain arithmetic over arrays,
        // which the compiler vectorises (per lane the same operations as `overlap`, hence the same numbers).
        self.decode_runs(anchors);
        let mut cols = std::mem::take(&mut self.columns);
        for c in cols.iter_mut() {
            c.clear();
        }
        for &a in anchors {
            let (b, t) = self.pixel_box(a);
            for (c, v) in cols.iter_mut().zip([b[0], b[1], b[2], b[3], t]) {
                c.push(v);
            }
        }
        let (gt_atan, eps) = (self.gt_atan(gt), F::c(IOU_EPS));
        let [x1, y1, x2, y2, t] = &cols;
        for (i, o) in out.iter_mut().enumerate().take(anchors.len()) {
            *o = ciou_with_atans(*gt, [x1[i], y1[i], x2[i], y2[i]], gt_atan, t[i], eps);
        }
        self.columns = cols;
    }
    fn prefetch(&mut self, b: &[F; 4], cls: usize) {
        let grid = &self.head.grid;
        let ch = self.head.cls_ch0 + cls;
        grid.for_each_near_row(*b, |l, y, xs| {
            let lv = &grid.levels[l];
            let row = &self.data[l][ch * lv.len() + y * lv.w..][..lv.w][xs];
            // One request per cache line of the row, and one for its last element (the row may end in a new line).
            for v in row.iter().step_by(64 / std::mem::size_of::<F>()).chain(row.last()) {
                prefetch_read(v);
            }
        });
    }
}

/// Asks the CPU to start loading the cache line of `p` (a no-op where there is no such instruction).
#[inline(always)]
fn prefetch_read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and has no effect visible to the program, whatever
    // the address (here always inside a live slice).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

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

impl V8DetectionLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        if cfg.nc == 0 {
            return Err(LossError::invalid("model.nc: expected a class count of at least 1, got 0"));
        }
        if cfg.reg_max == 0 {
            return Err(LossError::invalid("model.reg_max: expected at least 1, got 0"));
        }
        if cfg.strides.is_empty() || cfg.strides.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(LossError::invalid(format!("model.stride: expected one positive stride per level, got {:?}", cfg.strides)));
        }
        if cfg.tal_topk == 0 {
            return Err(LossError::invalid("tal_topk: expected at least 1, got 0"));
        }
        let h = &cfg.hyp;
        for (k, v) in [("box", h.box_gain), ("cls", h.cls), ("dfl", h.dfl)] {
            if !v.is_finite() {
                return Err(LossError::non_finite(format!("model.args.{k}: expected a finite gain, got {v}")));
            }
        }
        Ok(Self { cfg })
    }

    /// `__call__`: loss and loss items, no gradient.
    pub fn call<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        without_grads(|g| self.run(feats, batch, g))
    }

    /// Loss, loss items and the gradient with respect to every level tensor.
    pub fn value_and_grad<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        with_fresh_grads(&datas(feats), |g| self.run(feats, batch, g))
    }

    /// As [`value_and_grad`](Self::value_and_grad), writing the gradients into caller-provided,
    /// zero-filled buffers (one per level, as long as it); returns (loss, loss items).
    pub fn value_and_grad_into<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &datas(feats))?;
        self.run(feats, batch, grads)
    }

    /// As [`value_and_grad_into`](Self::value_and_grad_into) into buffers of any contents (a training loop's buffers
    /// from its last step): every element is written, so the caller need not zero them first. The channels that only
    /// positives write (the box channels) are zeroed by the call itself, after every check; the class channels are
    /// stored whole by the class pass anyway, so they cost no extra pass. Same numbers as `value_and_grad`, bit for bit.
    pub fn value_and_grad_overwrite<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        check_grad_buffers(grads, &datas(feats))?;
        let c = self.cfg.reg_max * 4;
        self.run_window(feats, batch, grads, c + self.cfg.nc, c, self.cfg.nc, false, GradInit::Any)
    }

    /// `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R])` → (`[B,A,4]` grid xyxy, shape).
    pub fn bbox_decode<F: Real>(&self, anchor_points: TensorRef<F>, pred_dist: TensorRef<F>) -> Result<(Vec<F>, Vec<usize>)> {
        bbox_decode(anchor_points, pred_dist, self.cfg.reg_max)
    }

    /// The loss, and the gradients when `grads` is not empty (checked by the caller).
    pub(crate) fn run<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let c = self.cfg.reg_max * 4;
        self.run_window(feats, batch, grads, c + self.cfg.nc, c, self.cfg.nc, false, GradInit::Zeroed)
    }

    /// The loss over a window of class channels (`nc` classes from channel `cls_ch0` of `channels`);
    /// with `only_cls`, the gradient is that of the cls component alone and the loss is `[cls]`
    /// (TVPDetectLoss back-propagates only that one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_window<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>, channels: usize, cls_ch0: usize, nc: usize, only_cls: bool, init: GradInit) -> Result<LossValues<F>> {
        let cfg = &self.cfg;
        // The finiteness check of `Head::validate_channels`, split so that the class window, most of the data,
        // is checked by the BCE pass that reads it anyway (a non-finite logit makes its sum non-finite), and the
        // other channels image by image just before the image's assignment reads them (from cache, then). Any
        // error met before then, and a non-finite result of either part, defer to the full check, so the error is
        // the one the validation in one go gives: the first non-finite element, before any label error.
        let head = Head::validate_shapes(feats, &cfg.strides, cfg.reg_max, channels, cls_ch0, nc)?;
        let (asg, finite) = Assigned::new_checking(head, batch, cfg.tal_topk, true).map_err(|e| preds_error_first(feats, e))?;
        if !finite {
            check_preds_finite(feats)?;
        }
        if init == GradInit::Any {
            clear_outside_class_window(&asg.head, grads);
        }
        let (mut loss, items, bce_sum) = self.losses_with_scales(&asg, grads, None, only_cls);
        if !bce_sum.is_finite() {
            // Also reached by finite logits whose sum overflows: then the check passes and the result stands.
            check_preds_finite(feats)?;
        }
        if only_cls {
            loss = vec![loss[1]];
        }
        Ok((loss, items))
    }

    /// Phase 3: the loss terms and gradients for a fixed assignment and divisor S (the reference
    /// treats both as constants, so this is the function autograd differentiates).
    /// Also returns the raw class sum, non-finite when a class logit is.
    fn losses_with_scales<F: Real>(&self, asg: &Assigned<F>, grads: GradBufs<F>, frozen_alpha: Option<&[Vec<F>]>, only_cls: bool) -> (Vec<F>, Vec<F>, f64) {
        let head = &asg.head;
        let gains = [self.cfg.hyp.box_gain, self.cfg.hyp.cls, self.cfg.hyp.dfl];
        let mut scales = GradScales { frozen_alpha, ..GradScales::new(head.batch, gains, asg.s) };
        if only_cls {
            scales.iou = F::zero();
            scales.dfl = F::zero();
        }
        let sums = per_image_grads(grads, head.batch, |b, g| image_terms(head, &asg.gt, b, &asg.positives[b], &scales, g));
        let items = asg.items(&[sums.iou, sums.bce, sums.dfl], &gains);
        (times_batch(&items, head.batch), items, sums.bce)
    }
}

/// What the gradient buffers of a call hold when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GradInit {
    /// Zeros (fresh buffers, or a caller's zero-filled ones): only the elements that are not zero are written.
    Zeroed,
    /// Anything: every element is written.
    Any,
}

/// Zeroes, in every level's gradient, the channels outside the class window (the box channels, and the unused prompt
/// channels of a TVP head): the elements a call writes at positives only. The class window needs no clearing: the
/// class pass stores every element of it. One task per image and level, on every thread.
fn clear_outside_class_window<F: Real>(head: &Head<F>, grads: GradBufs<F>) {
    let (c0, c1) = (head.cls_ch0, head.cls_ch0 + head.nc);
    for (l, g) in grads.iter_mut().enumerate().take(head.levels.len()) {
        let hw = head.grid.levels[l].len();
        g.par_chunks_mut(head.channels * hw).for_each(|image| {
            image[..c0 * hw].fill(F::zero());
            image[c1 * hw..].fill(F::zero());
        });
    }
}

/// Loss vector (back-propagated, ×B) and detached items of one call.
pub type LossValues<F> = (Vec<F>, Vec<F>);

/// Gradient buffers of one call: one zero-filled slice per prediction tensor, in the loss's order;
/// empty for a call without gradients.
pub type GradBufs<'g, 'b, F> = &'g mut [&'b mut [F]];

/// The data of each tensor, in order (what [`check_grad_buffers`] takes).
pub fn datas<'a, F>(tensors: &[TensorRef<'a, F>]) -> Vec<&'a [F]> {
    tensors.iter().map(|t| t.data).collect()
}

/// The level tensors' data followed by the extra prediction tensors' (masks, keypoints, angle).
pub(crate) fn with_extra<'a, F>(feats: &[TensorRef<'a, F>], extra: &[TensorRef<'a, F>]) -> Vec<&'a [F]> {
    feats.iter().chain(extra).map(|t| t.data).collect()
}

/// `call`: runs without gradient buffers.
pub(crate) fn without_grads<F: Real>(run: impl FnOnce(GradBufs<F>) -> Result<LossValues<F>>) -> Result<LossOutput<F>> {
    let (loss, loss_items) = run(&mut [])?;
    Ok(LossOutput { loss, loss_items, grads: Vec::new() })
}

/// `value_and_grad`: fresh zero-filled gradient buffers shaped like `inputs`.
pub(crate) fn with_fresh_grads<F: Real>(inputs: &[&[F]], run: impl FnOnce(GradBufs<F>) -> Result<LossValues<F>>) -> Result<LossOutput<F>> {
    let mut bufs = zero_grads(inputs);
    let (loss, loss_items) = {
        let mut slices: Vec<&mut [F]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
        run(&mut slices)?
    };
    Ok(LossOutput { loss, loss_items, grads: bufs })
}

/// Caller-provided gradient buffers must be one per prediction tensor, each exactly as long as it: the check
/// (and message) of every `value_and_grad_into`, public so that other backends reject the same buffers alike.
pub fn check_grad_buffers<F>(grads: &[&mut [F]], inputs: &[&[F]]) -> Result<()> {
    let want: Vec<usize> = inputs.iter().map(|t| t.len()).collect();
    let got: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    if want != got {
        return Err(LossError::shape(format!("grads: expected {} buffers of lengths {want:?} (one per prediction tensor), got lengths {got:?}", want.len())));
    }
    Ok(())
}

/// A validated head, its labels and the batch's assignment: everything the detection-family losses
/// share before their own terms.
pub(crate) struct Assigned<'a, F> {
    pub head: Head<'a, F>,
    pub labels: crate::labels::Labels<F>,
    pub gt: GtTable<F>,
    pub positives: Vec<Vec<Positive<F>>>,
    /// S = max(Σ target scores, 1).
    pub s: F,
}

impl<'a, F: Real> Assigned<'a, F> {
    /// Validates the labels against `head` (class ids index the head's `nc` loss classes), builds the
    /// padded GT table in pixels and runs the task-aligned assigner with `topk`.
    #[cfg(test)]
    pub fn new(head: Head<'a, F>, batch: &DetBatch<F>, topk: usize) -> Result<Self> {
        Ok(Self::new_checking(head, batch, topk, false)?.0)
    }

    /// As [`Assigned::new`]; with `check_finite`, also says whether the channels outside the class window are
    /// finite (each image checked just before its assignment reads them). The assigner neither fails nor panics on
    /// non-finite logits; the caller reports them.
    pub fn new_checking(head: Head<'a, F>, batch: &DetBatch<F>, topk: usize, check_finite: bool) -> Result<(Self, bool)> {
        let (labels, gt) = labels_and_gt(&head, batch, topk)?;
        let (positives, finite) = assign_batch(&head, &gt, &AssignerConfig::for_loss(topk, head.nc), check_finite);
        let s = score_divisor::<F>(&positives);
        Ok((Self { head, labels, gt, positives, s }, finite))
    }

    /// Number of positive anchors in the batch.
    pub fn num_positives(&self) -> usize {
        self.positives.iter().map(Vec::len).sum()
    }

    /// Loss items from raw sums: sum / S × gain, in f32 order as the reference (the sum is exact enough).
    pub fn items(&self, sums: &[f64], gains: &[f64]) -> Vec<F> {
        sums.iter().zip(gains).map(|(&v, &g)| F::c(v) / self.s * F::c(g)).collect()
    }
}

/// The labels validated against `head` (class ids index the head's `nc` loss classes), the padded GT table in
/// pixels (boxes scaled by [`Head::image_size`]) and the check that the head has at least `topk` anchors when
/// there are labels: what the detection-family losses run before assigning, in this order, with these messages.
pub fn labels_and_gt<F: Real>(head: &Head<F>, batch: &DetBatch<F>, topk: usize) -> Result<(crate::labels::Labels<F>, GtTable<F>)> {
    let labels = validate_labels(batch.batch_idx, batch.cls, batch.bboxes, head.batch, head.nc)?;
    let (img_h, img_w) = head.image_size();
    let gt = GtTable::build(&labels, head.batch, [img_w, img_h, img_w, img_h]);
    gt.check_finite()?;
    if gt.max_labels > 0 && head.grid.num_anchors < topk {
        return Err(LossError::shape(format!(
            "preds: expected at least tal_topk = {topk} anchors in total, got {} (feature maps too small)",
            head.grid.num_anchors
        )));
    }
    Ok((labels, gt))
}

impl<'f, F: Real> GradScales<'f, F> {
    /// ∂(B · gain · sum / S)/∂sum for the (box, cls, dfl) gains.
    pub fn new(batch: usize, gains: [f64; 3], s: F) -> Self {
        let bsz = F::from_usize_(batch);
        GradScales { iou: bsz * F::c(gains[0]) / s, cls: bsz * F::c(gains[1]) / s, dfl: bsz * F::c(gains[2]) / s, frozen_alpha: None }
    }
}

/// Fresh zero gradients shaped like `tensors`.
pub(crate) fn zero_grads<F: Real>(tensors: &[&[F]]) -> Vec<Vec<F>> {
    tensors.iter().map(|t| crate::alloc::zeroed(t.len())).collect()
}

/// The first return value of the task losses: the items times the batch size.
pub(crate) fn times_batch<F: Real>(items: &[F], batch: usize) -> Vec<F> {
    let b = F::from_usize_(batch);
    items.iter().map(|&v| v * b).collect()
}

/// Runs the assigner on every image (in parallel) with the detection head's decode. With `check_finite`, each image's
/// channels outside the class window are checked first (then in cache for the decode); the flag is whether all were
/// finite (true without the check).
pub(crate) fn assign_batch<F: Real>(head: &Head<F>, gt: &GtTable<F>, cfg: &AssignerConfig, check_finite: bool) -> (Vec<Vec<Positive<F>>>, bool) {
    let per_image: Vec<(Vec<Positive<F>>, bool)> = (0..head.batch)
        .into_par_iter()
        .map(|b| {
            let finite = !check_finite || head.image_finite_outside_class_window(b);
            let gts = gt.gt_boxes(b);
            let mut preds = ImagePreds::new(head, b, true);
            if decodes_all_up_front(&head.grid, &gts) {
                preds.decode_all();
            }
            (assign_image(cfg, head.grid.num_anchors, &gts, &mut preds), finite)
        })
        .collect();
    let finite = per_image.iter().all(|(_, f)| *f);
    (per_image.into_iter().map(|(p, _)| p).collect(), finite)
}

/// Whether the assigner decodes every anchor of an image up front (one vectorised pass, `Real::softmax_expect_cells`)
/// rather than the anchors it visits one by one (`softmax_expectation`): when the image's valid GT boxes (pixel
/// xyxy, [`GtTable::gt_boxes`]) cover roughly more than a quarter of its anchors. The two forms of the soft-argmax
/// may differ in the last bit, so a backend that wants the CPU's assignment decodes each image in the form this
/// picks.
pub fn decodes_all_up_front<F: Real>(grid: &AnchorGrid, gts: &[GtBox<[F; 4]>]) -> bool {
    estimated_candidates(grid, gts) * 4 > grid.num_anchors
}

/// Roughly how many anchor centres the image's GT boxes cover, summed over GTs and levels.
fn estimated_candidates<F: Real>(grid: &AnchorGrid, gts: &[GtBox<[F; 4]>]) -> usize {
    let sizes = gts.iter().filter(|g| g.valid).map(|g| ((g.bbox[2] - g.bbox[0]).f64(), (g.bbox[3] - g.bbox[1]).f64()));
    cells_covered(grid, sizes)
}

/// Σ over boxes of `w × h` pixels and over levels of the grid cells their extent spans (+1 cell per side):
/// the cost estimate behind the choice between per-candidate and whole-image decoding.
pub(crate) fn cells_covered(grid: &AnchorGrid, sizes: impl Iterator<Item = (f64, f64)>) -> usize {
    let mut n = 0.0f64;
    for (w, h) in sizes {
        for lv in &grid.levels {
            n += (w / lv.stride + 1.0) * (h / lv.stride + 1.0);
        }
    }
    n as usize
}

/// S = max(Σ target_scores, 1) (SPEC §9 step 7).
pub(crate) fn score_divisor<F: Real>(positives: &[Vec<Positive<F>>]) -> F {
    let sum: f64 = positives.iter().flatten().map(|p| p.score.f64()).sum();
    let sum = F::c(sum);
    if sum < F::one() {
        F::one()
    } else {
        sum
    }
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

/// One image's detection terms (class and box) and, when `grads` is non-empty, its gradient slices.
fn image_terms<F: Real>(head: &Head<F>, gt: &GtTable<F>, b: usize, positives: &[Positive<F>], sc: &GradScales<F>, grads: &mut [&mut [F]]) -> TermSums {
    let bce = class_terms(head, gt, b, positives, sc.cls, grads);
    let (iou, dfl) = box_terms(head, gt, b, positives, sc, grads);
    TermSums { bce, iou, dfl }
}

/// Σ_{a,c} BCE(x, t) of image `b` over the loss's class channels; the gradient (σ(x) − t)·scale.
/// The dense part uses t = 0 everywhere; positives then get BCE(x, t) = BCE(x, 0) − x·t and −t·scale.
pub(crate) fn class_terms<F: Real, const W: usize>(head: &Head<F>, gt: &GtTable<F, W>, b: usize, positives: &[Positive<F>], scale: F, grads: &mut [&mut [F]]) -> f64 {
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
pub(crate) fn box_terms<F: Real>(head: &Head<F>, gt: &GtTable<F>, b: usize, positives: &[Positive<F>], sc: &GradScales<F>, grads: &mut [&mut [F]]) -> (f64, f64) {
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

/// `bbox_decode` on channel-last predictions: anchor_points `[A,2]`, pred_dist `[B,A,4R]` → `[B,A,4]`.
pub fn bbox_decode<F: Real>(anchor_points: TensorRef<F>, pred_dist: TensorRef<F>, reg_max: usize) -> Result<(Vec<F>, Vec<usize>)> {
    anchor_points.check_rank("anchor_points", 2, "[A, 2]")?;
    pred_dist.check_rank("pred_dist", 3, &format!("[B, A, {}]", 4 * reg_max))?;
    let a = anchor_points.shape[0];
    if anchor_points.shape[1] != 2 {
        return Err(LossError::shape(format!("anchor_points: expected shape [A, 2], got {}", fmt_shape(anchor_points.shape))));
    }
    if pred_dist.shape[1] != a || pred_dist.shape[2] != 4 * reg_max {
        return Err(LossError::shape(format!("pred_dist: expected shape [B, {a}, {}] (4·reg_max per anchor), got {}", 4 * reg_max, fmt_shape(pred_dist.shape))));
    }
    anchor_points.check_finite("anchor_points")?;
    pred_dist.check_finite("pred_dist")?;
    let bsz = pred_dist.shape[0];
    let mut out = Vec::with_capacity(bsz * a * 4);
    let mut probs = vec![F::zero(); reg_max];
    for row in pred_dist.data.chunks(4 * reg_max) {
        let i = (out.len() / 4) % a.max(1);
        let mut d = [F::zero(); 4];
        for (s, ds) in d.iter_mut().enumerate() {
            let z = &row[s * reg_max..(s + 1) * reg_max];
            *ds = if reg_max == 1 { z[0] } else { softmax_expectation(z, &mut probs) };
        }
        out.extend_from_slice(&dist2bbox(d, [anchor_points.data[2 * i], anchor_points.data[2 * i + 1]], false));
    }
    Ok((out, vec![bsz, a, 4]))
}

/// `preprocess` of the reference, re-exported here for the detection API.
pub use crate::labels::preprocess;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iou::ciou_alpha;

    use crate::testing::{random_levels, Lcg};

    /// `value_and_grad_overwrite` into buffers full of leftovers (NaN, large values) gives `value_and_grad`'s numbers
    /// bit for bit: every element of every level gradient is written. With a TVP-like head whose channels go past the
    /// class window, so that channels on both sides of it need clearing.
    #[test]
    fn overwrite_writes_every_gradient_element() {
        for (reg_max, nc) in [(16usize, 5usize), (1, 3)] {
            let crit = V8DetectionLoss::new(DetectionConfig { nc, reg_max, strides: vec![8.0, 16.0], hyp: Hyp::default(), tal_topk: 4 }).unwrap();
            let c = 4 * reg_max + nc;
            let shapes = [vec![2usize, c, 6, 8], vec![2, c, 3, 4]];
            let mut rng = Lcg(11 + reg_max as u64);
            let levels = random_levels(&mut rng, &shapes, reg_max, 1.0);
            let (bi, cls) = ([0.0f32, 0.0, 1.0], [1.0f32, 2.0, 0.0]);
            let boxes = [0.4f32, 0.5, 0.5, 0.6, 0.5, 0.45, 0.4, 0.5, 0.3, 0.6, 0.35, 0.5];
            let (s1, s2, s4) = ([3usize], [3usize, 1usize], [3usize, 4usize]);
            let batch = DetBatch { batch_idx: TensorRef::new(&bi, &s1), cls: TensorRef::new(&cls, &s2), bboxes: TensorRef::new(&boxes, &s4) };
            let levels: Vec<Vec<f32>> = levels.iter().map(|l| l.iter().map(|&v| v as f32).collect()).collect();
            let feats: Vec<TensorRef<f32>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let fresh = crit.value_and_grad(&feats, &batch).unwrap();
            assert!(fresh.grads.iter().flatten().any(|&g| g != 0.0));
            let mut bufs: Vec<Vec<f32>> = levels.iter().map(|l| (0..l.len()).map(|i| if i % 3 == 0 { f32::NAN } else { 1e30 }).collect()).collect();
            let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
            let (loss, items) = crit.value_and_grad_overwrite(&feats, &batch, &mut slices).unwrap();
            assert_eq!((loss, items), (fresh.loss.clone(), fresh.loss_items.clone()));
            for (l, (got, want)) in bufs.iter().zip(&fresh.grads).enumerate() {
                assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "reg_max {reg_max}, level {l}");
            }
            // The class window of a wider head (channels after it, as TVP's unused prompts): cleared too.
            let head = Head::validate_channels(&feats, &[8.0, 16.0], reg_max, c, 4 * reg_max, nc - 1).unwrap();
            let mut dirty: Vec<Vec<f32>> = levels.iter().map(|l| vec![f32::NAN; l.len()]).collect();
            let mut slices: Vec<&mut [f32]> = dirty.iter_mut().map(|v| v.as_mut_slice()).collect();
            clear_outside_class_window(&head, &mut slices);
            for (l, g) in dirty.iter().enumerate() {
                let hw = head.grid.levels[l].len();
                for (i, v) in g.iter().enumerate() {
                    let ch = (i / hw) % c;
                    assert_eq!(v.is_nan(), (4 * reg_max..c - 1).contains(&ch), "level {l}, element {i} (channel {ch})");
                }
            }
        }
    }

    /// Central differences in f64 of the loss with the assignment held fixed, against the analytic
    /// gradient, for every logit of a small case with overlapping boxes (reg_max 16 and 1).
    #[test]
    fn gradient_matches_finite_differences_with_frozen_assignment() {
        for reg_max in [16usize, 1] {
            let nc = 3;
            let strides = vec![8.0, 16.0];
            let cfg = DetectionConfig { nc, reg_max, strides: strides.clone(), hyp: Hyp::default(), tal_topk: 4 };
            let crit = V8DetectionLoss::new(cfg).unwrap();
            let c = 4 * reg_max + nc;
            let shapes = [vec![2usize, c, 6, 8], vec![2, c, 3, 4]];
            let mut rng = Lcg(7 + reg_max as u64);
            let mut levels = random_levels(&mut rng, &shapes, reg_max, 1.0);
            let bi = [0.0, 0.0, 1.0];
            let cls = [1.0, 2.0, 0.0];
            let boxes = [0.4, 0.5, 0.5, 0.6, 0.5, 0.45, 0.4, 0.5, 0.3, 0.6, 0.35, 0.5];
            let (s1, s2, s4) = ([3usize], [3usize, 1usize], [3usize, 4usize]);
            let batch = DetBatch { batch_idx: TensorRef::new(&bi, &s1), cls: TensorRef::new(&cls, &s2), bboxes: TensorRef::new(&boxes, &s4) };
            let feats: Vec<TensorRef<f64>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let head = Head::validate(&feats, &strides, reg_max, nc).unwrap();
            let asg = Assigned::new(head, &batch, 4).unwrap();
            assert!(asg.num_positives() >= 6, "the case must have positives");
            let (head, gt, positives) = (&asg.head, &asg.gt, &asg.positives);
            let mut grads = zero_grads(&head.levels);
            {
                let mut slices: Vec<&mut [f64]> = grads.iter_mut().map(|v| v.as_mut_slice()).collect();
                crit.losses_with_scales(&asg, &mut slices, None, false);
            }
            // α of every positive at the base point (the test's mirror of autograd's no_grad α).
            let alphas: Vec<Vec<f64>> = (0..2)
                .map(|b| {
                    let mut preds = ImagePreds::new(head, b, false);
                    positives[b]
                        .iter()
                        .map(|p| {
                            let pos = head.grid.locate(p.anchor);
                            let st = head.grid.levels[pos.level].stride;
                            let tb = gt.boxes[b * gt.max_labels + p.gt].map(|v| v / st);
                            ciou_alpha(preds.grid_box(pos), tb, false, IOU_EPS)
                        })
                        .collect()
                })
                .collect();
            let total = |lv: &[Vec<f64>]| -> f64 {
                let feats: Vec<TensorRef<f64>> = lv.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
                let head = Head::validate(&feats, &strides, reg_max, nc).unwrap();
                let moved = Assigned { head, labels: asg.labels.clone(), gt: gt.clone(), positives: positives.clone(), s: asg.s };
                crit.losses_with_scales(&moved, &mut [], Some(&alphas), false).0.iter().sum()
            };
            let h = 1e-6;
            for l in 0..levels.len() {
                for i in 0..levels[l].len() {
                    let orig = levels[l][i];
                    levels[l][i] = orig + h;
                    let fp = total(&levels);
                    levels[l][i] = orig - h;
                    let fm = total(&levels);
                    levels[l][i] = orig;
                    let fd = (fp - fm) / (2.0 * h);
                    let an = grads[l][i];
                    assert!((fd - an).abs() < 1e-6 * (1.0 + fd.abs()), "reg_max {reg_max} level {l} elem {i}: fd {fd} analytic {an}");
                }
            }
        }
    }
}
