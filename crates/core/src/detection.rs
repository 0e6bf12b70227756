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

    /// `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R])` → (`[B,A,4]` grid xyxy, shape).
    pub fn bbox_decode<F: Real>(&self, _anchor_points: TensorRef<F>, _pred_dist: TensorRef<F>) -> Result<(Vec<F>, Vec<usize>)> {
        Err(LossError::new(crate::error::ErrorCode::Internal, "not implemented yet"))
    }

    fn run<F: Real>(&self, _feats: &[TensorRef<F>], _batch: &DetBatch<F>, _want_grad: bool) -> Result<LossOutput<F>> {
        Err(LossError::new(crate::error::ErrorCode::Internal, "not implemented yet"))
    }
}

/// `preprocess(targets [N,6] = (batch_idx, cls, cx, cy, w, h), batch_size, scale (W,H,W,H))` →
/// (`[B, M, 5]` rows (cls, x1, y1, x2, y2) in the scaled frame, shape).
pub fn preprocess<F: Real>(_targets: TensorRef<F>, _batch_size: usize, _scale: [F; 4]) -> Result<(Vec<F>, Vec<usize>)> {
    Err(LossError::new(crate::error::ErrorCode::Internal, "not implemented yet"))
}
