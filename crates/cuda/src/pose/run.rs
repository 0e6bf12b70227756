//! One evaluation of v8PoseLoss on the device: the detection stages (assignment, class and box passes; see
//! detection/run.rs), then the keypoint pass (cuda/pose.cu) over the positives they leave on the device:
//!
//! ```text
//! host:          the CPU backend's checks in its order: head (shapes, finiteness), kpts and GT keypoints, labels
//! detection:     decode, assign, resolve, scores, class, box                        detection/stages.rs
//! yl_pose_count  per (b, a): the number of positives P (the gradient scale B·gain / (P·K))
//! yl_pose_kpt    per (b, a): OKS and visibility BCE terms of the positives, the whole kpts gradient
//! download:      S, partial sums, positives, gradients
//! ```

use yolo_loss_core::detection::Head;
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::pose::{check_keypoints, PoseBatch, PoseConfig, PosePreds};
use yolo_loss_core::Result;

use super::params::{KeypointInputs, PoseParams};
use crate::detection::run::{Job, Kernels};
use crate::detection::stages::{DetectionStages, BLOCK};
use crate::detection::{Flags, Window};
use crate::launch::{int, ArenaLayout, Dev, Part};

/// The kernels (cuda/pose.cu), in launch order.
pub(crate) const COUNT: &str = "yl_pose_count";
pub(crate) const KEYPOINTS: &str = "yl_pose_kpt";

/// The keypoint pass's parts of the call's arena.
pub(crate) struct KeypointParts {
    /// Zeroed: the positives of the batch.
    pub positives: Part<u32>,
    /// Per block of the keypoint pass: OKS terms, then visibility BCE terms.
    pub sums: Part<f64>,
    pub blocks: usize,
}

impl KeypointParts {
    fn plan(layout: &mut ArenaLayout, blocks: usize) -> Self {
        KeypointParts { positives: layout.zeroed(1), sums: layout.part(2 * blocks), blocks }
    }
}

/// The GT keypoints by GT slot, `[B·M, K, D]` (the slots of image b are its labels in batch order, as the GT
/// table's; padding slots zero). `batch_idx` has been validated: integer image indices in range.
fn keypoints_by_slot(batch: &PoseBatch<f32>, images: usize, per_image: usize, kd: usize) -> Vec<f32> {
    let mut table = vec![0f32; images * per_image * kd];
    let mut filled = vec![0usize; images];
    for (row, &image) in batch.det.batch_idx.data.iter().enumerate() {
        let image = image as usize;
        let slot = image * per_image + filled[image];
        filled[image] += 1;
        table[slot * kd..(slot + 1) * kd].copy_from_slice(&batch.keypoints.data[row * kd..(row + 1) * kd]);
    }
    table
}

pub(crate) fn run(
    dev: Dev,
    cfg: &PoseConfig,
    sigmas: &[f64],
    preds: PosePreds<f32>,
    batch: &PoseBatch<f32>,
    grads: GradBufs<f32>,
) -> Result<LossValues<f32>> {
    let PosePreds { feats, kpts } = preds;
    let det = &cfg.det;
    let (k, d) = cfg.kpt_shape;
    let head = Head::validate(feats, &det.strides, det.reg_max, det.nc)?;
    check_keypoints(cfg.kpt_shape, (head.batch, head.grid.num_anchors), kpts, batch)?;
    int("kpts", kpts.data.len())?;
    let want_grad = !grads.is_empty();
    let job = Job::new(det, det.tal_topk, Window::of(det), false, Flags { grad: want_grad, ..Flags::LOSS });
    let mut layout = ArenaLayout::default();
    let stages = DetectionStages::prepare(dev, &job, feats, &batch.det, &mut layout)?;
    let blocks = stages.grids.anchor_blocks as usize;
    let parts = KeypointParts::plan(&mut layout, blocks);
    let (b, m) = (stages.head.batch, stages.gt.per_image());
    let inputs = KeypointInputs {
        kpts: dev.upload("kpts", kpts.data)?,
        grad: if want_grad { Some(dev.alloc("the gradient of kpts", kpts.data.len())?) } else { None },
        gt_kpts: dev.upload("batch.keypoints", &keypoints_by_slot(batch, b, m, k * d))?,
        sigmas: dev.upload("the keypoint sigmas", sigmas)?,
    };
    let arena = dev.arena("pose work buffers", &layout)?;
    let det_params = stages.params(&job, &arena);
    let image = stages.head.image_size();
    let gains = (det.hyp.pose, det.hyp.kobj);
    let params = PoseParams::new(det_params, &inputs, &parts, &arena, (k, d), image, gains);

    let mut kernels = Kernels::start(dev, job.timing)?;
    stages.launch(&mut kernels, &det_params)?;
    kernels.launch(COUNT, blocks as u32, BLOCK, &params)?;
    kernels.launch(KEYPOINTS, blocks as u32, BLOCK, &params)?;
    kernels.finish()?;

    // [box, cls, dfl] as the detection loss reports them, then the keypoint terms / (P·K) · gain.
    let (_, det_items) = stages.loss(&job, &arena, feats)?;
    let mut positives = [0u32];
    arena.view(parts.positives).download("the positives", &mut positives)?;
    let mut partials = vec![0f64; 2 * blocks];
    arena.view(parts.sums).download("the keypoint partial sums", &mut partials)?;
    let (pose, kobj) = (partials[..blocks].iter().sum::<f64>(), partials[blocks..].iter().sum::<f64>());
    let mut items = vec![det_items[0], 0.0, 0.0, det_items[1], det_items[2]];
    if positives[0] > 0 {
        let pk = (positives[0] as usize * k) as f64;
        items[1] = (pose / pk * det.hyp.pose) as f32;
        items[2] = (kobj / pk * det.hyp.kobj) as f32;
    }
    let loss = items.iter().map(|&v| v * b as f32).collect();

    if want_grad {
        let (levels, rest) = grads.split_at_mut(feats.len());
        stages.levels.download_grads(Some(levels))?;
        if let Some(g) = &inputs.grad {
            g.view().download("the gradient of kpts", &mut *rest[0])?;
        }
    }
    Ok((loss, items))
}
