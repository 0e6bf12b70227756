//! E2EDetectLoss on the GPU (SPEC §14): a one-to-many (top-10) and a one-to-one (top-1) detection loss on the two
//! branches, summed, as `yolo_loss_core::e2e::E2EDetectLoss`.

use yolo_loss_core::detection::{GradBufs, LossValues};
use yolo_loss_core::{DetBatch, DetectionConfig, LossError, LossOutput, Result, TensorRef};

use crate::detection::{check_grad_buffers, CudaDetectionLoss};

#[derive(Debug, Clone)]
pub struct CudaE2EDetectLoss {
    pub one2many: CudaDetectionLoss,
    pub one2one: CudaDetectionLoss,
}

impl CudaE2EDetectLoss {
    /// `cfg.tal_topk` is ignored: the branches use 10 and 1 as the reference does.
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self {
            one2many: CudaDetectionLoss::new(DetectionConfig { tal_topk: 10, ..cfg.clone() })?,
            one2one: CudaDetectionLoss::new(DetectionConfig { tal_topk: 1, ..cfg })?,
        })
    }

    #[cfg(all(test, yolo_cuda_emulator))]
    pub(crate) fn emulated(cfg: DetectionConfig) -> Result<Self> {
        Ok(Self {
            one2many: CudaDetectionLoss::emulated(DetectionConfig { tal_topk: 10, ..cfg.clone() })?,
            one2one: CudaDetectionLoss::emulated(DetectionConfig { tal_topk: 1, ..cfg })?,
        })
    }

    pub fn call(
        &self,
        one2many: &[TensorRef<f32>],
        one2one: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
    ) -> Result<LossOutput<f32>> {
        let a = self.one2many.call(one2many, batch).map_err(|e| prefix(e, "one2many"))?;
        let b = self.one2one.call(one2one, batch).map_err(|e| prefix(e, "one2one"))?;
        Ok(sum(a, b))
    }

    /// Gradients: the one2many levels, then the one2one levels.
    pub fn value_and_grad(
        &self,
        one2many: &[TensorRef<f32>],
        one2one: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
    ) -> Result<LossOutput<f32>> {
        let a = self.one2many.value_and_grad(one2many, batch).map_err(|e| prefix(e, "one2many"))?;
        let b = self.one2one.value_and_grad(one2one, batch).map_err(|e| prefix(e, "one2one"))?;
        Ok(sum(a, b))
    }
}

impl CudaE2EDetectLoss {
    /// As `value_and_grad` into caller-provided buffers (the one2many levels, then the one2one levels).
    pub fn value_and_grad_into(
        &self,
        one2many: &[TensorRef<f32>],
        one2one: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        let all: Vec<TensorRef<f32>> = one2many.iter().chain(one2one).copied().collect();
        check_grad_buffers(grads, &all)?;
        let (g_many, g_one) = grads.split_at_mut(one2many.len());
        let (l1, i1) = self.one2many.value_and_grad_into(one2many, batch, g_many).map_err(|e| prefix(e, "one2many"))?;
        let (l2, i2) = self.one2one.value_and_grad_into(one2one, batch, g_one).map_err(|e| prefix(e, "one2one"))?;
        let add = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| p + q).collect::<Vec<f32>>();
        Ok((add(&l1, &l2), add(&i1, &i2)))
    }
}

fn sum(a: LossOutput<f32>, b: LossOutput<f32>) -> LossOutput<f32> {
    let add = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| p + q).collect::<Vec<f32>>();
    let mut grads = a.grads;
    grads.extend(b.grads);
    LossOutput { loss: add(&a.loss, &b.loss), loss_items: add(&a.loss_items, &b.loss_items), grads }
}

/// Names the branch in an error about `preds`: `preds[0]` → `preds.one2many[0]` (as the CPU backend does).
fn prefix(mut e: LossError, branch: &str) -> LossError {
    e.message = e.message.replacen("preds", &format!("preds.{branch}"), 1);
    e
}
