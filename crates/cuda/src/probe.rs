//! Can CUDA be used here? A cached probe of the driver library, the driver, the device and the build.
//!
//! cudarc's dynamic loading panics when the driver library or one of its symbols is missing, so the probe first
//! asks `is_culib_present()` and then runs every driver call under `catch_unwind`: the answer is always a value,
//! never a panic. The probe is cheap (no context is created); [`crate::gpu`] does the expensive part.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use cudarc::driver::{result, sys};

use crate::embedded::{required_driver_version, BUILD_NOTE, KERNELS_BUILT, NVCC_RELEASE};
use crate::errors::{driver_error_name, panic_message};

/// Whether the CUDA backend can run on this machine, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available { device_name: String },
    Unavailable { reason: String },
}

/// The reason given when the driver library cannot be opened (no NVIDIA driver installed).
#[cfg(windows)]
pub(crate) const DRIVER_LIBRARY_MISSING: &str = "CUDA driver library (nvcuda.dll) not found";
#[cfg(not(windows))]
pub(crate) const DRIVER_LIBRARY_MISSING: &str = "CUDA driver library (libcuda.so) not found";

/// The device every computation runs on. CUDA_VISIBLE_DEVICES selects which physical GPU that is.
pub(crate) const DEVICE_ORDINAL: i32 = 0;

/// The oldest GPUs the PTX targets (compute_75, Turing).
const MIN_COMPUTE_CAPABILITY: (i32, i32) = (7, 5);

/// Probes the driver and the device without panicking. The first call does the work; later calls return the
/// same answer (drivers and GPUs do not come and go during a process's life, and cuInit is not cheap).
pub fn availability() -> Availability {
    static PROBE: OnceLock<Availability> = OnceLock::new();
    PROBE
        .get_or_init(|| match catch_unwind(AssertUnwindSafe(probe)) {
            Ok(Ok(device_name)) => Availability::Available { device_name },
            Ok(Err(reason)) => Availability::Unavailable { reason },
            Err(panic) => Availability::Unavailable {
                reason: format!("the CUDA driver probe failed: {}", panic_message(&*panic)),
            },
        })
        .clone()
}

/// Ok(device name) or Err(why not), checked from the machine up to the build: driver library, driver, device,
/// compute capability, kernels present, driver new enough for the PTX.
fn probe() -> Result<String, String> {
    // SAFETY: only tries to open the library (dlopen); cudarc keeps no state from this call.
    if !unsafe { sys::is_culib_present() } {
        return Err(DRIVER_LIBRARY_MISSING.to_string());
    }
    if let Err(e) = result::init() {
        return Err(match e.0 {
            sys::CUresult::CUDA_ERROR_NO_DEVICE => "no CUDA device found (the driver reports none)".to_string(),
            _ => format!("the CUDA driver failed to initialise ({})", driver_error_name(e)),
        });
    }
    let count =
        result::device::get_count().map_err(|e| format!("cannot count CUDA devices ({})", driver_error_name(e)))?;
    if count <= DEVICE_ORDINAL {
        return Err("no CUDA device found".to_string());
    }
    let dev = result::device::get(DEVICE_ORDINAL)
        .map_err(|e| format!("cannot open CUDA device 0 ({})", driver_error_name(e)))?;
    let name = result::device::get_name(dev)
        .map_err(|e| format!("cannot read the name of CUDA device 0 ({})", driver_error_name(e)))?;
    let cc = compute_capability(dev)
        .map_err(|e| format!("cannot read the compute capability of {name} ({})", driver_error_name(e)))?;
    if cc < MIN_COMPUTE_CAPABILITY {
        return Err(format!(
            "{name} has compute capability {}.{}; the CUDA kernels need {}.{} (Turing) or newer",
            cc.0, cc.1, MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
        ));
    }
    if !KERNELS_BUILT {
        return Err(format!("this build of yolo-loss has no CUDA kernels: {BUILD_NOTE}"));
    }
    let version =
        driver_version().map_err(|e| format!("cannot read the CUDA driver version ({})", driver_error_name(e)))?;
    if let Some(required) = required_driver_version().filter(|&r| version < r) {
        return Err(format!(
            "the NVIDIA driver supports CUDA {}.{}, but the kernels were compiled by nvcc {NVCC_RELEASE} and need a \
             driver for CUDA {}.{} or newer: update the driver, or rebuild with an older nvcc",
            version / 1000,
            version % 1000 / 10,
            required / 1000,
            required % 1000 / 10
        ));
    }
    Ok(name)
}

fn compute_capability(dev: sys::CUdevice) -> Result<(i32, i32), result::DriverError> {
    use sys::CUdevice_attribute::{
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR,
    };
    // SAFETY: dev came from cuDeviceGet; reading attributes has no other precondition.
    unsafe { Ok((result::device::get_attribute(dev, MAJOR)?, result::device::get_attribute(dev, MINOR)?)) }
}

/// cuDriverGetVersion: 1000·major + 10·minor of the newest CUDA the installed driver supports.
fn driver_version() -> Result<i32, result::DriverError> {
    let mut version = 0;
    // SAFETY: writes one int through a valid pointer.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result()?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_without_panicking_and_is_cached() {
        let first = availability();
        assert_eq!(first, availability());
        match &first {
            Availability::Available { device_name } => assert!(!device_name.is_empty()),
            Availability::Unavailable { reason } => {
                assert!(!reason.is_empty());
                // SAFETY: as in probe().
                if !unsafe { sys::is_culib_present() } {
                    assert_eq!(reason, DRIVER_LIBRARY_MISSING);
                }
            }
        }
        let mut err = std::io::stderr();
        let _ = std::io::Write::write_all(&mut err, format!("note: CUDA availability here: {first:?}\n").as_bytes());
    }
}
