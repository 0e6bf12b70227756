//! One evaluation of a detection-family loss on the device, as the stages every such task composes:
//!
//! ```text
//! host:        validate shapes → labels → GT table (CPU backend's checks and messages)      run.rs, host.rs
//! inputs:      level tensors (once), gradient buffers, GT table on the device                inputs.rs
//! assignment:  decode, candidates + top-k, resolve, scores; the positives stay on the device  assign.rs
//! class pass:  BCE of the class window and its gradient                                      passes.rs
//! box pass:    CIoU and DFL of the positives and the box-channel gradient                    passes.rs
//! (a task's own passes read the assignment's parts the same way)
//! download:    flags, S, partial sums, gradients (once)                                      run.rs
//! ```
//! The work buffers of all stages are parts of one arena (one allocation, one memset), each stage reserving its
//! own; the kernels' parameter struct is derived from the stages' buffers in one place (params.rs).
//! Memory: the inputs, the gradients, and O(B·A + B·M) work buffers; nothing of size B·M·A.

use std::time::Instant;

use cudarc::driver::CudaEvent;
use yolo_loss_core::detection::{check_preds_finite, labels_and_gt, DetBatch, Head};
use yolo_loss_core::labels::GtTable;
use yolo_loss_core::{LossError, LossOutput, Result, TensorRef};

use super::assign::AssignmentParts;
use super::host::pack_gt;
use super::inputs::{DeviceGt, Levels};
use super::params::{DetParams, CLASS_CHUNK, MAX_LEVELS, MAX_TOPK};
use super::passes::{box_pass, class_pass, Accumulators};
use crate::launch::{int, ArenaLayout, Dev, KernelParams};

/// Threads per block of every kernel but the assign kernel's.
pub(super) const BLOCK: u32 = 256;

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

/// Most blocks of the score pass (its partials are summed by its last block).
const SCORE_BLOCKS_MAX: usize = 1024;

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

/// What a run times with CUDA events (benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    Off,
    /// Events before the first and after the last kernel.
    Total,
    /// An event after every kernel too (each adds a little to the total).
    PerKernel,
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

/// Launch sizes of one call's kernels (blocks per grid; the assign kernel's threads per block).
pub(super) struct Grids {
    /// One thread per (image, anchor).
    pub anchor_blocks: u32,
    /// The score pass: grid-stride over (image, anchor), at most SCORE_BLOCKS_MAX blocks.
    pub score_blocks: u32,
    /// One thread per (image, side, anchor): the decode, and the box pass (four lanes per anchor).
    pub decode_blocks: u32,
    pub box_blocks: u32,
    /// One thread per (image, class chunk, anchor).
    pub class_blocks: u32,
    /// One block per GT slot.
    pub assign_blocks: u32,
    pub assign_threads: u32,
}

impl Grids {
    fn new(head: &Head<f32>, gt: &DeviceGt) -> Result<Self> {
        let (b, a) = (head.batch, head.grid.num_anchors);
        let blocks = |n: usize| n.div_ceil(BLOCK as usize);
        let ba = b.checked_mul(a).filter(|&v| i32::try_from(blocks(v)).is_ok()).ok_or_else(|| {
            LossError::invalid(format!("preds: {b} images × {a} anchors is too large for the CUDA kernels"))
        })?;
        int("GT slots", gt.slots())?;
        int("anchors", a)?;
        let anchor_blocks = blocks(ba);
        let decode_blocks = int("decode blocks", blocks(4 * ba))? as u32;
        let class_blocks = int("class blocks", blocks(ba * head.nc.div_ceil(CLASS_CHUNK)))? as u32;
        Ok(Grids {
            anchor_blocks: anchor_blocks as u32,
            score_blocks: anchor_blocks.min(SCORE_BLOCKS_MAX) as u32,
            decode_blocks,
            box_blocks: decode_blocks,
            class_blocks,
            assign_blocks: gt.slots() as u32,
            assign_threads: gt.assign_threads(),
        })
    }
}

/// The kernels of one call, queued in order on the device, with the timing events `Timing` asks for.
pub(super) struct Kernels {
    dev: Dev,
    timing: Timing,
    events: Vec<Option<CudaEvent>>,
}

