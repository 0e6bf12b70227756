//! `bbox_iou` of the reference (docs/spec.md §6.2): IoU, GIoU, DIoU and CIoU, with the exact gradient
//! autograd produces (α of CIoU held constant, min/max ties split half/half, the intersection clamp
//! blocking gradient at exactly 0: PyTorch 2.15's clamp passes gradient only strictly inside its
//! bounds, which the reference fixtures confirm; docs/spec.md §6.2 and §D3).

use crate::real::Real;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IouKind {
    Iou,
    GIoU,
    DIoU,
    CIoU,
}

impl IouKind {
    /// The reference's flag precedence: CIoU, then DIoU, then GIoU.
    pub fn from_flags(giou: bool, diou: bool, ciou: bool) -> Self {
        if ciou {
            IouKind::CIoU
        } else if diou {
            IouKind::DIoU
        } else if giou {
            IouKind::GIoU
        } else {
            IouKind::Iou
        }
    }
}

/// The eps of `bbox_iou`'s signature, used by every caller in the losses.
pub const IOU_EPS: f64 = 1e-7;

/// Value of `bbox_iou(box1, box2, xywh, kind)` for one pair of boxes.
#[inline]
pub fn bbox_iou<F: Real>(box1: [F; 4], box2: [F; 4], xywh: bool, kind: IouKind, eps: F) -> F {
    iou_forward(box1, box2, xywh, kind, eps, None, None).value
}

/// atan(w/h) of an xyxy box as CIoU computes it (eps on the height): cache it for boxes met often.
#[inline]
pub fn aspect_atan<F: Real>(b: [F; 4], eps: F) -> F {
    ((b[2] - b[0]) / (b[3] - b[1] + eps)).atan()
}

/// CIoU of two xyxy boxes given their [`aspect_atan`]s: the assigner meets each box many times.
#[inline]
pub fn ciou_with_atans<F: Real>(box1: [F; 4], box2: [F; 4], atan1: F, atan2: F, eps: F) -> F {
    iou_forward(box1, box2, false, IouKind::CIoU, eps, None, Some((atan1, atan2))).value
}

/// CIoU's α = v / (v − IoU + 1 + eps) for a pair; autograd treats it as a constant.
pub fn ciou_alpha<F: Real>(box1: [F; 4], box2: [F; 4], xywh: bool, eps: F) -> F {
    iou_forward(box1, box2, xywh, IouKind::CIoU, eps, None, None).alpha
}

/// Value and the gradients `up · ∂iou/∂box1`, `up · ∂iou/∂box2`.
#[inline]
pub fn bbox_iou_grad<F: Real>(
    box1: [F; 4],
    box2: [F; 4],
    xywh: bool,
    kind: IouKind,
    eps: F,
    up: F,
) -> (F, [F; 4], [F; 4]) {
    bbox_iou_grad_alpha(box1, box2, xywh, kind, eps, up, None)
}

/// As [`bbox_iou_grad`], with CIoU's α supplied instead of computed (`None`: computed). Since autograd
/// holds α constant, freezing it turns the value into the function whose derivative the gradient is,
/// which is what finite-difference tests need.
#[inline]
pub fn bbox_iou_grad_alpha<F: Real>(
    box1: [F; 4],
    box2: [F; 4],
    xywh: bool,
    kind: IouKind,
    eps: F,
    up: F,
    alpha: Option<F>,
) -> (F, [F; 4], [F; 4]) {
    let fw = iou_forward(box1, box2, xywh, kind, eps, alpha, None);
    let (g1, g2) = iou_backward(&fw, xywh, kind, up);
    (fw.value, g1, g2)
}

/// Every intermediate the backward pass needs.
struct IouForward<F> {
    // Corners of both boxes, xyxy.
    b1: [F; 4],
    b2: [F; 4],
    w1: F,
    h1: F,
    w2: F,
    h2: F,
    iw_raw: F,
    ih_raw: F,
    iw: F,
    ih: F,
    inter: F,
    union: F,
    cw: F,
    ch: F,
    c2: F,
    rho2: F,
    /// atan(w2/h2) − atan(w1/h1)
    datan: F,
    alpha: F,
    c_area: F,
    value: F,
}

#[inline(always)]
fn four_over_pi2<F: Real>() -> F {
    F::c(4.0 / (std::f64::consts::PI * std::f64::consts::PI))
}

