//! Launches on the CPU emulator of the kernels (emu/emu.cpp and every `cuda/*.cu`, built by build.rs), for this
//! crate's tests.

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::sync::Mutex;

use yolo_loss_core::{ErrorCode, LossError, Result};

use super::KernelParams;

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
}

/// The emulator has global state (one launch at a time).
static LOCK: Mutex<()> = Mutex::new(());

pub(crate) fn launch<P: KernelParams>(name: &str, grid: u32, block: u32, params: &P) -> Result<()> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cname = CString::new(name).expect("kernel names have no NUL");
    let mut err = vec![0u8; 512];
    // SAFETY: `params` outlives the call; the emulator reads it as the kernel's parameter struct (same layout:
    // KernelParams' contract) and writes at most `err.len()` bytes of message.
    let rc = unsafe {
        yl_emu_launch(
            cname.as_ptr(),
            grid,
            1,
            block,
            params as *const P as *const c_void,
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
