//! `probiou` of the reference (docs/spec.md §6.3): the Hellinger-distance IoU surrogate of two oriented boxes
//! (cx, cy, w, h, θ), with the exact gradient autograd produces for both boxes.
//!
//! Each box is a Gaussian with covariance entries a·cos²θ + b·sin²θ, a·sin²θ + b·cos²θ, (a − b)·cosθ·sinθ
//! (a = w²/12, b = h²/12). The Bhattacharyya distance of the two Gaussians is clamped to [eps, 100],
//! the single-box determinants are clamped at 0 before their product's square root.
//!
//! Gradient rules (PyTorch 2.15, the oracle):
//! * `clamp` passes gradient only strictly inside its bounds (`min < x < max`), for the Bhattacharyya
//!   clamp and for the determinant clamps at 0 alike; outside it writes an exact 0 (a `where`, so an
//!   infinite or NaN upstream does not leak through).
//! * Divergence, documented: when the product P of the two clamped determinants is exactly 0 (a
//!   degenerate box: w = 0, h = 0, or a determinant rounded to ≤ 0), autograd's `sqrt` backward divides
//!   by 0 and the other box's w, h, θ gradients become NaN (0·∞), even when the upstream is 0. Here the
//!   path through √P contributes 0 instead, which is the exact partial derivative (√(0·d) does not
//!   depend on d). Everything else (centres, the t1/t2 terms, the numerator of t3) is unchanged.
//! * The forward value mirrors the reference including its NaN for degenerate inputs whose log
//!   argument goes negative (both boxes degenerate along the same direction); no gradient rule can
//!   make that meaningful, and the gradient is then NaN as in autograd.
//!
//! The arithmetic follows the reference's operation order so that f32 results round the same way.

use crate::real::Real;

/// The eps of `probiou`'s signature, used by the OBB loss and assigner.
pub const PROBIOU_EPS: f64 = 1e-7;

/// Gaussian covariance of one box and what its backward needs.
#[derive(Debug, Clone, Copy)]
struct Cov<F> {
    a: F,
    b: F,
    cos: F,
    sin: F,
    cos2: F,
    sin2: F,
    /// Σ_xx, Σ_yy, Σ_xy.
    sa: F,
    sb: F,
    sc: F,
}

#[inline(always)]
fn covariance<F: Real>(w: F, h: F, theta: F) -> Cov<F> {
    let twelve = F::c(12.0);
    let (a, b) = (w * w / twelve, h * h / twelve);
    let (cos, sin) = (theta.cos(), theta.sin());
    let (cos2, sin2) = (cos * cos, sin * sin);
    Cov { a, b, cos, sin, cos2, sin2, sa: a * cos2 + b * sin2, sb: a * sin2 + b * cos2, sc: (a - b) * cos * sin }
}

/// Gradients of one box's covariance entries back to (w, h, θ).
#[inline(always)]
fn covariance_backward<F: Real>(c: &Cov<F>, w: F, h: F, g_sa: F, g_sb: F, g_sc: F) -> [F; 3] {
    let two = F::c(2.0);
    let g_a = g_sa * c.cos2 + g_sb * c.sin2 + g_sc * c.cos * c.sin;
    let g_b = g_sa * c.sin2 + g_sb * c.cos2 - g_sc * c.cos * c.sin;
    let g_cos2 = g_sa * c.a + g_sb * c.b;
    let g_sin2 = g_sa * c.b + g_sb * c.a;
    let amb = c.a - c.b;
    let g_cos = two * c.cos * g_cos2 + g_sc * amb * c.sin;
    let g_sin = two * c.sin * g_sin2 + g_sc * amb * c.cos;
    let twelve = F::c(12.0);
    [g_a * two * w / twelve, g_b * two * h / twelve, c.cos * g_sin - c.sin * g_cos]
}