#[inline(always)]
fn iou_forward<F: Real>(
    box1: [F; 4],
    box2: [F; 4],
    xywh: bool,
    kind: IouKind,
    eps: F,
    alpha: Option<F>,
    atans: Option<(F, F)>,
) -> IouForward<F> {
    let two = F::c(2.0);
    let (b1, b2, w1, h1, w2, h2);
    if xywh {
        let (hw1, hh1, hw2, hh2) = (box1[2] / two, box1[3] / two, box2[2] / two, box2[3] / two);
        b1 = [box1[0] - hw1, box1[1] - hh1, box1[0] + hw1, box1[1] + hh1];
        b2 = [box2[0] - hw2, box2[1] - hh2, box2[0] + hw2, box2[1] + hh2];
        (w1, h1, w2, h2) = (box1[2], box1[3], box2[2], box2[3]);
    } else {
        b1 = box1;
        b2 = box2;
        w1 = b1[2] - b1[0];
        h1 = b1[3] - b1[1] + eps;
        w2 = b2[2] - b2[0];
        h2 = b2[3] - b2[1] + eps;
    }
    let iw_raw = b1[2].min(b2[2]) - b1[0].max(b2[0]);
    let ih_raw = b1[3].min(b2[3]) - b1[1].max(b2[1]);
    let iw = iw_raw.max(F::zero());
    let ih = ih_raw.max(F::zero());
    let inter = iw * ih;
    let union = w1 * h1 + w2 * h2 - inter + eps;
    let iou = inter / union;
    let mut f = IouForward {
        b1,
        b2,
        w1,
        h1,
        w2,
        h2,
        iw_raw,
        ih_raw,
        iw,
        ih,
        inter,
        union,
        cw: F::zero(),
        ch: F::zero(),
        c2: F::zero(),
        rho2: F::zero(),
        datan: F::zero(),
        alpha: F::zero(),
        c_area: F::zero(),
        value: iou,
    };
    if kind == IouKind::Iou {
        return f;
    }
    f.cw = b1[2].max(b2[2]) - b1[0].min(b2[0]);
    f.ch = b1[3].max(b2[3]) - b1[1].min(b2[1]);
    match kind {
        IouKind::CIoU | IouKind::DIoU => {
            f.c2 = f.cw * f.cw + f.ch * f.ch + eps;
            let dx = b2[0] + b2[2] - b1[0] - b1[2];
            let dy = b2[1] + b2[3] - b1[1] - b1[3];
            f.rho2 = (dx * dx + dy * dy) / F::c(4.0);
            if kind == IouKind::CIoU {
                let (a1, a2) = atans.unwrap_or_else(|| ((w1 / h1).atan(), (w2 / h2).atan()));
                f.datan = a2 - a1;
                let v = four_over_pi2::<F>() * f.datan * f.datan;
                f.alpha = alpha.unwrap_or_else(|| v / (v - iou + (F::one() + eps)));
                f.value = iou - (f.rho2 / f.c2 + v * f.alpha);
            } else {
                f.value = iou - f.rho2 / f.c2;
            }
        }
        IouKind::GIoU => {
            f.c_area = f.cw * f.ch + eps;
            f.value = iou - (f.c_area - f.union) / f.c_area;
        }
        IouKind::Iou => unreachable!(),
    }
    f
}

/// Gradient split of `min(a, b)`: all to the smaller one, half/half on a tie (autograd's rule).
#[inline(always)]
fn min_split<F: Real>(a: F, b: F, g: F) -> (F, F) {
    if a < b {
        (g, F::zero())
    } else if b < a {
        (F::zero(), g)
    } else {
        let h = g * F::c(0.5);
        (h, h)
    }
}

/// Gradient split of `max(a, b)`: all to the larger one, half/half on a tie.
#[inline(always)]
fn max_split<F: Real>(a: F, b: F, g: F) -> (F, F) {
    if a > b {
        (g, F::zero())
    } else if b > a {
        (F::zero(), g)
    } else {
        let h = g * F::c(0.5);
        (h, h)
    }
}

