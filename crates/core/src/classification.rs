//! v8ClassificationLoss (docs/spec.md §12): mean cross entropy over the batch, not multiplied by B.

use crate::error::{LossError, Result};
use crate::loss::{GradBufs, LossValues, TaskLoss};
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

#[derive(Debug, Clone, Default)]
pub struct V8ClassificationLoss;

impl V8ClassificationLoss {
    pub fn new() -> Self {
        Self
    }
}

/// The logits `[B, nc]` and the class ids `[B]`; loss `[1]`, items `[1]`, gradient `[logits]` = (softmax − onehot)/B.
impl<F: Real> TaskLoss<F> for V8ClassificationLoss {
    type Preds<'a> = TensorRef<'a, F>;
    type Batch<'a> = TensorRef<'a, F>;

    fn run(&self, logits: TensorRef<F>, cls: &TensorRef<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let (b, nc, classes) = checked_inputs(&logits, cls)?;
        let mut grad = grads.first_mut();
        let mut total = 0.0f64;
        let inv_b = F::one() / F::from_usize_(b);
        for (i, (row, &j)) in logits.data.chunks(nc).zip(&classes).enumerate() {
            let m = row.iter().copied().fold(F::neg_infinity(), F::max);
            let sum: F = row.iter().map(|&z| (z - m).exp()).sum();
            total += (m + sum.ln() - row[j]).f64();
            if let Some(grad) = grad.as_deref_mut() {
                let g = &mut grad[i * nc..(i + 1) * nc];
                for (gk, &z) in g.iter_mut().zip(row) {
                    *gk = (z - m).exp() / sum * inv_b;
                }
                g[j] -= inv_b;
            }
        }
        let loss = F::c(total / b as f64);
        Ok((vec![loss], vec![loss]))
    }
}

/// The checks of the loss, in its order and with its messages: `[B, nc]` logits (non-empty), one class id per image,
/// both finite, every class id an integer in `[0, nc)`. Returns B, nc and the class index of each image (shared with
/// the CUDA backend, so that both refuse alike).
pub fn checked_inputs<F: Real>(logits: &TensorRef<F>, cls: &TensorRef<F>) -> Result<(usize, usize, Vec<usize>)> {
    logits.check_rank("preds", 2, "[B, nc] logits")?;
    let (b, nc) = (logits.shape[0], logits.shape[1]);
    if b == 0 || nc == 0 {
        return Err(LossError::shape(format!(
            "preds: expected a non-empty [B, nc] tensor, got {}",
            fmt_shape(logits.shape)
        )));
    }
    cls.check_len("batch.cls")?;
    if cls.data.len() != b || !(cls.shape.len() == 1 || (cls.shape.len() == 2 && cls.shape[1] == 1)) {
        return Err(LossError::shape(format!(
            "batch.cls: expected shape [{b}] (one class id per image), got {}",
            fmt_shape(cls.shape)
        )));
    }
    logits.check_finite("preds")?;
    cls.check_finite("batch.cls")?;
    let class_index = |(i, &c): (usize, &F)| {
        if c < F::zero() || c.fract() != F::zero() || c >= F::from_usize_(nc) {
            return Err(LossError::label(format!(
                "batch.cls[{i}]: expected an integer class id in [0, {nc}), got {c}"
            )));
        }
        Ok(c.to_usize().unwrap_or(0))
    };
    let classes = cls.data.iter().enumerate().map(class_index).collect::<Result<_>>()?;
    Ok((b, nc, classes))
}
