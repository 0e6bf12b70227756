//! One evaluation of a detection-family loss on the device, composed of the stages every such task shares
//! (`DetectionStages`, stages.rs):
//!
//! ```text
//! host:        validate shapes → labels → GT table (CPU backend's checks and messages)   stages.rs, host.rs
//! inputs:      level tensors (once), gradient buffers, GT table on the device             inputs.rs
//! assignment:  decode, candidates + top-k, resolve, scores; the positives stay on the device
//!              as typed parts of the call's arena                                         assign.rs
//! class pass:  BCE of the class window and its gradient                                   passes.rs
//! box pass:    CIoU and DFL of the positives and the box-channel gradient                 passes.rs
//! (a task's own passes: parts reserved in the same layout, launched after these, reading the assignment's parts)
//! download:    flags, S, partial sums, gradients (once)                                   run.rs
//! ```
//! The work buffers of all stages are parts of one arena (one allocation, one memset), each stage reserving its
//! own; the kernels' parameter struct is derived from the stages' buffers in one place (params.rs).
//! Memory: the inputs, the gradients, and O(B·A + B·M) work buffers; nothing of size B·M·A.

use std::cell::Cell;
use std::time::Instant;

use cudarc::driver::CudaEvent;
use yolo_loss_core::detection::DetBatch;
use yolo_loss_core::{DetectionConfig, LossOutput, Result, TensorRef};

use super::stages::DetectionStages;
use super::{Flags, Window};
use crate::launch::{ArenaLayout, Dev, KernelParams};

/// The kernels, by module (cuda/<module>.cu), in launch order.
pub(crate) const DECODE: &str = "yl_det_decode";
pub(crate) const ASSIGN: &str = "yl_det_assign";
pub(crate) const RESOLVE: &str = "yl_det_resolve";
pub(crate) const SCORES: &str = "yl_det_scores";
pub(crate) const CLASS: &str = "yl_det_class";
pub(crate) const BOX: &str = "yl_det_box";
/// The kernels in launch order, as `StageTimes::stage_ms` reports them.
pub const STAGES: [&str; 6] = ["decode", "assign", "resolve", "scores", "class", "box"];

/// Where the time of one timed run went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageTimes {
    /// Device time from before the first to after the last kernel (CUDA events).
    pub kernel_ms: f32,
    /// Device time of each kernel, in the order of [`STAGES`] (NaN unless asked for).
    pub stage_ms: [f32; 6],
    /// Host time from the call to the inputs being on the device (checks, labels, uploads).
    pub upload_ms: f64,
    /// Host time from the last kernel to the results on the host (downloads of the gradient and the sums).
    pub download_ms: f64,
}

/// The detection configuration the kernels need, and which channels form the loss's class window.
#[derive(Debug, Clone)]
pub(crate) struct Job<'c> {
    pub strides: &'c [f64],
    pub reg_max: usize,
    pub topk: usize,
    pub gains: [f64; 3],
    pub channels: usize,
    pub cls_ch0: usize,
    pub nc: usize,
    pub only_cls: bool,
    pub want_grad: bool,
    pub want_assignment: bool,
    pub timing: Timing,
}

impl<'c> Job<'c> {
    /// The job of configuration `cfg`, with the assigner's `topk`, over the class window `w`, producing what `f`
    /// asks for; `only_cls`: the gradient of the cls component alone (the TVP losses).
    pub fn new(cfg: &'c DetectionConfig, topk: usize, w: Window, only_cls: bool, f: Flags) -> Self {
        Job {
            strides: &cfg.strides,
            reg_max: cfg.reg_max,
            topk,
            gains: [cfg.hyp.box_gain, cfg.hyp.cls, cfg.hyp.dfl],
            channels: w.channels,
            cls_ch0: w.cls_ch0,
            nc: w.nc,
            only_cls,
            want_grad: f.grad,
            want_assignment: f.assignment,
            timing: f.timing,
        }
    }
}

/// What a run times with CUDA events (benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    Off,
    /// Events before the first and after the last kernel.
    Total,
    /// An event after every kernel too (each adds a little to the total).
    PerKernel,
}

thread_local! {
    /// Inside [`time_kernels`] on this thread: the device time of the calls' kernels so far (ms) and how many
    /// calls recorded it. None outside.
    static CLOCK: Cell<Option<(f32, u32)>> = const { Cell::new(None) };
}

/// Runs `f` and returns its result with the device time (ms, CUDA events) of the kernels that the CUDA task losses
/// launched on this thread meanwhile: per call, from before its first to after its last kernel, once its uploads
/// are done (uploads and downloads excluded), summed over the calls (E2EDetectLoss runs two detection calls).
/// None where no device time was recorded (no call, or the kernel emulator). For benchmarks: every call inside
/// waits for its uploads before its kernels, as `CudaDetectionLoss::value_and_grad_timed` does. One place for every
/// task, since all of them launch through [`Kernels`].
pub fn time_kernels<R>(f: impl FnOnce() -> R) -> (R, Option<f32>) {
    let outer = CLOCK.replace(Some((0.0, 0)));
    let r = f();
    let measured = CLOCK.replace(outer);
    (r, measured.filter(|&(_, calls)| calls > 0).map(|(ms, _)| ms))
}