impl Kernels {
    /// Timed runs wait for the uploads first, so that the events measure the kernels alone.
    fn start(dev: Dev, timing: Timing) -> Result<Self> {
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
    fn finish(mut self) -> Result<Option<(f32, [f32; STAGES.len()])>> {
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
            for (k, pair) in self.events.windows(2).enumerate() {
                if let [Some(a), Some(b)] = pair {
                    stage_ms[k] = ms(a, b)?;
                }
            }
        }
        Ok(Some((ms(first, last)?, stage_ms)))
    }
}

/// The host checks of the CPU backend, in its order: shapes, labels (finiteness of the predictions is checked on
/// the device, so a label error first looks for a non-finite prediction to report instead), then the CUDA limits.
fn checked_inputs<'a>(
    job: &Job,
    feats: &[TensorRef<'a, f32>],
    batch: &DetBatch<f32>,
) -> Result<(Head<'a, f32>, GtTable<f32>)> {
    let head = Head::validate_shapes(feats, job.strides, job.reg_max, job.channels, job.cls_ch0, job.nc)?;
    let gt = match labels_and_gt(&head, batch, job.topk) {
        Ok((_, gt)) => gt,
        Err(e) => {
            check_preds_finite(feats)?;
            return Err(e);
        }
    };
    if head.grid.levels.len() > MAX_LEVELS {
        return Err(LossError::invalid(format!(
            "model.stride: the CUDA backend supports at most {MAX_LEVELS} levels, got {}",
            head.grid.levels.len()
        )));
    }
    // The assign kernel keeps each GT's top-k in a fixed-size per-thread list: re-checked here (not only at
    // construction) because `cfg` is a public field a caller may change afterwards.
    if job.topk > MAX_TOPK {
        return Err(LossError::invalid(format!(
            "tal_topk: the CUDA backend supports at most {MAX_TOPK}, got {}",
            job.topk
        )));
    }
    Ok((head, gt))
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
    let (head, gt) = checked_inputs(job, feats, batch)?;
    let gt = DeviceGt::upload(dev, pack_gt(&head, &gt))?;
    let grids = Grids::new(&head, &gt)?;
    let levels = Levels::upload(dev, feats, job.want_grad)?;
    let (b, a) = (head.batch, head.grid.num_anchors);
    let mut layout = ArenaLayout::default();
    let assignment = AssignmentParts::plan(&mut layout, b * a, gt.slots());
    let acc = Accumulators::plan(&mut layout, &grids);
    let arena = dev.arena("detection work buffers", &layout)?;
    let params = DetParams::new(job, &head, &grids, &levels, &gt, &arena, &assignment, &acc);

    let mut kernels = Kernels::start(dev, job.timing)?;
    let uploaded = Instant::now();
    AssignmentParts::launch(&mut kernels, &params, &grids)?;
    class_pass(&mut kernels, &params, &grids)?;
    box_pass(&mut kernels, &params, &grids)?;
    let times = kernels.finish()?;
    let computed = Instant::now();

    acc.check_finite(&arena, feats)?;
    let s = assignment.divisor(&arena)?;
    let sums = acc.download(&arena)?;
    let items: Vec<f32> =
        [sums.iou, sums.bce, sums.dfl].iter().zip(job.gains).map(|(&v, g)| v as f32 / s * g as f32).collect();
    let loss: Vec<f32> = items.iter().map(|&v| v * b as f32).collect();
    let grads = levels.download_grads(into)?;
    let timing = times.map(|(kernel_ms, stage_ms)| StageTimes {
        kernel_ms,
        stage_ms,
        upload_ms: (uploaded - started).as_secs_f64() * 1e3,
        download_ms: computed.elapsed().as_secs_f64() * 1e3,
    });
    let (mut num_positives, mut positives) = (None, None);
    if job.want_assignment || job.timing != Timing::Off {
        let per_image = assignment.download(&arena, b, a)?;
        num_positives = Some(per_image.iter().map(Vec::len).sum());
        positives = job.want_assignment.then_some(per_image);
    }
    Ok(RunOut { out: LossOutput { loss, loss_items: items, grads }, assignment: positives, timing, num_positives })
}