#[inline(always)]
fn iou_backward<F: Real>(f: &IouForward<F>, xywh: bool, kind: IouKind, up: F) -> ([F; 4], [F; 4]) {
    let z = F::zero();
    let (b1, b2) = (f.b1, f.b2);
    // Gradients w.r.t. the xyxy corners and the (w, h) variables of each box.
    let mut g1 = [z; 4];
    let mut g2 = [z; 4];
    let (mut gw1, mut gh1, mut gw2, mut gh2) = (z, z, z, z);

    let mut g_iou = up;
    let mut g_union = z;
    match kind {
        IouKind::Iou => {}
        IouKind::CIoU | IouKind::DIoU => {
            // value = iou − rho2/c2 − [v·α]
            let g_rho2 = -up / f.c2;
            let g_c2 = up * f.rho2 / (f.c2 * f.c2);
            let g_cw = g_c2 * F::c(2.0) * f.cw;
            let g_ch = g_c2 * F::c(2.0) * f.ch;
            enclosing_backward(&mut g1, &mut g2, b1, b2, g_cw, g_ch);
            let dx = b2[0] + b2[2] - b1[0] - b1[2];
            let dy = b2[1] + b2[3] - b1[1] - b1[3];
            let gdx = g_rho2 * dx / F::c(2.0);
            let gdy = g_rho2 * dy / F::c(2.0);
            g2[0] += gdx;
            g2[2] += gdx;
            g1[0] -= gdx;
            g1[2] -= gdx;
            g2[1] += gdy;
            g2[3] += gdy;
            g1[1] -= gdy;
            g1[3] -= gdy;
            if kind == IouKind::CIoU {
                // v = k·datan²; α constant.
                let g_v = -up * f.alpha;
                let g_datan = g_v * four_over_pi2::<F>() * F::c(2.0) * f.datan;
                // d atan(w/h)/dw = h/(w²+h²), d/dh = −w/(w²+h²)
                let d2 = f.w2 * f.w2 + f.h2 * f.h2;
                let d1 = f.w1 * f.w1 + f.h1 * f.h1;
                gw2 += g_datan * f.h2 / d2;
                gh2 -= g_datan * f.w2 / d2;
                gw1 -= g_datan * f.h1 / d1;
                gh1 += g_datan * f.w1 / d1;
            }
        }
        IouKind::GIoU => {
            // value = iou − (c_area − union)/c_area = iou − 1 + union/c_area
            g_union += up / f.c_area;
            let g_carea = -up * f.union / (f.c_area * f.c_area);
            enclosing_backward(&mut g1, &mut g2, b1, b2, g_carea * f.ch, g_carea * f.cw);
        }
    }
    // iou = inter / union
    let mut g_inter = g_iou / f.union;
    g_union -= g_iou * f.inter / (f.union * f.union);
    g_iou = z;
    let _ = g_iou;
    // union = w1·h1 + w2·h2 − inter + eps
    gw1 += g_union * f.h1;
    gh1 += g_union * f.w1;
    gw2 += g_union * f.h2;
    gh2 += g_union * f.w2;
    g_inter -= g_union;
    // inter = clamp(iw_raw, 0)·clamp(ih_raw, 0); the clamp passes gradient where its input is > 0.
    let g_iw = if f.iw_raw > z { g_inter * f.ih } else { z };
    let g_ih = if f.ih_raw > z { g_inter * f.iw } else { z };
    // iw_raw = min(x2¹, x2²) − max(x1¹, x1²)
    let (a, b) = min_split(b1[2], b2[2], g_iw);
    g1[2] += a;
    g2[2] += b;
    let (a, b) = max_split(b1[0], b2[0], g_iw);
    g1[0] -= a;
    g2[0] -= b;
    let (a, b) = min_split(b1[3], b2[3], g_ih);
    g1[3] += a;
    g2[3] += b;
    let (a, b) = max_split(b1[1], b2[1], g_ih);
    g1[1] -= a;
    g2[1] -= b;

    if xywh {
        // corners = c ± size/2; the size also enters directly as (w, h).
        (to_xywh_grad(g1, gw1, gh1), to_xywh_grad(g2, gw2, gh2))
    } else {
        // w = x2 − x1, h = y2 − y1 + eps
        g1[2] += gw1;
        g1[0] -= gw1;
        g1[3] += gh1;
        g1[1] -= gh1;
        g2[2] += gw2;
        g2[0] -= gw2;
        g2[3] += gh2;
        g2[1] -= gh2;
        (g1, g2)
    }
}