/// Every intermediate of the forward pass.
#[derive(Debug, Clone, Copy)]
struct Fwd<F> {
    c1: Cov<F>,
    c2: Cov<F>,
    dx: F,
    dy: F,
    sa: F,
    sb: F,
    sc: F,
    num1: F,
    num2: F,
    den: F,
    /// det of the summed covariance (den without eps), numerator of t3's ratio.
    n: F,
    d1: F,
    d2: F,
    d1c: F,
    d2c: F,
    sqrt_p: F,
    dd: F,
    q: F,
    bd_raw: F,
    bd: F,
    hd: F,
    value: F,
}

/// A box as the Gaussian probIoU sees it: centre, covariance and the covariance's determinant. The
/// assigner computes it once per GT and once per anchor instead of once per (GT, anchor) pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauss<F> {
    x: F,
    y: F,
    cov: Cov<F>,
    det: F,
}

#[inline(always)]
pub(crate) fn gauss<F: Real>(b: [F; 5]) -> Gauss<F> {
    let cov = covariance(b[2], b[3], b[4]);
    Gauss { x: b[0], y: b[1], cov, det: cov.sa * cov.sb - cov.sc * cov.sc }
}

/// `probiou` of two boxes given as [`Gauss`]; the same value as [`probiou`].
#[inline]
pub(crate) fn probiou_gauss<F: Real>(g1: &Gauss<F>, g2: &Gauss<F>, eps: F) -> F {
    forward_gauss(g1, g2, eps).value
}

#[inline(always)]
fn forward<F: Real>(o1: [F; 5], o2: [F; 5], eps: F) -> Fwd<F> {
    forward_gauss(&gauss(o1), &gauss(o2), eps)
}

#[inline(always)]
fn forward_gauss<F: Real>(g1: &Gauss<F>, g2: &Gauss<F>, eps: F) -> Fwd<F> {
    let z = F::zero();
    let (c1, c2) = (g1.cov, g2.cov);
    let (dx, dy) = (g1.x - g2.x, g1.y - g2.y);
    let (sa, sb, sc) = (c1.sa + c2.sa, c1.sb + c2.sb, c1.sc + c2.sc);
    let num1 = sa * (dy * dy) + sb * (dx * dx);
    let n = sa * sb - sc * sc;
    let den = n + eps;
    let t1 = num1 / den * F::c(0.25);
    let num2 = sc * (g2.x - g1.x) * (g1.y - g2.y);
    let t2 = num2 / den * F::c(0.5);
    let (d1, d2) = (g1.det, g2.det);
    let (d1c, d2c) = (d1.max(z), d2.max(z));
    let sqrt_p = (d1c * d2c).sqrt();
    let dd = F::c(4.0) * sqrt_p + eps;
    let q = n / dd + eps;
    let t3 = q.ln() * F::c(0.5);
    let bd_raw = t1 + t2 + t3;
    // torch.clamp propagates NaN; max/min of num_traits would swallow it.
    let bd = if bd_raw.is_nan() { bd_raw } else { bd_raw.max(eps).min(F::c(100.0)) };
    let hd = (F::one() - (-bd).exp() + eps).sqrt();
    Fwd {
        c1,
        c2,
        dx,
        dy,
        sa,
        sb,
        sc,
        num1,
        num2,
        den,
        n,
        d1,
        d2,
        d1c,
        d2c,
        sqrt_p,
        dd,
        q,
        bd_raw,
        bd,
        hd,
        value: F::one() - hd,
    }
}

/// `probiou(obb1, obb2)` for one pair of boxes (cx, cy, w, h, θ).
#[inline]
pub fn probiou<F: Real>(obb1: [F; 5], obb2: [F; 5], eps: F) -> F {
    forward(obb1, obb2, eps).value
}

/// Value and the gradients `up · ∂probiou/∂obb1`, `up · ∂probiou/∂obb2` (autograd's, see the module notes).
#[inline]
pub fn probiou_grad<F: Real>(obb1: [F; 5], obb2: [F; 5], eps: F, up: F) -> (F, [F; 5], [F; 5]) {
    let f = forward(obb1, obb2, eps);
    let (g1, g2) = backward(&f, obb1, obb2, eps, up);
    (f.value, g1, g2)
}

