//! `PoseParams`: the parameter block of the pose kernels, the Rust twin of `struct PoseParams` in cuda/pose.cuh
//! (same fields, same order, `#[repr(C)]`): the detection stages' `DetParams`, then the keypoint pass's own. The
//! emulator test compares the two layouts.

use cudarc::driver::DeviceRepr;

use super::run::KeypointParts;
use crate::detection::params::DetParams;
use crate::launch::{Arena, DevBuf, DevPtr, KernelParams};

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PoseParams {
    pub det: DetParams,
    pub kpts: DevPtr<f32>,
    pub kpts_grad: DevPtr<f32>,
    pub gt_kpts: DevPtr<f32>,
    pub sigmas: DevPtr<f64>,
    pub positives: DevPtr<u32>,
    pub sums: DevPtr<f64>,
    pub k: i32,
    pub d: i32,
    pub blocks: i32,
    pub pad0: i32,
    pub img_h: f32,
    pub img_w: f32,
    pub pad1: f32,
    pub pad2: f32,
    pub gain_pose: f64,
    pub gain_kobj: f64,
}

// SAFETY: plain old data of fixed layout (integers, floats, device addresses), passed by value as a kernel
// parameter whose C declaration has the same layout.
unsafe impl DeviceRepr for PoseParams {}
// SAFETY: every yl_pose_* kernel takes one PoseParams by value; the emulator test checks the layouts agree.
unsafe impl KernelParams for PoseParams {}

/// The keypoint pass's inputs on the device.
pub(crate) struct KeypointInputs {
    pub kpts: DevBuf<f32>,
    pub grad: Option<DevBuf<f32>>,
    pub gt_kpts: DevBuf<f32>,
    pub sigmas: DevBuf<f64>,
}

impl PoseParams {
    /// The detection stages' parameters plus the keypoint pass's buffers: `(k, d)` the keypoint shape, the image
    /// size in pixels, the pose and kobj gains.
    pub fn new(
        det: DetParams,
        inputs: &KeypointInputs,
        parts: &KeypointParts,
        arena: &Arena,
        (k, d): (usize, usize),
        (img_h, img_w): (f32, f32),
        (gain_pose, gain_kobj): (f64, f64),
    ) -> Self {
        PoseParams {
            det,
            kpts: inputs.kpts.ptr(),
            kpts_grad: inputs.grad.as_ref().map_or(DevPtr::default(), DevBuf::ptr),
            gt_kpts: inputs.gt_kpts.ptr(),
            sigmas: inputs.sigmas.ptr(),
            positives: arena.ptr(parts.positives),
            sums: arena.ptr(parts.sums),
            k: k as i32,
            d: d as i32,
            blocks: parts.blocks as i32,
            img_h,
            img_w,
            gain_pose,
            gain_kobj,
            ..PoseParams::default()
        }
    }
}

/// (size, offsets of the keypoint pass's fields), in the order `yl_emu_pose_params_layout` reports them.
#[cfg(test)]
pub(crate) fn layout_probe() -> (usize, [usize; 9]) {
    use std::mem::offset_of;
    (
        std::mem::size_of::<PoseParams>(),
        [
            offset_of!(PoseParams, kpts),
            offset_of!(PoseParams, kpts_grad),
            offset_of!(PoseParams, gt_kpts),
            offset_of!(PoseParams, sigmas),
            offset_of!(PoseParams, positives),
            offset_of!(PoseParams, sums),
            offset_of!(PoseParams, k),
            offset_of!(PoseParams, img_h),
            offset_of!(PoseParams, gain_pose),
        ],
    )
}
