//! The stages every detection-family loss shares, prepared for one call: the checked inputs on the device, the
//! launch sizes, and the work-arena parts of the assignment (assign.rs) and of the class and box passes
//! (passes.rs). A task launches them in order and adds passes of its own (see run.rs and the crate's README.md).

use yolo_loss_core::detection::{check_preds_finite, labels_and_gt, DetBatch, Head, LossValues};
use yolo_loss_core::labels::GtTable;
use yolo_loss_core::{LossError, Result, TensorRef};

use super::assign::AssignmentParts;
use super::host::{pack_gt, PackedGt};
use super::inputs::{DeviceGt, Levels};
use super::params::{DetParams, CLASS_CHUNK, MAX_LEVELS, MAX_TOPK};
use super::passes::{box_pass, class_pass, Accumulators};
use super::run::{Job, Kernels};
use crate::launch::{int, Arena, ArenaLayout, Dev};

/// Threads per block of every kernel but the assign kernel's.
pub(crate) const BLOCK: u32 = 256;

/// Most blocks of the score pass (its partials are summed by its last block).
const SCORE_BLOCKS_MAX: usize = 1024;

/// One call's detection stages up to their launch: inputs on the device, launch sizes, and the parts of the work
/// arena they use (reserved in the caller's layout, so that a task's own passes share the one allocation).
pub(crate) struct DetectionStages<'a> {
    pub head: Head<'a, f32>,
    pub levels: Levels,
    pub gt: DeviceGt,
    pub grids: Grids,
    pub assignment: AssignmentParts,
    pub acc: Accumulators,
}

impl<'a> DetectionStages<'a> {
    /// Checks the inputs as the CPU backend does, uploads them, and reserves the stages' parts in `layout`.
    pub fn prepare(
        dev: Dev,
        job: &Job,
        feats: &[TensorRef<'a, f32>],
        batch: &DetBatch<f32>,
        layout: &mut ArenaLayout,
    ) -> Result<Self> {
        let (head, gt) = checked_inputs(job, feats, batch)?;
        let packed = pack_gt(&head, &gt);
        Self::with_gt(dev, job, head, packed, feats, layout)
    }

    /// The stages of a head and GT table that the caller checked and packed (a task with labels of its own kind).
    pub fn with_gt(
        dev: Dev,
        job: &Job,
        head: Head<'a, f32>,
        packed: PackedGt,
        feats: &[TensorRef<'a, f32>],
        layout: &mut ArenaLayout,
    ) -> Result<Self> {
        let gt = DeviceGt::upload(dev, packed)?;
        let grids = Grids::new(&head, &gt)?;
        let levels = Levels::upload(dev, feats, job.want_grad)?;
        let assignment = AssignmentParts::plan(layout, head.batch * head.grid.num_anchors, gt.slots());
        let acc = Accumulators::plan(layout, &grids);
        Ok(DetectionStages { head, levels, gt, grids, assignment, acc })
    }

    /// The kernels' parameters, once the arena of the layout exists.
    pub fn params(&self, job: &Job, arena: &Arena) -> DetParams {
        DetParams::new(job, self, arena)
    }

    /// Queues the assignment, the class pass and the box pass.
    pub fn launch(&self, kernels: &mut Kernels, p: &DetParams) -> Result<()> {
        AssignmentParts::launch(kernels, p, &self.grids)?;
        class_pass(kernels, p, &self.grids)?;
        box_pass(kernels, p, &self.grids)
    }

    /// After the kernels: (loss, items) of the three terms, the sums over the batch divided by S times the gains
    /// (items) and times B (loss); or the error of a non-finite prediction the kernels saw.
    pub fn loss(&self, job: &Job, arena: &Arena, feats: &[TensorRef<f32>]) -> Result<LossValues<f32>> {
        self.acc.check_finite(arena, feats)?;
        let s = self.assignment.divisor(arena)?;
        let sums = self.acc.download(arena)?;
        let items: Vec<f32> =
            [sums.iou, sums.bce, sums.dfl].iter().zip(job.gains).map(|(&v, g)| v as f32 / s * g as f32).collect();
        let loss = items.iter().map(|&v| v * self.head.batch as f32).collect();
        Ok((loss, items))
    }
}

/// Launch sizes of one call's kernels (blocks per grid; the assign kernel's threads per block).
pub(crate) struct Grids {
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