fn backward<F: Real>(f: &Fwd<F>, o1: [F; 5], o2: [F; 5], eps: F, up: F) -> ([F; 5], [F; 5]) {
    let z = F::zero();
    let (half, quarter, two) = (F::c(0.5), F::c(0.25), F::c(2.0));
    // iou = 1 − hd, hd = sqrt(1 − e^{−bd} + eps).
    let g_hd = -up;
    let g_bd = g_hd * half / f.hd * (-f.bd).exp();
    // clamp(eps, 100): strictly inside only.
    let g = if f.bd_raw > eps && f.bd_raw < F::c(100.0) { g_bd } else { z };
    if g == z {
        return ([z; 5], [z; 5]);
    }
    // t1 = num1/den·¼, t2 = num2/den·½.
    let g_num1 = g * quarter / f.den;
    let g_num2 = g * half / f.den;
    let mut g_n = -(g * quarter) * f.num1 / (f.den * f.den) - (g * half) * f.num2 / (f.den * f.den);
    // t3 = ½·ln(n/dd + eps), dd = 4·√P + eps.
    let g_q = g * half / f.q;
    g_n += g_q / f.dd;
    let g_dd = -g_q * f.n / (f.dd * f.dd);
    let g_sqrt_p = F::c(4.0) * g_dd;
    // √P with P = d1c·d2c; P = 0 gives the exact partial 0 (autograd: NaN), see the module notes.
    let (mut g_d1c, mut g_d2c) = (z, z);
    if f.sqrt_p > z {
        let g_p = g_sqrt_p * half / f.sqrt_p;
        g_d1c = g_p * f.d2c;
        g_d2c = g_p * f.d1c;
    }
    let g_d1 = if f.d1 > z { g_d1c } else { z };
    let g_d2 = if f.d2 > z { g_d2c } else { z };
    // n = sa·sb − sc², num1 = sa·dy² + sb·dx², num2 = sc·(x2 − x1)·(y1 − y2) = −sc·dx·dy.
    let g_sa = g_n * f.sb + g_num1 * f.dy * f.dy;
    let g_sb = g_n * f.sa + g_num1 * f.dx * f.dx;
    let g_sc = -two * f.sc * g_n - g_num2 * f.dx * f.dy;
    let g_dx = g_num1 * f.sb * two * f.dx - g_num2 * f.sc * f.dy;
    let g_dy = g_num1 * f.sa * two * f.dy - g_num2 * f.sc * f.dx;
    // Single-box determinants d = Σxx·Σyy − Σxy².
    let c1 = &f.c1;
    let c2 = &f.c2;
    let r1 = covariance_backward(c1, o1[2], o1[3], g_sa + g_d1 * c1.sb, g_sb + g_d1 * c1.sa, g_sc - two * c1.sc * g_d1);
    let r2 = covariance_backward(c2, o2[2], o2[3], g_sa + g_d2 * c2.sb, g_sb + g_d2 * c2.sa, g_sc - two * c2.sc * g_d2);
    ([g_dx, g_dy, r1[0], r1[1], r1[2]], [-g_dx, -g_dy, r2[0], r2[1], r2[2]])
}

/// `probiou(obb1, obb2, CIoU=True)`: probIoU − v·α with v = 4/π²·(atan(w2/h2) − atan(w1/h1))² (no eps)
/// and α = v / (v − probIoU + 1 + eps) held constant. Not used by the losses.
#[inline]
pub fn probiou_ciou<F: Real>(obb1: [F; 5], obb2: [F; 5], eps: F) -> F {
    probiou_ciou_grad(obb1, obb2, eps, F::zero(), None).0
}

