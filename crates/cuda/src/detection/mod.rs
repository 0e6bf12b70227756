//! v8DetectionLoss on the GPU (docs/spec.md §9): the same inputs, outputs and errors as
//! `yolo_loss_core::V8DetectionLoss`, computed by the kernels of cuda/det_*.cu (see `run.rs` for the sequence).
//!
//! Parity with the CPU backend: same positives and GT indices (the assigner is reproduced rule for rule, ties
//! included), values within 1e-5 relative. Errors: the CPU backend's for bad input (same codes, same messages),
//! `ERR_CUDA_UNAVAILABLE` when there is no usable GPU, `ERR_CUDA_OUT_OF_MEMORY` when the GPU is full.

// The stages a detection-family task composes (see the crate's README.md): crate-visible for other tasks' runs.
pub(crate) mod assign;
#[cfg(all(test, yolo_cuda_emulator))]
mod emu;
pub(crate) mod host;
pub(crate) mod inputs;
pub(crate) mod params;
pub(crate) mod passes;
pub(crate) mod run;
pub(crate) mod stages;
#[cfg(test)]
pub(crate) mod tests;

use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::{DetBatch, DetectionConfig, LossError, LossOutput, Result, TaskLoss, TensorRef, V8DetectionLoss};

use crate::backend::cuda_constructors;
use crate::launch::Dev;
pub use params::{MAX_LEVELS, MAX_TOPK};
pub use run::{time_kernels, Assignment, StageTimes, STAGES};
use run::{Job, RunOut, Timing};

/// What `value_and_grad_timed` measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelTiming {
    /// Where the time went: all kernels and each (device), the host-side uploads and downloads. None where the
    /// device records no events (the CPU emulator of the tests).
    pub stages: Option<StageTimes>,
    /// Positive anchors in the batch after assignment.
    pub positives: usize,
}

impl KernelTiming {
    /// Device time from the first to the last kernel of the call (CUDA events), uploads and downloads excluded;
    /// NaN when not measured.
    pub fn kernel_ms(&self) -> f32 {
        self.stages.map_or(f32::NAN, |t| t.kernel_ms)
    }
}

#[derive(Clone)]
pub struct CudaDetectionLoss {
    pub cfg: DetectionConfig,
    pub(crate) dev: Dev,
}

impl std::fmt::Debug for CudaDetectionLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDetectionLoss").field("cfg", &self.cfg).field("device", &self.device_name()).finish()
    }
}

/// The CUDA backend's own limits on a configuration the CPU backend accepts.
pub(crate) fn check_cuda_limits(cfg: &DetectionConfig) -> Result<()> {
    if cfg.tal_topk > MAX_TOPK {
        return Err(LossError::invalid(format!(
            "tal_topk: the CUDA backend supports at most {MAX_TOPK}, got {}",
            cfg.tal_topk
        )));
    }
    if cfg.strides.len() > MAX_LEVELS {
        return Err(LossError::invalid(format!(
            "model.stride: the CUDA backend supports at most {MAX_LEVELS} levels, got {}",
            cfg.strides.len()
        )));
    }
    Ok(())
}

cuda_constructors!(CudaDetectionLoss, V8DetectionLoss, DetectionConfig);

impl CudaDetectionLoss {
    /// `cfg` validated (the CPU backend's checks, then the CUDA limits), then the device opened.
    pub(crate) fn on(cfg: DetectionConfig, dev: impl FnOnce() -> Result<Dev>) -> Result<Self> {
        let cfg = V8DetectionLoss::new(cfg)?.cfg;
        check_cuda_limits(&cfg)?;
        Ok(Self { cfg, dev: dev()? })
    }

    /// Name of the GPU the loss runs on.
    pub fn device_name(&self) -> &str {
        self.dev.name()
    }

    /// `value_and_grad` plus the device time of its kernels (for benchmarks); `per_kernel`: each kernel's time too,
    /// from an event after each (which adds a little to the total).
    pub fn value_and_grad_timed(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        per_kernel: bool,
    ) -> Result<(LossOutput<f32>, KernelTiming)> {
        let timing = if per_kernel { Timing::PerKernel } else { Timing::Total };
        let r = self.evaluate(feats, batch, Flags { timing, ..Flags::GRAD }, None)?;
        let timing = KernelTiming { stages: r.timing, positives: r.num_positives.unwrap_or(0) };
        Ok((r.out, timing))
    }

    /// The assignment the loss uses: per image, (anchor, GT slot, soft target score) of every positive anchor.
    pub fn assignment(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>) -> Result<Assignment> {
        let r = self.evaluate(feats, batch, Flags { assignment: true, ..Flags::LOSS }, None)?;
        Ok(r.assignment.unwrap_or_default())
    }

    /// The loss over all `nc` classes of `cfg`.
    fn evaluate(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        f: Flags,
        into: Option<GradBufs<f32>>,
    ) -> Result<RunOut> {
        self.run_window(feats, batch, f, Window::of(&self.cfg), false, into)
    }

    /// The loss over a class window (TVPDetectLoss); `only_cls`: the gradient of the cls component alone. With
    /// `into` (checked by the caller) the gradients are downloaded there and `RunOut.out.grads` stays empty.
    pub(crate) fn run_window(
        &self,
        feats: &[TensorRef<f32>],
        batch: &DetBatch<f32>,
        f: Flags,
        w: Window,
        only_cls: bool,
        into: Option<GradBufs<f32>>,
    ) -> Result<RunOut> {
        let cfg = &self.cfg;
        let job = Job::new(cfg, cfg.tal_topk, w, only_cls, f);
        run::run(self.dev, &job, feats, batch, into)
    }
}

/// As `yolo_loss_core::V8DetectionLoss`: the level tensors; gradients, one per level, downloaded whole into the
/// buffers (every element written).
impl TaskLoss<f32> for CudaDetectionLoss {
    type Preds<'a> = &'a [TensorRef<'a, f32>];
    type Batch<'a> = DetBatch<'a, f32>;

    fn run(&self, feats: &[TensorRef<f32>], batch: &DetBatch<f32>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        let (flags, into) = if grads.is_empty() { (Flags::LOSS, None) } else { (Flags::GRAD, Some(grads)) };
        let out = self.evaluate(feats, batch, flags, into)?.out;
        Ok((out.loss, out.loss_items))
    }

    fn overwrites_grads(&self) -> bool {
        true
    }
}

/// What a run should produce besides the loss.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    pub grad: bool,
    pub assignment: bool,
    pub timing: Timing,
}

impl Flags {
    /// The loss alone.
    pub const LOSS: Flags = Flags { grad: false, assignment: false, timing: Timing::Off };
    /// The loss and its gradient.
    pub const GRAD: Flags = Flags { grad: true, ..Flags::LOSS };
}

/// The channels of a level tensor and the loss's class window in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub channels: usize,
    pub cls_ch0: usize,
    pub nc: usize,
}

impl Window {
    /// All `nc` classes of `cfg`, after the box channels.
    pub fn of(cfg: &DetectionConfig) -> Self {
        Window { channels: 4 * cfg.reg_max + cfg.nc, cls_ch0: 4 * cfg.reg_max, nc: cfg.nc }
    }
}