/// Per image, the positives after conflict resolution: (anchor, GT slot, soft target score), by anchor.
pub type Assignment = Vec<Vec<(usize, usize, f32)>>;

pub(crate) struct RunOut {
    pub out: LossOutput<f32>,
    pub assignment: Option<Assignment>,
    /// Where the time went (GPU, when asked).
    pub timing: Option<StageTimes>,
    /// Positive anchors in the batch (when timing or the assignment was asked for).
    pub num_positives: Option<usize>,
}

/// The kernels of one call, queued in order on the device, with the timing events `Timing` asks for.
pub(crate) struct Kernels {
    dev: Dev,
    timing: Timing,
    events: Vec<Option<CudaEvent>>,
}

impl Kernels {
    /// Timed runs wait for the uploads first, so that the events measure the kernels alone. Inside
    /// [`time_kernels`] every run is timed (at least `Timing::Total`).
    pub fn start(dev: Dev, timing: Timing) -> Result<Self> {
        let timing = if timing == Timing::Off && CLOCK.get().is_some() { Timing::Total } else { timing };
        let mut events = Vec::new();
        if timing != Timing::Off {
            dev.synchronize()?;
            events.push(dev.event()?);
        }
        Ok(Kernels { dev, timing, events })
    }

    pub fn launch<P: KernelParams>(&mut self, kernel: &'static str, grid: u32, block: u32, p: &P) -> Result<()> {
        self.dev.launch(kernel, grid, block, p)?;
        if self.timing == Timing::PerKernel {
            self.events.push(self.dev.event()?);
        }
        Ok(())
    }

    /// Waits for the kernels of a timed run; the device time from the first to the last kernel, and of each
    /// kernel if measured (NaN if not). None: not timed, or no device time (the emulator).
    pub fn finish(mut self) -> Result<Option<(f32, [f32; STAGES.len()])>> {
        match self.timing {
            Timing::Off => return Ok(None),
            Timing::Total => self.events.push(self.dev.event()?),
            Timing::PerKernel => {}
        }
        self.dev.synchronize()?;
        let ms = |a: &CudaEvent, b: &CudaEvent| {
            a.elapsed_ms(b).map_err(|e| crate::errors::driver("reading a timing event", e))
        };
        let [Some(first), .., Some(last)] = self.events.as_slice() else { return Ok(None) };
        let mut stage_ms = [f32::NAN; STAGES.len()];
        if self.timing == Timing::PerKernel {
            // The detection stages' kernels, in launch order (a task's further kernels count in the total only).
            for (stage, pair) in stage_ms.iter_mut().zip(self.events.windows(2)) {
                if let [Some(a), Some(b)] = pair {
                    *stage = ms(a, b)?;
                }
            }
        }
        let total = ms(first, last)?;
        if let Some((sum, calls)) = CLOCK.get() {
            CLOCK.set(Some((sum + total, calls + 1)));
        }
        Ok(Some((total, stage_ms)))
    }
}

/// Runs one evaluation. With `into` (caller buffers, one per level, checked by the caller) the gradients are
/// downloaded there and `RunOut.out.grads` stays empty; else, when `job.want_grad`, into fresh vectors.
pub(crate) fn run(
    dev: Dev,
    job: &Job,
    feats: &[TensorRef<f32>],
    batch: &DetBatch<f32>,
    into: Option<&mut [&mut [f32]]>,
) -> Result<RunOut> {
    let started = Instant::now();
    let mut layout = ArenaLayout::default();
    let stages = DetectionStages::prepare(dev, job, feats, batch, &mut layout)?;
    let arena = dev.arena("detection work buffers", &layout)?;
    let params = stages.params(job, &arena);

    let mut kernels = Kernels::start(dev, job.timing)?;
    let uploaded = Instant::now();
    stages.launch(&mut kernels, &params)?;
    let times = kernels.finish()?;
    let computed = Instant::now();

    let (loss, items) = stages.loss(job, &arena, feats)?;
    let grads = stages.levels.download_grads(into)?;
    let timing = times.map(|(kernel_ms, stage_ms)| StageTimes {
        kernel_ms,
        stage_ms,
        upload_ms: (uploaded - started).as_secs_f64() * 1e3,
        download_ms: computed.elapsed().as_secs_f64() * 1e3,
    });
    let (mut num_positives, mut positives) = (None, None);
    if job.want_assignment || job.timing != Timing::Off {
        let (b, a) = (stages.head.batch, stages.head.grid.num_anchors);
        let per_image = stages.assignment.download(&arena, b, a)?;
        num_positives = Some(per_image.iter().map(Vec::len).sum());
        positives = job.want_assignment.then_some(per_image);
    }
    Ok(RunOut { out: LossOutput { loss, loss_items: items, grads }, assignment: positives, timing, num_positives })
}
