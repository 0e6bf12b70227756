//! E2EDetectLoss on the GPU (docs/spec.md §14): a one-to-many (top-10) and a one-to-one (top-1) detection loss on the two
//! branches, summed, as `yolo_loss_core::e2e::E2EDetectLoss` (same branch configurations, same error names).

use yolo_loss_core::detection::{check_grad_buffers, datas, GradBufs, LossValues};
use yolo_loss_core::e2e::{prefix, E2EDetectLoss};
use yolo_loss_core::{DetBatch, DetectionConfig, LossOutput, Result, TensorRef};

use crate::detection::CudaDetectionLoss;

#[derive(Debug, Clone)]
pub struct CudaE2EDetectLoss {
    pub one2many: CudaDetectionLoss,
    pub one2one: CudaDetectionLoss,
}

impl CudaE2EDetectLoss {
    /// `cfg.tal_topk` is ignored: the branches use 10 and 1 as the reference does. On `cuda:0`.
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        Self::on_device(cfg, 0)
    }

    /// As [`Self::new`], on the GPU `cuda:<ordinal>`.
    pub fn on_device(cfg: DetectionConfig, ordinal: usize) -> Result<Self> {
        let (one2many, one2one) = E2EDetectLoss::branch_configs(cfg);
        Ok(Self {
            one2many: CudaDetectionLoss::on_device(one2many, ordinal)?,
            one2one: CudaDetectionLoss::on_device(one2one, ordinal)?,
        })
    }

    #[cfg(all(test, yolo_cuda_emulator))]
    pub(crate) fn emulated(cfg: DetectionConfig) -> Result<Self> {
        let (one2many, one2one) = E2EDetectLoss::branch_configs(cfg);
        Ok(Self { one2many: CudaDetectionLoss::emulated(one2many)?, one2one: CudaDetectionLoss::emulated(one2one)? })
    }

    pub fn call(
        &self,
        one2many: &[TensorRef<f32>],
        one2one: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
    ) -> Result<LossOutput<f32>> {
        self.run(one2many, one2one, |loss, feats| loss.call(feats, batch))
    }

    /// Gradients: the one2many levels, then the one2one levels.
    pub fn value_and_grad(
        &self,
        one2many: &[TensorRef<f32>],
        one2one: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
    ) -> Result<LossOutput<f32>> {
        self.run(one2many, one2one, |loss, feats| loss.value_and_grad(feats, batch))
    }

    /// As `value_and_grad` into caller-provided buffers (the one2many levels, then the one2one levels).
    pub fn value_and_grad_into(
        &self,
        one2many: &[TensorRef<f32>],
        one2one: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        let all: Vec<TensorRef<f32>> = one2many.iter().chain(one2one).copied().collect();
        check_grad_buffers(grads, &datas(&all))?;
        let (g_many, g_one) = grads.split_at_mut(one2many.len());
        let (l1, i1) = self.one2many.value_and_grad_into(one2many, batch, g_many).map_err(|e| prefix(e, "one2many"))?;
        let (l2, i2) = self.one2one.value_and_grad_into(one2one, batch, g_one).map_err(|e| prefix(e, "one2one"))?;
        Ok((add(&l1, &l2), add(&i1, &i2)))
    }

    /// `branch` on the one2many branch, then on the one2one branch (errors name the branch), summed.
    fn run(
        &self,
        one2many: &[TensorRef<f32>],
        one2one: &[TensorRef<f32>],
        branch: impl Fn(&CudaDetectionLoss, &[TensorRef<f32>]) -> Result<LossOutput<f32>>,
    ) -> Result<LossOutput<f32>> {
        let a = branch(&self.one2many, one2many).map_err(|e| prefix(e, "one2many"))?;
        let b = branch(&self.one2one, one2one).map_err(|e| prefix(e, "one2one"))?;
        let mut grads = a.grads;
        grads.extend(b.grads);
        Ok(LossOutput { loss: add(&a.loss, &b.loss), loss_items: add(&a.loss_items, &b.loss_items), grads })
    }
}

/// Element-wise sum of the two branches' values.
fn add(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&p, &q)| p + q).collect()
}
