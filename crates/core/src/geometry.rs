//! Anchors and box conversions (docs/spec.md §5).

use std::ops::RangeInclusive;

use crate::real::Real;

/// One detection level: an `h × w` grid of anchors at `stride` pixels, whose anchors are numbered
/// from `offset` on (levels are concatenated in order, row-major inside a level).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub h: usize,
    pub w: usize,
    pub stride: f64,
    pub offset: usize,
}

impl Level {
    pub fn len(&self) -> usize {
        self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The anchor grid of a whole head: levels, anchor count, and the lookups the losses need.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorGrid {
    pub levels: Vec<Level>,
    pub num_anchors: usize,
}

/// Where an anchor sits: its level index and its (x, y) cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorPos {
    pub level: usize,
    pub x: usize,
    pub y: usize,
    /// Row-major index inside the level (`y·w + x`).
    pub cell: usize,
}

impl AnchorGrid {
    /// `shapes[l] = (h, w)` of level l.
    pub fn new(shapes: &[(usize, usize)], strides: &[f64]) -> Self {
        let mut offset = 0;
        let levels = shapes
            .iter()
            .zip(strides)
            .map(|(&(h, w), &stride)| {
                let level = Level { h, w, stride, offset };
                offset += h * w;
                level
            })
            .collect();
        Self { levels, num_anchors: offset }
    }

    pub fn locate(&self, a: usize) -> AnchorPos {
        let (level, cell) = self.level_cell(a);
        let w = self.levels[level].w.max(1);
        AnchorPos { level, x: cell % w, y: cell / w, cell }
    }

    /// The level of anchor `a` and its index inside the level: [`locate`](Self::locate) without the division
    /// into (x, y), for callers that only index the level's data (the assigner's score, per candidate).
    #[inline]
    pub fn level_cell(&self, a: usize) -> (usize, usize) {
        let level = self.levels.iter().rposition(|l| l.offset <= a && !l.is_empty()).unwrap_or(0);
        (level, a - self.levels[level].offset)
    }

    /// Anchor centre in grid units of its own level: (x + 0.5, y + 0.5).
    #[inline]
    pub fn point<F: Real>(&self, p: AnchorPos) -> [F; 2] {
        [F::from_usize_(p.x) + F::c(0.5), F::from_usize_(p.y) + F::c(0.5)]
    }

    /// Anchor centre in pixels, computed as the reference does: grid point × stride.
    #[inline]
    pub fn pixel_point<F: Real>(&self, p: AnchorPos) -> [F; 2] {
        [self.pixel_coord(p.level, p.x), self.pixel_coord(p.level, p.y)]
    }

    /// One coordinate of [`pixel_point`](Self::pixel_point): (i + 0.5) × stride for column or row `i` of `level`.
    #[inline]
    pub fn pixel_coord<F: Real>(&self, level: usize, i: usize) -> F {
        (F::from_usize_(i) + F::c(0.5)) * F::c(self.levels[level].stride)
    }

    /// `make_anchors` outputs: (anchor_points [A,2] flattened, stride_tensor [A]).
    pub fn make_anchors<F: Real>(&self, offset: f64) -> (Vec<F>, Vec<F>) {
        let mut points = Vec::with_capacity(self.num_anchors * 2);
        let mut strides = Vec::with_capacity(self.num_anchors);
        for lv in &self.levels {
            for y in 0..lv.h {
                for x in 0..lv.w {
                    points.push(F::from_usize_(x) + F::c(offset));
                    points.push(F::from_usize_(y) + F::c(offset));
                    strides.push(F::c(lv.stride));
                }
            }
        }
        (points, strides)
    }

    /// Calls `visit(anchor)` for every anchor of every level whose pixel centre might lie inside the
    /// pixel box `[x1, y1, x2, y2]` (a superset: callers apply the exact test). Cost is the box area in cells.
    pub fn for_each_near<F: Real>(&self, b: [F; 4], mut visit: impl FnMut(usize, AnchorPos)) {
        self.for_each_near_row(b, |li, y, xs| {
            let lv = &self.levels[li];
            for x in xs {
                let cell = y * lv.w + x;
                visit(lv.offset + cell, AnchorPos { level: li, x, y, cell });
            }
        });
    }

