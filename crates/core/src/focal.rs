//! VarifocalLoss and FocalLoss (docs/spec.md §8.1, §8.2): not used by the YOLO losses (RT-DETR uses them),
//! offered with their gradients. Both reduce as `mean(axis 1).sum()`.

use crate::error::{LossError, Result};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

/// Size of axis 1 (the mean axis) of a rank ≥ 2 tensor.
fn mean_axis<F: Real>(t: &TensorRef<F>, name: &str) -> Result<usize> {
    t.check_len(name)?;
    if t.shape.len() < 2 || t.shape[1] == 0 {
        return Err(LossError::shape(format!(
            "{name}: expected a tensor of rank ≥ 2 with a non-empty axis 1, got shape {}",
            fmt_shape(t.shape)
        )));
    }
    t.check_finite(name)?;
    Ok(t.shape[1])
}

fn same_shape<F: Real>(a: &TensorRef<F>, b: &TensorRef<F>, name: &str) -> Result<()> {
    b.check_len(name)?;
    if a.shape != b.shape {
        return Err(LossError::shape(format!(
            "{name}: expected shape {} like the predictions, got {}",
            fmt_shape(a.shape),
            fmt_shape(b.shape)
        )));
    }
    b.check_finite(name)
}

/// (BCE(x, t), σ(x)) with the stable form.
#[inline]
fn bce<F: Real>(x: F, t: F) -> (F, F) {
    let e = (-x.abs()).exp();
    let inv = F::one() / (F::one() + e);
    (x.max(F::zero()) - x * t + e.ln_1p(), if x >= F::zero() { inv } else { e * inv })
}

/// VarifocalLoss.forward(pred_score, gt_score, label): the loss and its gradients w.r.t. `pred_score`
/// and `gt_score` (the weight α·σ(p)^γ·(1 − label) + q·label is not detached).
pub fn varifocal_loss<F: Real>(
    pred: TensorRef<F>,
    gt_score: TensorRef<F>,
    label: TensorRef<F>,
    gamma: f64,
    alpha: f64,
) -> Result<(F, Vec<F>, Vec<F>)> {
    let n1 = mean_axis(&pred, "pred_score")?;
    same_shape(&pred, &gt_score, "gt_score")?;
    same_shape(&pred, &label, "label")?;
    let (g, a) = (F::c(gamma), F::c(alpha));
    let inv = F::one() / F::from_usize_(n1);
    let mut total = 0.0f64;
    let mut gp = vec![F::zero(); pred.data.len()];
    let mut gq = vec![F::zero(); pred.data.len()];
    for i in 0..pred.data.len() {
        let (p, q, l) = (pred.data[i], gt_score.data[i], label.data[i]);
        let (b, s) = bce(p, q);
        let sg = s.powf(g);
        let w = a * sg * (F::one() - l) + q * l;
        total += (b * w).f64();
        gp[i] = (w * (s - q) + b * a * g * sg * (F::one() - s) * (F::one() - l)) * inv;
        gq[i] = (-p * w + b * l) * inv;
    }
    Ok((F::c(total / n1 as f64), gp, gq))
}

/// FocalLoss.forward(pred, label): the loss and its gradient w.r.t. `pred` (the modulating factor
/// (1 − p_t)^γ is not detached). `alpha ≤ 0` disables the α factor, as the reference does.
pub fn focal_loss<F: Real>(pred: TensorRef<F>, label: TensorRef<F>, gamma: f64, alpha: f64) -> Result<(F, Vec<F>)> {
    let n1 = mean_axis(&pred, "pred")?;
    same_shape(&pred, &label, "label")?;
    let g = F::c(gamma);
    let inv = F::one() / F::from_usize_(n1);
    let mut total = 0.0f64;
    let mut gp = vec![F::zero(); pred.data.len()];
    for (i, gpi) in gp.iter_mut().enumerate() {
        let (x, y) = (pred.data[i], label.data[i]);
        let (b, s) = bce(x, y);
        let pt = y * s + (F::one() - y) * (F::one() - s);
        let base = F::one() - pt;
        let mf = base.powf(g);
        let af = if alpha > 0.0 { y * F::c(alpha) + (F::one() - y) * (F::one() - F::c(alpha)) } else { F::one() };
        total += (b * mf * af).f64();
        // ∂p_t/∂x = (2y − 1)·σ(1 − σ); ∂mf/∂x = −γ·(1 − p_t)^(γ−1)·∂p_t/∂x (0 where the base is 0).
        let dpt = (y + y - F::one()) * s * (F::one() - s);
        let dmf = if base > F::zero() { -g * base.powf(g - F::one()) * dpt } else { F::zero() };
        *gpi = ((s - y) * mf + b * dmf) * af * inv;
    }
    Ok((F::c(total / n1 as f64), gp))
}
