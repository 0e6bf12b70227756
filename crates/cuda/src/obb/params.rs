//! `ObbParams`: the parameter block of the oriented-box kernels, the Rust twin of `struct ObbParams` in
//! cuda/obb.cuh (same fields, same order, `#[repr(C)]`): the detection stages' `DetParams`, then the rotated
//! inputs. The emulator test compares the two layouts.

use cudarc::driver::DeviceRepr;

use crate::detection::params::DetParams;
use crate::launch::{DevBuf, DevPtr, KernelParams};

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ObbParams {
    pub det: DetParams,
    pub angle: DevPtr<f32>,
    pub angle_grad: DevPtr<f32>,
    pub gt_rbox: DevPtr<f32>,
}

// SAFETY: plain old data of fixed layout (integers, floats, device addresses), passed by value as a kernel
// parameter whose C declaration has the same layout.
unsafe impl DeviceRepr for ObbParams {}
// SAFETY: every yl_obb_* kernel takes one ObbParams by value; the emulator test checks the layouts agree.
unsafe impl KernelParams for ObbParams {}

/// The rotated inputs on the device.
pub(crate) struct RotatedInputs {
    pub angle: DevBuf<f32>,
    pub angle_grad: Option<DevBuf<f32>>,
    pub gt_rbox: DevBuf<f32>,
}

impl ObbParams {
    pub fn new(det: DetParams, inputs: &RotatedInputs) -> Self {
        ObbParams {
            det,
            angle: inputs.angle.ptr(),
            angle_grad: inputs.angle_grad.as_ref().map_or(DevPtr::default(), DevBuf::ptr),
            gt_rbox: inputs.gt_rbox.ptr(),
        }
    }
}

/// (size, offsets of the rotated fields), in the order `yl_emu_obb_params_layout` reports them.
#[cfg(test)]
pub(crate) fn layout_probe() -> (usize, [usize; 3]) {
    use std::mem::offset_of;
    (
        std::mem::size_of::<ObbParams>(),
        [offset_of!(ObbParams, angle), offset_of!(ObbParams, angle_grad), offset_of!(ObbParams, gt_rbox)],
    )
}
