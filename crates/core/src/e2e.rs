//! E2EDetectLoss (docs/spec.md §14): a one-to-many (top-10) and a one-to-one (top-1) v8DetectionLoss on the
//! two branches, summed with equal weight.

use crate::detection::{DetBatch, DetectionConfig, V8DetectionLoss};
use crate::error::Result;
use crate::loss::{GradBufs, LossValues, Predictions, TaskLoss};
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
        let (one2many, one2one) = Self::branch_configs(cfg);
        Ok(Self { one2many: V8DetectionLoss::new(one2many)?, one2one: V8DetectionLoss::new(one2one)? })
    }

    /// The configurations of the (one2many, one2one) branches: `cfg` with `tal_topk` 10 and 1 (validated by the
    /// branches' constructors, one2many first); public so that other backends build the same branches.
    pub fn branch_configs(cfg: DetectionConfig) -> (DetectionConfig, DetectionConfig) {
        (DetectionConfig { tal_topk: 10, ..cfg.clone() }, DetectionConfig { tal_topk: 1, ..cfg })
    }
}

/// The level tensors of the two branches, in the order of their gradients: the one2many levels, then the one2one
/// levels.
#[derive(Debug, Clone, Copy)]
pub struct E2EPreds<'a, F> {
    pub one2many: &'a [TensorRef<'a, F>],
    pub one2one: &'a [TensorRef<'a, F>],
}

impl<'a, F> Predictions<'a, F> for E2EPreds<'a, F> {
    fn tensors(&self) -> Vec<&'a [F]> {
        self.one2many.iter().chain(self.one2one).map(|t| t.data).collect()
    }
}

impl<F: Real> TaskLoss<F> for E2EDetectLoss {
    type Preds<'a> = E2EPreds<'a, F>;
    type Batch<'a> = DetBatch<'a, F>;

    fn run(&self, preds: E2EPreds<F>, batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        self.branches(preds, grads, |loss, feats, g| loss.run(feats, batch, g))
    }

    /// Each branch's own (V8DetectionLoss clears only its box channels).
    fn run_overwrite(&self, preds: E2EPreds<F>, batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        self.branches(preds, grads, |loss, feats, g| loss.run_overwrite(feats, batch, g))
    }
}

impl E2EDetectLoss {
    /// `run` on each branch with its own gradient buffers, one2many first; the values summed.
    fn branches<F: Real>(
        &self,
        preds: E2EPreds<F>,
        grads: GradBufs<F>,
        run: impl Fn(&V8DetectionLoss, &[TensorRef<F>], GradBufs<F>) -> Result<LossValues<F>>,
    ) -> Result<LossValues<F>> {
        let E2EPreds { one2many, one2one } = preds;
        // Without gradients both halves are empty; with them, the first len(one2many) are that branch's.
        let split = if grads.is_empty() { 0 } else { one2many.len() };
        let (g_many, g_one) = grads.split_at_mut(split);
        let (l1, i1) = run(&self.one2many, one2many, g_many).map_err(|e| prefix(e, "one2many"))?;
        let (l2, i2) = run(&self.one2one, one2one, g_one).map_err(|e| prefix(e, "one2one"))?;
        let add = |x: &[F], y: &[F]| x.iter().zip(y).map(|(&p, &q)| p + q).collect::<Vec<F>>();
        Ok((add(&l1, &l2), add(&i1, &i2)))
    }
}

/// Names the branch in an error about `preds`: `preds[0]` → `preds.one2many[0]` (the first `preds` of the
/// message only); public so that other backends report the branch alike.
pub fn prefix(mut e: crate::error::LossError, branch: &str) -> crate::error::LossError {
    e.message = e.message.replacen("preds", &format!("preds.{branch}"), 1);
    e
}
