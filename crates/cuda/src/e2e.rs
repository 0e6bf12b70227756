//! E2EDetectLoss on the GPU (docs/spec.md §14): a one-to-many (top-10) and a one-to-one (top-1) detection loss on the
//! two branches, summed, as `yolo_loss_core::e2e::E2EDetectLoss` (same branch configurations, same error names).

use yolo_loss_core::detection::DetBatch;
use yolo_loss_core::e2e::{prefix, E2EDetectLoss, E2EPreds};
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::{DetectionConfig, Result, TaskLoss};

use crate::backend::cuda_constructors;
use crate::detection::CudaDetectionLoss;
use crate::launch::Dev;

#[derive(Debug, Clone)]
pub struct CudaE2EDetectLoss {
    pub one2many: CudaDetectionLoss,
    pub one2one: CudaDetectionLoss,
}

cuda_constructors!(CudaE2EDetectLoss, E2EDetectLoss, DetectionConfig);

impl CudaE2EDetectLoss {
    /// `cfg.tal_topk` is ignored: the branches use 10 and 1 as the reference does. Each branch's configuration is
    /// validated as the detection loss does it; the device is opened once, after the first's.
    fn on(cfg: DetectionConfig, dev: impl FnOnce() -> Result<Dev>) -> Result<Self> {
        let (one2many, one2one) = E2EDetectLoss::branch_configs(cfg);
        let one2many = CudaDetectionLoss::on(one2many, dev)?;
        let one2one = CudaDetectionLoss::on(one2one, || Ok(one2many.dev))?;
        Ok(Self { one2many, one2one })
    }
}

/// As the CPU type: gradients, the one2many levels then the one2one levels (each branch downloads its whole
/// gradients).
impl TaskLoss<f32> for CudaE2EDetectLoss {
    type Preds<'a> = E2EPreds<'a, f32>;
    type Batch<'a> = DetBatch<'a, f32>;

    fn run(&self, preds: E2EPreds<f32>, batch: &DetBatch<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        let E2EPreds { one2many, one2one } = preds;
        // Without gradients both halves are empty; with them, the first len(one2many) are that branch's.
        let split = if grads.is_empty() { 0 } else { one2many.len() };
        let (g_many, g_one) = grads.split_at_mut(split);
        let (l1, i1) = self.one2many.run(one2many, batch, g_many).map_err(|e| prefix(e, "one2many"))?;
        let (l2, i2) = self.one2one.run(one2one, batch, g_one).map_err(|e| prefix(e, "one2one"))?;
        Ok((add(&l1, &l2), add(&i1, &i2)))
    }

    fn overwrites_grads(&self) -> bool {
        self.one2many.overwrites_grads() && self.one2one.overwrites_grads()
    }
}

/// Element-wise sum of the two branches' values.
fn add(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&p, &q)| p + q).collect()
}
