//! Per-block partial sums written by the reduction kernels, read back and added once.
//!
//! The kernels never add into one accumulator with atomics: each block writes its own partial, and
//! [`PartialSums::total`] adds them in order in f64. The result is reproducible run to run, and several launches
//! (levels, passes) share one read-back.

use cudarc::driver::{CudaSlice, CudaViewMut};
use yolo_loss_core::{ErrorCode, LossError, Result};

use crate::gpu::Gpu;
use crate::launch::MAX_REDUCTION_BLOCKS;

pub struct PartialSums {
    buf: CudaSlice<f32>,
    used: usize,
}

impl PartialSums {
    /// Room for `launches` reduction launches (each writes at most `MAX_REDUCTION_BLOCKS` partials).
    pub fn new(gpu: &Gpu, launches: usize) -> Result<Self> {
        let buf = gpu.zeros("partial sums", launches.max(1) * MAX_REDUCTION_BLOCKS as usize)?;
        Ok(Self { buf, used: 0 })
    }

    /// The next `blocks` slots, for one launch.
    pub(crate) fn claim(&mut self, blocks: u32) -> Result<CudaViewMut<'_, f32>> {
        let end = self.used + blocks as usize;
        if end > self.buf.len() {
            return Err(LossError::new(
                ErrorCode::Internal,
                format!(
                    "PartialSums: room for {} partials, a launch needs {end}; create it with more launches",
                    self.buf.len()
                ),
            ));
        }
        let view = self.buf.slice_mut(self.used..end);
        self.used = end;
        Ok(view)
    }

    /// Σ of every partial written so far (waits for the kernels).
    pub fn total(&self, gpu: &Gpu) -> Result<f64> {
        if self.used == 0 {
            return Ok(0.0);
        }
        let all = gpu.download("partial sums", &self.buf)?;
        Ok(all[..self.used].iter().map(|&v| v as f64).sum())
    }
}
