//! The CPU emulator of the detection kernels (emu/emu.cpp, built by build.rs), for this crate's tests.

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::sync::Mutex;

use yolo_loss_core::{ErrorCode, LossError, Result};

use super::params::DetParams;

#[link(name = "yl_emu", kind = "static")]
extern "C" {
    fn yl_emu_launch(
        name: *const c_char,
        gx: c_uint,
        gy: c_uint,
        block: c_uint,
        params: *const c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn yl_emu_det_params_layout(offsets: *mut usize, n: usize) -> usize;
    fn yl_emu_bce_sigmoid(x: f32, loss: *mut f32, sig: *mut f32);
}

/// The emulator has global state (one launch at a time).
static LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn launch(name: &str, grid: u32, block: u32, p: &DetParams) -> Result<()> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cname = CString::new(name).expect("kernel names have no NUL");
    let mut err = vec![0u8; 512];
    // SAFETY: `p` outlives the call; the emulator reads it as the DetParams of emu.hpp (layout checked by a test)
    // and writes at most `err.len()` bytes of message.
    let rc = unsafe {
        yl_emu_launch(
            cname.as_ptr(),
            grid,
            1,
            block,
            p as *const DetParams as *const c_void,
            err.as_mut_ptr() as *mut c_char,
            err.len(),
        )
    };
    if rc != 0 {
        let msg = String::from_utf8_lossy(&err[..err.iter().position(|&b| b == 0).unwrap_or(err.len())]).into_owned();
        return Err(LossError::new(ErrorCode::Internal, format!("emulated {name}: {msg}")));
    }
    Ok(())
}

/// (size, field offsets) of DetParams as the C++ compiler lays it out.
pub(crate) fn cxx_layout() -> (usize, [usize; 9]) {
    let mut offsets = [0usize; 9];
    // SAFETY: writes at most 9 offsets into the array.
    let size = unsafe { yl_emu_det_params_layout(offsets.as_mut_ptr(), offsets.len()) };
    (size, offsets)
}

/// (BCE(x, 0), σ(x)) as the kernels compute them (yl::bce_sigmoid of cuda/detect.cuh).
pub(crate) fn kernel_bce_sigmoid(x: f32) -> (f32, f32) {
    let (mut l, mut s) = (0.0, 0.0);
    // SAFETY: a pure function of x writing two floats into the locals.
    unsafe { yl_emu_bce_sigmoid(x, &mut l, &mut s) };
    (l, s)
}
