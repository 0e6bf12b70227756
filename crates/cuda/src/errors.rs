//! CUDA failures as [`LossError`]s: what the JavaScript caller sees as `error.code` and `error.message`.
//!
//! * Out of device memory → `ERR_CUDA_OUT_OF_MEMORY`, with the request size and the device's free memory.
//! * The backend cannot start (no driver, no device, kernels rejected) → `ERR_CUDA_UNAVAILABLE`.
//! * Anything failing later (a launch, a copy) → `ERR_INTERNAL`, naming the CUDA error and what was being done.

use std::any::Any;

use cudarc::driver::{result, sys, DriverError};
use yolo_loss_core::{ErrorCode, LossError};

pub(crate) fn unavailable(reason: impl Into<String>) -> LossError {
    LossError::new(ErrorCode::CudaUnavailable, reason)
}

/// A failed driver call while `doing` something, after the backend was up.
pub(crate) fn driver(doing: &str, e: DriverError) -> LossError {
    if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        return LossError::new(ErrorCode::CudaOutOfMemory, format!("GPU out of memory while {doing}{}", free_memory()));
    }
    LossError::new(ErrorCode::Internal, format!("CUDA error while {doing}: {}", driver_error_name(e)))
}

/// A failed allocation of `bytes` for `what`.
pub(crate) fn alloc(what: &str, bytes: usize, e: DriverError) -> LossError {
    driver(&format!("allocating {} for {what}", mib(bytes)), e)
}

/// A failure while opening the device: the backend is unavailable, whatever the CUDA error.
pub(crate) fn opening(doing: &str, e: DriverError) -> LossError {
    let hint = match e.0 {
        sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {
            "; the driver is older than the nvcc that compiled the kernels: update the NVIDIA driver"
        }
        sys::CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU => {
            "; this build has no SASS for this GPU and its PTX does not run there (see cudaAvailability())"
        }
        sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => "; the GPU has no memory left for a context",
        _ => "",
    };
    unavailable(format!("CUDA could not be started: {doing} failed ({}){hint}", driver_error_name(e)))
}

/// "CUDA_ERROR_OUT_OF_MEMORY: out of memory", or the raw code when the driver cannot name it.
pub(crate) fn driver_error_name(e: DriverError) -> String {
    let text = |s: Result<&std::ffi::CStr, DriverError>| s.ok().map(|c| c.to_string_lossy().into_owned());
    match (text(e.error_name()), text(e.error_string())) {
        (Some(name), Some(what)) => format!("{name}: {what}"),
        (Some(name), None) => name,
        _ => format!("{:?}", e.0),
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn free_memory() -> String {
    match result::mem_get_info() {
        Ok((free, total)) => format!(" ({} free of {})", mib(free), mib(total)),
        Err(_) => String::new(),
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
