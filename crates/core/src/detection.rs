//! v8DetectionLoss (SPEC §9): forward and analytic backward.

use crate::error::{LossError, Result};
use crate::hyp::Hyp;
use crate::real::Real;
use crate::tensor::TensorRef;

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

impl V8DetectionLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self { cfg })
    }

    /// `__call__`: loss and loss items, no gradient.
    pub fn call<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        self.run(feats, batch, false)
    }

    /// Loss, loss items and the gradient with respect to every level tensor.
    pub fn value_and_grad<F: Real>(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>) -> Result<LossOutput<F>> {
        self.run(feats, batch, true)
    }

    fn run<F: Real>(&self, _feats: &[TensorRef<F>], _batch: &DetBatch<F>, _want_grad: bool) -> Result<LossOutput<F>> {
        Err(LossError::new(crate::error::ErrorCode::Internal, "not implemented yet"))
    }
}
