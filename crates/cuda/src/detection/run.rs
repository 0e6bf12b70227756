//! One detection loss evaluation on the device: uploads, the six kernel launches, downloads.
//!
//! ```text
//! host:  validate shapes → labels → GT table (CPU backend's checks and messages)
//! H2D:   level tensors (once), GT table
//! K1 yl_det_decode   per (b, side, a): soft-argmax distances; zero the box channels of the gradient
//! K2 yl_det_assign   per GT slot (a block of 32–1024 threads): candidates under the box, top-k, claims,
//!                    per-anchor best overlap
//! K3 yl_det_resolve  per (b, a): conflict resolution; per-GT max t and u
//! K4 yl_det_scores   per (b, a): soft scores; S and the gradient scales (last block)
//! K5 yl_det_class    per (b, 16 classes, a): class logits, BCE sum and gradient, in one pass
//! K6 yl_det_box      per (b, a, side), positives only: CIoU and DFL terms and the box-channel gradient
//! D2H:   gradients (once), partial sums, S, flags
//! ```
//! Memory: the inputs, the gradients, and O(B·A + B·M) work buffers; nothing of size B·M·A.

use yolo_loss_core::detection::{check_preds_finite, labels_and_gt, DetBatch, Head};
use yolo_loss_core::{ErrorCode, LossError, LossOutput, Result, TensorRef};

use super::host::pack_gt;
use super::params::{DetParams, CLASS_CHUNK, MAX_LEVELS, MAX_TOPK};
use crate::launch::{int, ArenaLayout, Dev, DevBuf, DevPtr};

const BLOCK: u32 = 256;

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

fn blocks_for(n: usize) -> usize {
    n.div_ceil(BLOCK as usize)
}