    /// The anchors of [`for_each_near`](Self::for_each_near) as runs: `visit(level, y, x0..=x1)` for each row.
    pub fn for_each_near_row<F: Real>(&self, b: [F; 4], mut visit: impl FnMut(usize, usize, RangeInclusive<usize>)) {
        self.for_each_near_level(b, |li, xs, ys| {
            for y in ys {
                visit(li, y, xs.clone());
            }
        });
    }

    /// The anchors of [`for_each_near`](Self::for_each_near) as one rectangle per level: `visit(level, x0..=x1, y0..=y1)`
    /// for each level the box reaches.
    pub fn for_each_near_level<F: Real>(
        &self,
        b: [F; 4],
        mut visit: impl FnMut(usize, RangeInclusive<usize>, RangeInclusive<usize>),
    ) {
        for (li, lv) in self.levels.iter().enumerate() {
            let s = lv.stride;
            // Centre x·s + s/2 inside (x1, x2) ⇔ x ∈ (x1/s − 0.5, x2/s − 0.5); widen by one cell.
            let lo = |v: F| ((v.f64() / s - 0.5).floor() - 1.0).max(0.0) as usize;
            let hi = |v: F, n: usize| (((v.f64() / s - 0.5).ceil() + 1.0).max(-1.0) as isize).min(n as isize - 1);
            let (x0, y0) = (lo(b[0]), lo(b[1]));
            let (x1, y1) = (hi(b[2], lv.w), hi(b[3], lv.h));
            if x1 < 0 || y1 < 0 || x0 > x1 as usize {
                continue;
            }
            visit(li, x0..=(x1 as usize), y0..=(y1 as usize));
        }
    }
}

/// `dist2bbox`: distances (l, t, r, b) from an anchor to box corners; xyxy, or centre/size when `xywh`.
#[inline]
pub fn dist2bbox<F: Real>(d: [F; 4], a: [F; 2], xywh: bool) -> [F; 4] {
    let (x1, y1, x2, y2) = (a[0] - d[0], a[1] - d[1], a[0] + d[2], a[1] + d[3]);
    if xywh {
        [(x1 + x2) / F::c(2.0), (y1 + y2) / F::c(2.0), x2 - x1, y2 - y1]
    } else {
        [x1, y1, x2, y2]
    }
}

/// `bbox2dist`: (ax − x1, ay − y1, x2 − ax, y2 − ay), each clamped to [0, reg_max − 0.01].
#[inline]
pub fn bbox2dist<F: Real>(a: [F; 2], b: [F; 4], reg_max: f64) -> [F; 4] {
    let hi = F::c(reg_max - 0.01);
    let c = |v: F| v.max(F::zero()).min(hi);
    [c(a[0] - b[0]), c(a[1] - b[1]), c(b[2] - a[0]), c(b[3] - a[1])]
}

/// `xywh2xyxy`: (cx, cy, w, h) → (x1, y1, x2, y2), half sizes first as the reference does.
#[inline]
pub fn xywh2xyxy<F: Real>(b: [F; 4]) -> [F; 4] {
    let (hw, hh) = (b[2] / F::c(2.0), b[3] / F::c(2.0));
    [b[0] - hw, b[1] - hh, b[0] + hw, b[1] + hh]
}

/// Strict centre-in-box test of the axis-aligned assigner (docs/spec.md §7 step 1).
#[inline]
pub fn center_in_box<F: Real>(p: [F; 2], b: [F; 4], eps: F) -> bool {
    let m = (p[0] - b[0]).min(p[1] - b[1]).min(b[2] - p[0]).min(b[3] - p[1]);
    m > eps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_and_near_cover_exactly_the_inside_anchors() {
        let grid = AnchorGrid::new(&[(12, 16), (6, 8), (3, 4)], &[8.0, 16.0, 32.0]);
        assert_eq!(grid.num_anchors, 192 + 48 + 12);
        for a in [0, 5, 191, 192, 239, 240, 251] {
            let p = grid.locate(a);
            assert_eq!(grid.levels[p.level].offset + p.cell, a);
        }
        let b = [13.0f64, 7.5, 77.0, 40.0];
        let mut near = vec![false; grid.num_anchors];
        grid.for_each_near(b, |a, _| near[a] = true);
        for (a, &visited) in near.iter().enumerate() {
            let p = grid.pixel_point::<f64>(grid.locate(a));
            if center_in_box(p, b, 1e-9) {
                assert!(visited, "anchor {a} inside but not visited");
            }
        }
    }
}