/// Backward of cw = max(x2¹, x2²) − min(x1¹, x1²), ch likewise.
#[inline(always)]
fn enclosing_backward<F: Real>(g1: &mut [F; 4], g2: &mut [F; 4], b1: [F; 4], b2: [F; 4], g_cw: F, g_ch: F) {
    let (a, b) = max_split(b1[2], b2[2], g_cw);
    g1[2] += a;
    g2[2] += b;
    let (a, b) = min_split(b1[0], b2[0], g_cw);
    g1[0] -= a;
    g2[0] -= b;
    let (a, b) = max_split(b1[3], b2[3], g_ch);
    g1[3] += a;
    g2[3] += b;
    let (a, b) = min_split(b1[1], b2[1], g_ch);
    g1[1] -= a;
    g2[1] -= b;
}

/// Chain rule from xyxy-corner gradients plus direct (w, h) gradients to (cx, cy, w, h).
#[inline(always)]
fn to_xywh_grad<F: Real>(gc: [F; 4], gw: F, gh: F) -> [F; 4] {
    let half = F::c(0.5);
    [gc[0] + gc[2], gc[1] + gc[3], gw + (gc[2] - gc[0]) * half, gh + (gc[3] - gc[1]) * half]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences in f64 against the analytic gradient, away from kinks.
    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let cases: [([f64; 4], [f64; 4]); 4] = [
            ([1.0, 2.0, 5.0, 7.0], [2.0, 1.5, 6.5, 6.0]),
            ([0.3, 0.1, 2.2, 1.9], [1.1, 0.7, 3.4, 2.8]),
            ([10.0, 10.0, 12.0, 13.0], [0.0, 0.0, 4.0, 3.0]), // disjoint
            ([1.0, 1.0, 4.0, 3.0], [0.5, 1.5, 3.5, 2.5]),     // nested in y
        ];
        for xywh in [false, true] {
            for kind in [IouKind::Iou, IouKind::GIoU, IouKind::DIoU, IouKind::CIoU] {
                for (a, b) in cases {
                    let (a, b) = if xywh {
                        (
                            [(a[0] + a[2]) / 2.0, (a[1] + a[3]) / 2.0, a[2] - a[0], a[3] - a[1]],
                            [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, b[2] - b[0], b[3] - b[1]],
                        )
                    } else {
                        (a, b)
                    };
                    let up = 0.7;
                    let (_, g1, g2) = bbox_iou_grad(a, b, xywh, kind, 1e-7, up);
                    for i in 0..8 {
                        let h = 1e-6;
                        let (mut ap, mut bp, mut am, mut bm) = (a, b, a, b);
                        if i < 4 {
                            ap[i] += h;
                            am[i] -= h;
                        } else {
                            bp[i - 4] += h;
                            bm[i - 4] -= h;
                        }
                        // α is a constant for autograd: hold it at its value for the unperturbed pair.
                        let fd = (value_alpha_fixed(ap, bp, a, b, xywh, kind)
                            - value_alpha_fixed(am, bm, a, b, xywh, kind))
                            / (2.0 * h)
                            * up;
                        let an = if i < 4 { g1[i] } else { g2[i - 4] };
                        assert!(
                            (fd - an).abs() < 1e-6 * (1.0 + fd.abs()),
                            "{kind:?} xywh={xywh} {a:?} {b:?} coord {i}: fd {fd} analytic {an}"
                        );
                    }
                }
            }
        }
    }

    /// The value with CIoU's α frozen at the one of (a0, b0).
    fn value_alpha_fixed(a: [f64; 4], b: [f64; 4], a0: [f64; 4], b0: [f64; 4], xywh: bool, kind: IouKind) -> f64 {
        let alpha = (kind == IouKind::CIoU).then(|| ciou_alpha(a0, b0, xywh, 1e-7));
        bbox_iou_grad_alpha(a, b, xywh, kind, 1e-7, 0.0, alpha).0
    }

    #[test]
    fn min_max_ties_split_half() {
        // Identical boxes: every min/max is a tie; IoU gradient of equal boxes is symmetric.
        let b = [1.0f64, 1.0, 3.0, 4.0];
        let (_, g1, g2) = bbox_iou_grad(b, b, false, IouKind::Iou, 1e-7, 1.0);
        for i in 0..4 {
            assert!((g1[i] - g2[i]).abs() < 1e-12);
        }
    }
}
