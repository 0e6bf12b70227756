//! `DetParams`: the one parameter block of the detection kernels, the Rust twin of `struct DetParams` in
//! cuda/detect.cuh (same fields, same order, `#[repr(C)]`). The emulator test compares the two layouts.

use cudarc::driver::DeviceRepr;

use super::run::Job;
use super::stages::DetectionStages;
use crate::launch::{Arena, DevPtr, KernelParams};

/// Most detection levels the kernels take (`yl::kMaxLevels`).
pub const MAX_LEVELS: usize = 8;
/// Classes per thread of the class pass (`yl::kClassChunk`).
pub(crate) const CLASS_CHUNK: usize = 16;
/// Largest `tal_topk` the CUDA assigner supports (`yl::kMaxTopk`).
pub const MAX_TOPK: usize = 32;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DetParams {
    pub feat: [DevPtr<f32>; MAX_LEVELS],
    pub grad: [DevPtr<f32>; MAX_LEVELS],
    pub height: [i32; MAX_LEVELS],
    pub width: [i32; MAX_LEVELS],
    pub offset: [i32; MAX_LEVELS],
    pub stride: [f32; MAX_LEVELS],
    pub levels: i32,
    pub batch: i32,
    pub channels: i32,
    pub reg_max: i32,
    pub cls_ch0: i32,
    pub nc: i32,
    pub anchors: i32,
    pub max_gt: i32,
    pub topk: i32,
    pub only_cls: i32,
    pub score_blocks: i32,
    pub class_blocks: i32,
    pub box_blocks: i32,
    pub pad0: i32,
    pub gain_box: f32,
    pub gain_cls: f32,
    pub gain_dfl: f32,
    pub pad1: f32,
    pub gt_box: DevPtr<f32>,
    pub gt_cls: DevPtr<i32>,
    pub gt_valid: DevPtr<i32>,
    pub img_bulk: DevPtr<i32>,
    pub dist: DevPtr<f32>,
    pub best: DevPtr<u64>,
    pub count: DevPtr<u32>,
    pub claim: DevPtr<u32>,
    pub pos_gt: DevPtr<i32>,
    pub pos_t: DevPtr<f32>,
    pub pos_u: DevPtr<f32>,
    pub pos_cls: DevPtr<i32>,
    pub pos_score: DevPtr<f32>,
    pub gt_t: DevPtr<u32>,
    pub gt_u: DevPtr<u32>,
    pub scalars: DevPtr<f32>,
    pub sums: DevPtr<f64>,
    pub flags: DevPtr<u32>,
}

// SAFETY: plain old data of fixed layout (integers, floats, device addresses), passed by value as a kernel
// parameter whose C declaration has the same layout.
unsafe impl DeviceRepr for DetParams {}
// SAFETY: every yl_det_* kernel takes one DetParams by value; the emulator test checks the layouts agree.
unsafe impl KernelParams for DetParams {}

impl DetParams {
    /// The parameters of one call's kernels: its shapes and launch sizes, and the device addresses of the
    /// stages' buffers (the one place where they are taken).
    pub fn new(job: &Job, stages: &DetectionStages, arena: &Arena) -> Self {
        let DetectionStages { head, levels, gt, grids, assignment: asg, acc } = stages;
        let mut p = DetParams {
            levels: head.grid.levels.len() as i32,
            batch: head.batch as i32,
            channels: head.channels as i32,
            reg_max: head.reg_max as i32,
            cls_ch0: head.cls_ch0 as i32,
            nc: head.nc as i32,
            anchors: head.grid.num_anchors as i32,
            max_gt: gt.per_image() as i32,
            topk: job.topk as i32,
            only_cls: job.only_cls as i32,
            score_blocks: grids.score_blocks as i32,
            class_blocks: grids.class_blocks as i32,
            box_blocks: grids.box_blocks as i32,
            gain_box: job.gains[0] as f32,
            gain_cls: job.gains[1] as f32,
            gain_dfl: job.gains[2] as f32,
            gt_box: gt.boxes(),
            gt_cls: gt.classes(),
            gt_valid: gt.valid(),
            img_bulk: gt.soft_argmax_forms(),
            dist: arena.ptr(asg.dist),
            best: arena.ptr(asg.best),
            count: arena.ptr(asg.count),
            claim: arena.ptr(asg.claim),
            pos_gt: arena.ptr(asg.pos_gt),
            pos_t: arena.ptr(asg.pos_t),
            pos_u: arena.ptr(asg.pos_u),
            pos_cls: arena.ptr(asg.pos_cls),
            pos_score: arena.ptr(asg.pos_score),
            gt_t: arena.ptr(asg.gt_t),
            gt_u: arena.ptr(asg.gt_u),
            scalars: arena.ptr(asg.scalars),
            sums: arena.ptr(acc.sums),
            flags: arena.ptr(acc.flags),
            ..DetParams::default()
        };
        for (l, lv) in head.grid.levels.iter().enumerate() {
            p.feat[l] = levels.feat(l);
            p.grad[l] = levels.grad(l);
            p.height[l] = lv.h as i32;
            p.width[l] = lv.w as i32;
            p.offset[l] = lv.offset as i32;
            p.stride[l] = lv.stride as f32;
        }
        p
    }
}

/// Byte offsets of a few fields, in the order `yl_emu_det_params_layout` reports them.
#[cfg(test)]
pub(crate) fn layout_probe() -> (usize, [usize; 9]) {
    use std::mem::offset_of;
    (
        std::mem::size_of::<DetParams>(),
        [
            offset_of!(DetParams, grad),
            offset_of!(DetParams, height),
            offset_of!(DetParams, stride),
            offset_of!(DetParams, levels),
            offset_of!(DetParams, box_blocks),
            offset_of!(DetParams, gain_box),
            offset_of!(DetParams, gt_box),
            offset_of!(DetParams, dist),
            offset_of!(DetParams, flags),
        ],
    )
}
