//! Rotated-box geometry (docs/spec.md §5 dist2rbox, §7): the rotated decode and its gradient, corners, the
//! rotated centre-in-box test.

use crate::real::Real;

/// `dist2rbox`: distances (l, t, r, b) in the box's rotated frame, angle θ and the anchor → (cx, cy, w, h).
#[inline]
pub fn dist2rbox<F: Real>(d: [F; 4], theta: F, anchor: [F; 2]) -> [F; 4] {
    let two = F::c(2.0);
    let (cos, sin) = (theta.cos(), theta.sin());
    let (xf, yf) = ((d[2] - d[0]) / two, (d[3] - d[1]) / two);
    [xf * cos - yf * sin + anchor[0], xf * sin + yf * cos + anchor[1], d[0] + d[2], d[1] + d[3]]
}

/// Gradient of Σ up·dist2rbox(d, θ, anchor) with respect to the distances and the angle.
#[inline]
pub fn dist2rbox_grad<F: Real>(d: [F; 4], theta: F, up: [F; 4]) -> ([F; 4], F) {
    let two = F::c(2.0);
    let (cos, sin) = (theta.cos(), theta.sin());
    let (xf, yf) = ((d[2] - d[0]) / two, (d[3] - d[1]) / two);
    let g_xf = up[0] * cos + up[1] * sin;
    let g_yf = up[1] * cos - up[0] * sin;
    let g_theta = up[0] * (-xf * sin - yf * cos) + up[1] * (xf * cos - yf * sin);
    ([up[2] - g_xf / two, up[3] - g_yf / two, up[2] + g_xf / two, up[3] + g_yf / two], g_theta)
}

/// The four corners of an (cx, cy, w, h, θ) box in the reference's order P1..P4 (docs/spec.md §5).
#[inline]
pub fn xywhr_corners<F: Real>(b: [F; 5]) -> [[F; 2]; 4] {
    let two = F::c(2.0);
    let (cos, sin) = (b[4].cos(), b[4].sin());
    let v1 = [b[2] / two * cos, b[2] / two * sin];
    let v2 = [-b[3] / two * sin, b[3] / two * cos];
    let (c, v) = ([b[0], b[1]], [v1, v2]);
    let p = |s1: F, s2: F| [c[0] + s1 * v[0][0] + s2 * v[1][0], c[1] + s1 * v[0][1] + s2 * v[1][1]];
    let (one, m1) = (F::one(), -F::one());
    // (ctr ± v1) ± v2, evaluated left to right like the reference (the ±1 factors are exact).
    [p(one, one), p(one, m1), p(m1, m1), p(m1, one)]
}

/// Rotated centre-in-box of the OBB assigner (docs/spec.md §7): with e1 = P2 − P1, e2 = P4 − P1, q = p − P1,
/// inside iff 0 ≤ q·e1 ≤ |e1|² and 0 ≤ q·e2 ≤ |e2|² (inclusive, no eps).
#[inline]
pub fn center_in_rotated_box<F: Real>(p: [F; 2], b: [F; 5]) -> bool {
    let k = xywhr_corners(b);
    let (a, bb, d) = (k[0], k[1], k[3]);
    let ab = [bb[0] - a[0], bb[1] - a[1]];
    let ad = [d[0] - a[0], d[1] - a[1]];
    let ap = [p[0] - a[0], p[1] - a[1]];
    let n_ab = ab[0] * ab[0] + ab[1] * ab[1];
    let n_ad = ad[0] * ad[0] + ad[1] * ad[1];
    let q_ab = ap[0] * ab[0] + ap[1] * ab[1];
    let q_ad = ap[0] * ad[0] + ap[1] * ad[1];
    let z = F::zero();
    q_ab >= z && q_ab <= n_ab && q_ad >= z && q_ad <= n_ad
}

/// Axis-aligned bounding rectangle (x1, y1, x2, y2) of a rotated box's corners.
#[inline]
pub fn corner_bounds<F: Real>(b: [F; 5]) -> [F; 4] {
    let k = xywhr_corners(b);
    let mut r = [k[0][0], k[0][1], k[0][0], k[0][1]];
    for c in &k[1..] {
        r[0] = r[0].min(c[0]);
        r[1] = r[1].min(c[1]);
        r[2] = r[2].max(c[0]);
        r[3] = r[3].max(c[1]);
    }
    r
}
