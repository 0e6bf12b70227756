//! One image's predictions as the assigner and the box terms read them: decoded distances and pixel boxes, cached per
//! anchor, decoded by runs of cells or all at once, and the assigner's view of them ([`AnchorSource`]).

use std::ops::RangeInclusive;

use crate::assigner::AnchorSource;
use crate::dfl::{softmax_expectation, softmax_expectation_lse};
use crate::family::head::Head;
use crate::geometry::{dist2bbox, AnchorPos};
use crate::iou::{aspect_atan, ciou_with_atans, IOU_EPS};
use crate::real::Real;
use crate::softmax_run::{SoftmaxRun, RUN_CELLS, RUN_MAX_BINS};

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
        Self {
            head,
            data,
            decoded,
            bulk: Vec::new(),
            last_gt: None,
            logits: vec![F::zero(); 4 * head.reg_max],
            probs: vec![F::zero(); 4 * head.reg_max],
            lse: [F::zero(); 4],
            columns: Default::default(),
            runs: Vec::new(),
            run_anchors: 0..0,
        }
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
            // `s` picks both the side's rows of the level tensor and the side's slot of every anchor's four.
            #[allow(clippy::needless_range_loop)]
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
