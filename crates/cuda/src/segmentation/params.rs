//! `SegParams`: the parameter block of the segmentation kernels, the Rust twin of `struct SegParams` in
//! cuda/seg.cuh (same fields, same order, `#[repr(C)]`). The emulator test compares the two layouts.

use cudarc::driver::DeviceRepr;

use super::run::{MaskInputs, MaskParts};
use crate::detection::stages::DetectionStages;
use crate::launch::{Arena, DevPtr, KernelParams};

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SegParams {
    pub batch: i32,
    pub anchors: i32,
    pub max_gt: i32,
    pub nm: i32,
    pub mh: i32,
    pub mw: i32,
    pub gt_h: i32,
    pub gt_w: i32,
    pub overlap: i32,
    pub only_cls: i32,
    pub pad0: i32,
    pub pad1: i32,
    pub gain_box: f32,
    pub img_h: f32,
    pub img_w: f32,
    pub pad2: f32,
    pub gt_box: DevPtr<f32>,
    pub pos_gt: DevPtr<i32>,
    pub pred_masks: DevPtr<f32>,
    pub proto: DevPtr<f32>,
    pub masks: DevPtr<f32>,
    pub src_row: DevPtr<i32>,
    pub src_col: DevPtr<i32>,
    pub slot_mask: DevPtr<i32>,
    pub pos_anchor: DevPtr<i32>,
    pub pos_start: DevPtr<i32>,
    pub scalars: DevPtr<f32>,
    pub crops: DevPtr<i32>,
    pub ups: DevPtr<f32>,
    pub values: DevPtr<f64>,
    pub grad_coef: DevPtr<f32>,
    pub grad_proto: DevPtr<f32>,
}

// SAFETY: plain old data of fixed layout (integers, floats, device addresses), passed by value as a kernel
// parameter whose C declaration has the same layout.
unsafe impl DeviceRepr for SegParams {}
// SAFETY: every yl_seg_* kernel takes one SegParams by value; the emulator test checks the layouts agree.
unsafe impl KernelParams for SegParams {}

impl SegParams {
    /// The parameters of one call's mask kernels: shapes from the detection stages and the mask inputs, device
    /// addresses of their buffers (the one place where they are taken).
    pub fn new(
        stages: &DetectionStages,
        inputs: &MaskInputs,
        parts: &MaskParts,
        arena: &Arena,
        only_cls: bool,
    ) -> Self {
        let (img_h, img_w) = stages.head.image_size();
        let grad = |p| if parts.want_grad { arena.ptr(p) } else { DevPtr::default() };
        SegParams {
            batch: stages.head.batch as i32,
            anchors: stages.head.grid.num_anchors as i32,
            max_gt: stages.gt.per_image() as i32,
            nm: inputs.nm as i32,
            mh: inputs.mh as i32,
            mw: inputs.mw as i32,
            gt_h: inputs.gt_h as i32,
            gt_w: inputs.gt_w as i32,
            overlap: inputs.overlap as i32,
            only_cls: only_cls as i32,
            gain_box: inputs.gain_box as f32,
            img_h,
            img_w,
            gt_box: stages.gt.boxes(),
            pos_gt: arena.ptr(stages.assignment.pos_gt),
            pred_masks: inputs.pred_masks.ptr(),
            proto: inputs.proto.ptr(),
            masks: inputs.masks.ptr(),
            src_row: inputs.index.slice(inputs.rows.clone()).ptr(),
            src_col: inputs.index.slice(inputs.cols.clone()).ptr(),
            slot_mask: inputs.index.slice(inputs.slots.clone()).ptr(),
            pos_anchor: arena.ptr(parts.pos_anchor),
            pos_start: arena.ptr(parts.pos_start),
            scalars: arena.ptr(parts.scalars),
            crops: arena.ptr(parts.crops),
            ups: arena.ptr(parts.ups),
            values: arena.ptr(parts.values),
            grad_coef: grad(parts.grad_coef),
            grad_proto: grad(parts.grad_proto),
            ..SegParams::default()
        }
    }
}

/// Byte offsets of a few fields, in the order `yl_emu_seg_params_layout` reports them.
#[cfg(test)]
pub(crate) fn layout_probe() -> (usize, [usize; 9]) {
    use std::mem::offset_of;
    (
        std::mem::size_of::<SegParams>(),
        [
            offset_of!(SegParams, mh),
            offset_of!(SegParams, overlap),
            offset_of!(SegParams, gain_box),
            offset_of!(SegParams, gt_box),
            offset_of!(SegParams, masks),
            offset_of!(SegParams, slot_mask),
            offset_of!(SegParams, scalars),
            offset_of!(SegParams, ups),
            offset_of!(SegParams, grad_proto),
        ],
    )
}