/// Runs one evaluation. With `into` (caller buffers, one per level, checked by the caller) the gradients are
/// downloaded there and `RunOut.out.grads` stays empty; else, when `job.want_grad`, into fresh vectors.
pub(crate) fn run(
    dev: Dev,
    job: &Job,
    feats: &[TensorRef<f32>],
    batch: &DetBatch<f32>,
    mut into: Option<&mut [&mut [f32]]>,
) -> Result<RunOut> {
    let started = std::time::Instant::now();
    let head = Head::validate_shapes(feats, job.strides, job.reg_max, job.channels, job.cls_ch0, job.nc)?;
    // The CPU backend checks finiteness before the labels; here it is checked on the device, so a label error
    // first looks for a non-finite prediction to report instead.
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
    let packed = pack_gt(&head, &gt);
    let (b, a, m) = (head.batch, head.grid.num_anchors, gt.max_labels);
    let ba = b.checked_mul(a).filter(|&v| i32::try_from(v.div_ceil(BLOCK as usize)).is_ok()).ok_or_else(|| {
        LossError::invalid(format!("preds: {b} images × {a} anchors is too large for the CUDA kernels"))
    })?;
    int("GT slots", b * m)?;
    int("anchors", a)?;
    let anchor_blocks = blocks_for(ba);
    let score_blocks = anchor_blocks.min(SCORE_BLOCKS_MAX);
    // The decode runs a thread per (image, side, anchor), the class pass one per (image, class chunk, anchor).
    let decode_blocks = blocks_for(4 * ba);
    let class_blocks = blocks_for(ba * head.nc.div_ceil(CLASS_CHUNK));
    // The box pass, four threads (sides) per (image, anchor).
    let box_blocks = decode_blocks;
    int("decode blocks", decode_blocks)?;
    int("class blocks", class_blocks)?;

    // Inputs.
    let level_bufs: Vec<DevBuf<f32>> =
        feats.iter().enumerate().map(|(l, f)| dev.upload(&format!("preds[{l}]"), f.data)).collect::<Result<_>>()?;
    let mut grad_bufs: Vec<DevBuf<f32>> = Vec::new();
    if job.want_grad {
        for (l, f) in feats.iter().enumerate() {
            grad_bufs.push(dev.alloc(&format!("the gradient of preds[{l}]"), f.data.len())?);
        }
    }
    let gt_boxes = dev.upload("the GT boxes", &packed.boxes)?;
    let gt_ints = dev.upload("the GT classes", &packed.ints)?;

    // Work buffers: those the kernels accumulate into (zeroed), and those they write before reading.
    let slots = packed.slots;
    let mut zero_layout = ArenaLayout::default();
    let best = zero_layout.part::<u64>(ba);
    let count = zero_layout.part::<u32>(ba);
    let gt_t = zero_layout.part::<u32>(slots);
    let gt_u = zero_layout.part::<u32>(slots);
    let flags = zero_layout.part::<u32>(4);
    let zeroed = dev.arena("assigner work buffers", &zero_layout, true)?;
    let sums_len = score_blocks + class_blocks + 2 * box_blocks;
    let mut work_layout = ArenaLayout::default();
    let sums = work_layout.part::<f64>(sums_len);
    let scalars = work_layout.part::<f32>(4);
    let dist = work_layout.part::<f32>(4 * ba);
    let claim = work_layout.part::<u32>(ba);
    let pos_gt = work_layout.part::<i32>(ba);
    let pos_t = work_layout.part::<f32>(ba);
    let pos_u = work_layout.part::<f32>(ba);
    let pos_cls = work_layout.part::<i32>(ba);
    let pos_score = work_layout.part::<f32>(ba);
    let work = dev.arena("detection work buffers", &work_layout, false)?;

    let mut p = DetParams {
        levels: head.grid.levels.len() as i32,
        batch: b as i32,
        channels: head.channels as i32,
        reg_max: head.reg_max as i32,
        cls_ch0: head.cls_ch0 as i32,
        nc: head.nc as i32,
        anchors: a as i32,
        max_gt: m as i32,
        topk: job.topk as i32,
        only_cls: job.only_cls as i32,
        score_blocks: score_blocks as i32,
        class_blocks: class_blocks as i32,
        box_blocks: box_blocks as i32,
        gain_box: job.gains[0] as f32,
        gain_cls: job.gains[1] as f32,
        gain_dfl: job.gains[2] as f32,
        gt_box: gt_boxes.ptr(),
        gt_cls: gt_ints.slice(packed.cls()).ptr(),
        gt_valid: gt_ints.slice(packed.valid()).ptr(),
        img_bulk: gt_ints.slice(packed.bulk()).ptr(),
        dist: work.ptr(dist),
        best: zeroed.ptr(best),
        count: zeroed.ptr(count),
        claim: work.ptr(claim),
        pos_gt: work.ptr(pos_gt),
        pos_t: work.ptr(pos_t),
        pos_u: work.ptr(pos_u),
        pos_cls: work.ptr(pos_cls),
        pos_score: work.ptr(pos_score),
        gt_t: zeroed.ptr(gt_t),
        gt_u: zeroed.ptr(gt_u),
        scalars: work.ptr(scalars),
        sums: work.ptr(sums),
        flags: zeroed.ptr(flags),
        ..DetParams::default()
    };
    for (l, lv) in head.grid.levels.iter().enumerate() {
        p.feat[l] = level_bufs[l].ptr();
        p.grad[l] = grad_bufs.get(l).map_or(DevPtr::default(), |g| g.ptr());
        p.height[l] = lv.h as i32;
        p.width[l] = lv.w as i32;
        p.offset[l] = lv.offset as i32;
        p.stride[l] = lv.stride as f32;
    }

    // Timed runs: the host time of the uploads (waited for), the events, the downloads apart.
    let timed = job.timing != Timing::Off;
    if timed {
        dev.synchronize()?;
    }
    let uploaded = std::time::Instant::now();
    let mut events = Vec::new();
    if timed {
        events.push(dev.event()?);
    }
    let anchor_grid = anchor_blocks as u32;
    let assign_grid = if m > 0 { (b * m) as u32 } else { 0 };
    let launches = [
        (DECODE, decode_blocks as u32, BLOCK),
        (ASSIGN, assign_grid, packed.assign_threads),
        (RESOLVE, anchor_grid, BLOCK),
        (SCORES, score_blocks as u32, BLOCK),
        (CLASS, class_blocks as u32, BLOCK),
        (BOX, box_blocks as u32, BLOCK),
    ];
    let last = launches.len() - 1;
    for (k, (name, grid, threads)) in launches.into_iter().enumerate() {
        dev.launch(name, grid, threads, &p)?;
        if job.timing == Timing::PerKernel || (timed && k == last) {
            events.push(dev.event()?);
        }
    }
    if timed {
        dev.synchronize()?;
    }
    let computed = std::time::Instant::now();

    // Results: flags, S, partial sums, then the gradients.
    let mut fl = [0u32; 4];
    zeroed.view(flags).download("the status flags", &mut fl)?;
    if fl[0] != 0 {
        check_preds_finite(feats)?;
        return Err(LossError::new(
            ErrorCode::Internal,
            "the CUDA kernels saw a non-finite prediction that the host check does not find",
        ));
    }
    let mut timing = None;
    if let [Some(first), .., Some(last)] = events.as_slice() {
        let ms = |a: &cudarc::driver::CudaEvent, b: &cudarc::driver::CudaEvent| {
            a.elapsed_ms(b).map_err(|e| crate::errors::driver("reading a timing event", e))
        };
        let mut stage_ms = [f32::NAN; STAGES.len()];
        if job.timing == Timing::PerKernel {
            for (k, pair) in events.windows(2).enumerate() {
                if let [Some(a), Some(b)] = pair {
                    stage_ms[k] = ms(a, b)?;
                }
            }
        }
        timing = Some(StageTimes {
            kernel_ms: ms(first, last)?,
            stage_ms,
            upload_ms: (uploaded - started).as_secs_f64() * 1e3,
            download_ms: 0.0,
        });
    }
    let mut sc = [0f32; 4];
    work.view(scalars).download("the score divisor", &mut sc)?;
    let mut partials = vec![0f64; sums_len];
    work.view(sums).download("the loss partial sums", &mut partials)?;
    let range_sum = |from: usize, len: usize| partials[from..from + len].iter().sum::<f64>();
    let bce = range_sum(score_blocks, class_blocks);
    let iou = range_sum(score_blocks + class_blocks, box_blocks);
    let dfl = range_sum(score_blocks + class_blocks + box_blocks, box_blocks);
    let s = sc[0];
    let items: Vec<f32> = [iou, bce, dfl].iter().zip(job.gains).map(|(&v, g)| v as f32 / s * g as f32).collect();
    let loss: Vec<f32> = items.iter().map(|&v| v * b as f32).collect();

    let mut grads = Vec::new();
    for (l, g) in grad_bufs.iter().enumerate() {
        let what = format!("the gradient of preds[{l}]");
        match into.as_deref_mut() {
            Some(bufs) => g.view().download(&what, &mut *bufs[l])?,
            None => {
                let mut host = vec![0f32; feats[l].data.len()];
                g.view().download(&what, &mut host)?;
                grads.push(host);
            }
        }
    }

    if let Some(t) = timing.as_mut() {
        t.download_ms = computed.elapsed().as_secs_f64() * 1e3;
    }
    let (mut num_positives, mut assignment) = (None, None);
    if job.want_assignment || timed {
        let mut pos_gt_host = vec![0i32; ba];
        let mut pos_score_host = vec![0f32; ba];
        work.view(pos_gt).download("the assignment", &mut pos_gt_host)?;
        work.view(pos_score).download("the target scores", &mut pos_score_host)?;
        let (pos_gt, pos_score) = (pos_gt_host, pos_score_host);
        num_positives = Some(pos_gt.iter().filter(|&&g| g >= 0).count());
        let per_image: Assignment = (0..b)
            .map(|img| {
                (0..a)
                    .filter(|&an| pos_gt[img * a + an] >= 0)
                    .map(|an| (an, pos_gt[img * a + an] as usize, pos_score[img * a + an]))
                    .collect()
            })
            .collect();
        assignment = job.want_assignment.then_some(per_image);
    }
    Ok(RunOut { out: LossOutput { loss, loss_items: items, grads }, assignment, timing, num_positives })
}
