//! Launches on the CPU emulator of the kernels (emu/emu.cpp and every `cuda/*.cu`, built by build.rs), for this
//! crate's tests: any kernel, by name, with its parameter struct by pointer (the emulator checks its size).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
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
        params_size: usize,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn yl_emu_kernel_name(index: usize) -> *const c_char;
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
            std::mem::size_of::<P>(),
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

/// The kernels the emulator has, in module order.
pub(crate) fn kernels() -> Vec<String> {
    (0..)
        // SAFETY: returns null past the last kernel, else a static NUL-terminated name.
        .map(|i| unsafe { yl_emu_kernel_name(i) })
        .take_while(|p| !p.is_null())
        // SAFETY: non-null names are static C strings of the kernel table.
        .map(|p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::{Dev, DevPtr};

    /// Every kernel nvcc built for the GPU is in the emulator, and no other (both come from `cuda/*.cu`).
    #[test]
    fn emulator_has_every_kernel() {
        let mut emulated = kernels();
        emulated.sort();
        assert!(!emulated.is_empty());
        if crate::KERNELS_BUILT {
            let mut built: Vec<String> = crate::kernel_names().iter().map(|s| s.to_string()).collect();
            built.sort();
            assert_eq!(emulated, built);
        }
    }

    /// A parameter struct of another size than the kernel's is refused with a message, not read past its end.
    #[test]
    fn emulator_launches_check_the_parameter_size() {
        #[derive(Clone, Copy)]
        #[repr(C)]
        struct Small {
            x: DevPtr<f32>,
        }
        // SAFETY: plain data; launched only to be refused.
        unsafe impl cudarc::driver::DeviceRepr for Small {}
        // SAFETY: as above.
        unsafe impl KernelParams for Small {}
        let e = Dev::Emu.launch("yl_det_decode", 1, 32, &Small { x: DevPtr::default() }).unwrap_err();
        assert!(e.message.contains("takes a parameter struct of"), "{e}");
        let e = Dev::Emu.launch("yl_no_such_kernel", 1, 32, &Small { x: DevPtr::default() }).unwrap_err();
        assert!(e.message.contains("not in the emulator"), "{e}");
    }
}
