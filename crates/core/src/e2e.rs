//! E2EDetectLoss (SPEC §14): a one-to-many (top-10) and a one-to-one (top-1) v8DetectionLoss on the
//! two branches, summed with equal weight.

use crate::detection::{DetBatch, DetectionConfig, LossOutput, V8DetectionLoss};
use crate::error::Result;
use crate::real::Real;
use crate::tensor::TensorRef;

#[derive(Debug, Clone)]
pub struct E2EDetectLoss {
    pub one2many: V8DetectionLoss,
    pub one2one: V8DetectionLoss,
}

impl E2EDetectLoss {
    /// `cfg.tal_topk` is ignored: the branches use 10 and 1 as the reference does.
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self {
            one2many: V8DetectionLoss::new(DetectionConfig { tal_topk: 10, ..cfg.clone() })?,
            one2one: V8DetectionLoss::new(DetectionConfig { tal_topk: 1, ..cfg })?,
        })
    }

    pub fn call<F: Real>(&self, one2many: &[TensorRef<F>], one2one: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        Self::sum(self.one2many.call(one2many, batch).map_err(|e| prefix(e, "one2many"))?, self.one2one.call(one2one, batch).map_err(|e| prefix(e, "one2one"))?)
    }

    /// Gradients: the one2many levels, then the one2one levels.
    pub fn value_and_grad<F: Real>(&self, one2many: &[TensorRef<F>], one2one: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        Self::sum(
            self.one2many.value_and_grad(one2many, batch).map_err(|e| prefix(e, "one2many"))?,
            self.one2one.value_and_grad(one2one, batch).map_err(|e| prefix(e, "one2one"))?,
        )
    }

    fn sum<F: Real>(a: LossOutput<F>, b: LossOutput<F>) -> Result<LossOutput<F>> {
        let add = |x: &[F], y: &[F]| x.iter().zip(y).map(|(&p, &q)| p + q).collect::<Vec<F>>();
        let mut grads = a.grads;
        grads.extend(b.grads);
        Ok(LossOutput { loss: add(&a.loss, &b.loss), loss_items: add(&a.loss_items, &b.loss_items), grads })
    }
}

/// Names the branch in an error about `preds`: `preds[0]` → `preds.one2many[0]`.
fn prefix(mut e: crate::error::LossError, branch: &str) -> crate::error::LossError {
    e.message = e.message.replacen("preds", &format!("preds.{branch}"), 1);
    e
}