/// The α autograd holds constant in [`probiou_ciou`].
pub fn probiou_ciou_alpha<F: Real>(obb1: [F; 5], obb2: [F; 5], eps: F) -> F {
    let iou = probiou(obb1, obb2, eps);
    let v = ciou_v(obb1, obb2);
    v / (v - iou + (F::one() + eps))
}

#[inline(always)]
fn ciou_v<F: Real>(o1: [F; 5], o2: [F; 5]) -> F {
    let d = (o2[2] / o2[3]).atan() - (o1[2] / o1[3]).atan();
    F::c(4.0 / (std::f64::consts::PI * std::f64::consts::PI)) * (d * d)
}

/// Value and gradients of [`probiou_ciou`]; `alpha` replaces the computed α (finite-difference tests).
pub fn probiou_ciou_grad<F: Real>(obb1: [F; 5], obb2: [F; 5], eps: F, up: F, alpha: Option<F>) -> (F, [F; 5], [F; 5]) {
    let f = forward(obb1, obb2, eps);
    let (mut g1, mut g2) = backward(&f, obb1, obb2, eps, up);
    let k = F::c(4.0 / (std::f64::consts::PI * std::f64::consts::PI));
    let (u1, u2) = (obb1[2] / obb1[3], obb2[2] / obb2[3]);
    let d = u2.atan() - u1.atan();
    let v = k * (d * d);
    let alpha = alpha.unwrap_or_else(|| v / (v - f.value + (F::one() + eps)));
    // ∂(−v·α)/∂d = −α·k·2d; atan′(u) = 1/(1 + u²); u = w/h.
    let g_d = -up * alpha * k * F::c(2.0) * d;
    let g_u2 = g_d / (F::one() + u2 * u2);
    let g_u1 = -g_d / (F::one() + u1 * u1);
    g1[2] += g_u1 / obb1[3];
    g1[3] -= g_u1 * obb1[2] / (obb1[3] * obb1[3]);
    g2[2] += g_u2 / obb2[3];
    g2[3] -= g_u2 * obb2[2] / (obb2[3] * obb2[3]);
    (f.value - v * alpha, g1, g2)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::Lcg;

    fn fd_check(
        f: &dyn Fn([f64; 5], [f64; 5]) -> f64,
        a: [f64; 5],
        b: [f64; 5],
        g1: [f64; 5],
        g2: [f64; 5],
        what: &str,
    ) {
        let h = 1e-6;
        for i in 0..10 {
            let (mut ap, mut am, mut bp, mut bm) = (a, a, b, b);
            if i < 5 {
                ap[i] += h;
                am[i] -= h;
            } else {
                bp[i - 5] += h;
                bm[i - 5] -= h;
            }
            let fd = (f(ap, bp) - f(am, bm)) / (2.0 * h);
            let an = if i < 5 { g1[i] } else { g2[i - 5] };
            assert!((fd - an).abs() < 1e-6 * (1.0 + fd.abs()), "{what} {a:?} {b:?} input {i}: fd {fd} analytic {an}");
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = Lcg(11);
        let eps = PROBIOU_EPS;
        let mut checked = 0;
        for _ in 0..400 {
            let a = [
                rng.next() * 10.0,
                rng.next() * 10.0,
                0.5 + rng.next() * 6.0,
                0.5 + rng.next() * 6.0,
                (rng.next() - 0.25) * std::f64::consts::PI,
            ];
            let b = [
                a[0] + (rng.next() - 0.5) * 6.0,
                a[1] + (rng.next() - 0.5) * 6.0,
                0.5 + rng.next() * 6.0,
                0.5 + rng.next() * 6.0,
                (rng.next() - 0.25) * std::f64::consts::PI,
            ];
            let f = forward(a, b, eps);
            // Skip points within finite-difference reach of the clamp bounds (non-differentiable there).
            if (f.bd_raw - eps).abs() < 1e-4 || (f.bd_raw - 100.0).abs() < 1e-4 {
                continue;
            }
            let up = 0.3 + rng.next();
            let (_, g1, g2) = probiou_grad(a, b, eps, up);
            fd_check(&|x, y| up * probiou(x, y, eps), a, b, g1, g2, "probiou");
            let alpha = probiou_ciou_alpha(a, b, eps);
            let (_, g1, g2) = probiou_ciou_grad(a, b, eps, up, None);
            fd_check(&|x, y| up * probiou_ciou_grad(x, y, eps, 0.0, Some(alpha)).0, a, b, g1, g2, "probiou CIoU");
            checked += 1;
        }
        assert!(checked > 300);
    }

    #[test]
    fn identical_boxes_and_symmetry() {
        let a = [3.0f64, 4.0, 2.0, 5.0, 0.3];
        // bd = clamp(≈0, eps, 100) = eps: the clamp blocks every gradient.
        let (v, g1, g2) = probiou_grad(a, a, PROBIOU_EPS, 1.0);
        assert!((v - (1.0 - (1.0 - (-PROBIOU_EPS).exp() + PROBIOU_EPS).sqrt())).abs() < 1e-12);
        assert_eq!((g1, g2), ([0.0; 5], [0.0; 5]));
        let b = [4.0f64, 3.5, 3.0, 1.0, -0.4];
        assert!((probiou(a, b, PROBIOU_EPS) - probiou(b, a, PROBIOU_EPS)).abs() < 1e-12);
        // Far apart: bd clamps at 100, no gradient.
        let c = [400.0f64, 3.5, 3.0, 1.0, -0.4];
        let (_, g1, g2) = probiou_grad(a, c, PROBIOU_EPS, 1.0);
        assert_eq!((g1, g2), ([0.0; 5], [0.0; 5]));
    }

    #[test]
    fn degenerate_box_gives_finite_gradient() {
        // w = 0: the box's determinant is 0 and clamped; autograd gives NaN to the other box's w, h, θ.
        let a = [3.0f64, 4.0, 0.0, 5.0, 0.3];
        let b = [3.5f64, 4.2, 2.0, 3.0, 0.1];
        let (v, g1, g2) = probiou_grad(a, b, PROBIOU_EPS, 1.0);
        assert!(v.is_finite());
        assert!(g1.iter().chain(&g2).all(|x| x.is_finite()), "{g1:?} {g2:?}");
        // Centre gradients are the ordinary ones (the √P path does not touch them).
        let h = 1e-6;
        let fd = (probiou([3.0 + h, 4.0, 0.0, 5.0, 0.3], b, PROBIOU_EPS)
            - probiou([3.0 - h, 4.0, 0.0, 5.0, 0.3], b, PROBIOU_EPS))
            / (2.0 * h);
        assert!((fd - g1[0]).abs() < 1e-6 * (1.0 + fd.abs()));
        // The same case in f32 against torch 2.15 autograd, which gives
        // grad obb1 = [9.6284e-05, 2.7810e-05, 0, -1.9339e-05, -1.6396e-05],
        // grad obb2 = [-9.6284e-05, -2.7810e-05, NaN, NaN, NaN]: equal where autograd is finite.
        let (_, g1, g2) =
            probiou_grad([3.0f32, 4.0, 0.0, 5.0, 0.3], [3.5f32, 4.2, 2.0, 3.0, 0.1], PROBIOU_EPS as f32, 1.0);
        let want1 = [9.6284e-05f32, 2.7810e-05, 0.0, -1.9339e-05, -1.6396e-05];
        for k in 0..5 {
            assert!((g1[k] - want1[k]).abs() <= 1e-3 * want1[k].abs() + 1e-9, "obb1[{k}]: {} vs {}", g1[k], want1[k]);
        }
        assert!((g2[0] + want1[0]).abs() < 1e-3 * want1[0].abs() && (g2[1] + want1[1]).abs() < 1e-3 * want1[1].abs());
        assert!(g2[2..].iter().all(|v| v.is_finite()));
    }
}
