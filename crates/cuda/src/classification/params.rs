//! `ClsParams`: the parameter block of the classification kernel, the Rust twin of `struct ClsParams` in
//! cuda/cls.cuh (same fields, same order, `#[repr(C)]`). The emulator test compares the two layouts.

use cudarc::driver::DeviceRepr;

use crate::launch::{DevBuf, DevPtr, KernelParams};

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClsParams {
    pub logits: DevPtr<f32>,
    pub target: DevPtr<i32>,
    pub grad: DevPtr<f32>,
    pub row_loss: DevPtr<f32>,
    pub batch: i32,
    pub nc: i32,
}

// SAFETY: plain old data of fixed layout (integers, device addresses), passed by value as a kernel parameter whose C
// declaration has the same layout.
unsafe impl DeviceRepr for ClsParams {}
// SAFETY: yl_cls_xent takes one ClsParams by value; the emulator test checks the layouts agree.
unsafe impl KernelParams for ClsParams {}

impl ClsParams {
    /// The parameters of one call: the device addresses of its buffers (`grad` None: loss only).
    pub fn new(
        (batch, nc): (i32, i32),
        logits: &DevBuf<f32>,
        target: &DevBuf<i32>,
        grad: Option<&DevBuf<f32>>,
        row_loss: &DevBuf<f32>,
    ) -> Self {
        ClsParams {
            logits: logits.ptr(),
            target: target.ptr(),
            grad: grad.map_or(DevPtr::default(), DevBuf::ptr),
            row_loss: row_loss.ptr(),
            batch,
            nc,
        }
    }
}

/// (size, offsets of the fields after the first), in the order `yl_emu_cls_params_layout` reports them.
#[cfg(test)]
pub(crate) fn layout_probe() -> (usize, [usize; 5]) {
    use std::mem::offset_of;
    (
        std::mem::size_of::<ClsParams>(),
        [
            offset_of!(ClsParams, target),
            offset_of!(ClsParams, grad),
            offset_of!(ClsParams, row_loss),
            offset_of!(ClsParams, batch),
            offset_of!(ClsParams, nc),
        ],
    )
}
