//! v8ClassificationLoss on the GPU (docs/spec.md §12): the same inputs, outputs and errors as
//! `yolo_loss_core::classification::V8ClassificationLoss`, computed by cuda/cls.cu (see `run.rs`).

mod params;
pub(crate) mod run;
#[cfg(test)]
mod tests;

use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::{Result, TaskLoss, TensorRef};

use crate::backend::CudaLoss;
use crate::gpu::gpu;
use crate::launch::Dev;

#[derive(Clone)]
pub struct CudaClassificationLoss {
    dev: Dev,
}

impl std::fmt::Debug for CudaClassificationLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaClassificationLoss").field("device", &self.dev.name()).finish()
    }
}

impl CudaClassificationLoss {
    /// On the GPU `cuda:0`.
    pub fn new() -> Result<Self> {
        Self::on_device(0)
    }

    /// On the GPU `cuda:<ordinal>`: `ERR_CUDA_UNAVAILABLE` (with the reason) where there is none.
    pub fn on_device(ordinal: usize) -> Result<Self> {
        Ok(Self { dev: Dev::Gpu(gpu(ordinal)?) })
    }

    /// The same loss on the CPU emulator of the kernels (tests of this crate).
    #[cfg(all(test, yolo_cuda_emulator))]
    pub(crate) fn emulated() -> Result<Self> {
        Ok(Self { dev: Dev::Emu })
    }
}

/// As the CPU type: the logits `[B, nc]` and the class ids `[B]`; the gradient downloaded whole.
impl TaskLoss<f32> for CudaClassificationLoss {
    type Preds<'a> = TensorRef<'a, f32>;
    type Batch<'a> = TensorRef<'a, f32>;

    fn run(&self, logits: TensorRef<f32>, cls: &TensorRef<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        run::run(self.dev, logits, cls, grads)
    }

    fn overwrites_grads(&self) -> bool {
        true
    }
}

impl CudaLoss<V8ClassificationLoss> for CudaClassificationLoss {
    fn build_on((): (), ordinal: usize) -> Result<Self> {
        Self::on_device(ordinal)
    }
}
