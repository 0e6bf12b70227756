//! Can CUDA be used here, and on which GPUs? A cached probe of the driver library, the driver, every device and
//! the build.
//!
//! cudarc's dynamic loading panics when the driver library or one of its symbols is missing, so the probe first
//! asks `is_culib_present()` and then runs every driver call under `catch_unwind`: the answer is always a value,
//! never a panic. The probe is cheap (no context is created); [`crate::gpu`] does the expensive part.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use cudarc::driver::{result, sys};

use crate::embedded::{
    kernel_source, required_driver_version, KernelSource, BUILD_NOTE, KERNELS_BUILT, NVCC_RELEASE, SASS_ARCHS,
};
use crate::errors::{driver_error_name, panic_message};

/// Whether the CUDA backend can run on the default device (`cuda:0`), and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available { device_name: String },
    Unavailable { reason: String },
}

/// One GPU as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its CUDA ordinal: `device: 'cuda:<ordinal>'` (after CUDA_VISIBLE_DEVICES).
    pub ordinal: usize,
    pub name: String,
    /// (major, minor).
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
    /// What the driver will run there from this build's fatbins, by its rule (see `embedded::source_for`); None
    /// when nothing of this build runs on it. Once the device is opened, [`crate::Gpu::kernel_source`] says what
    /// the driver actually chose.
    pub kernels: Option<KernelSource>,
    /// None when the CUDA backend can run on it; otherwise why not.
    pub unusable: Option<String>,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    /// `cuDriverGetVersion` (1000·major + 10·minor of the newest CUDA the driver supports), when a driver answered.
    pub driver_version: Option<i32>,
    /// Every device the driver reports, in ordinal order.
    pub devices: Vec<DeviceInfo>,
    /// Why no device can be used at all (no driver, the driver failed, none found); None when the answer is per
    /// device.
    pub problem: Option<String>,
}

/// The reason given when the driver library cannot be opened (no NVIDIA driver installed).
#[cfg(windows)]
pub(crate) const DRIVER_LIBRARY_MISSING: &str = "CUDA driver library (nvcuda.dll) not found";
#[cfg(not(windows))]
pub(crate) const DRIVER_LIBRARY_MISSING: &str = "CUDA driver library (libcuda.so) not found";

/// Probes the driver and every device without panicking. The first call does the work; later calls return the same
/// answer (drivers and GPUs do not come and go during a process's life, and cuInit is not cheap).
pub fn devices() -> &'static Devices {
    static PROBE: OnceLock<Devices> = OnceLock::new();
    PROBE.get_or_init(|| {
        catch_unwind(AssertUnwindSafe(probe_all)).unwrap_or_else(|panic| Devices {
            driver_version: None,
            devices: Vec::new(),
            problem: Some(format!("the CUDA driver probe failed: {}", panic_message(&*panic))),
        })
    })
}

/// Device `ordinal` if the CUDA backend can run on it, else why not (`ERR_CUDA_UNAVAILABLE`'s message).
pub fn usable_device(ordinal: usize) -> Result<&'static DeviceInfo, String> {
    let found = devices();
    if let Some(problem) = &found.problem {
        return Err(problem.clone());
    }
    let device = found.devices.get(ordinal).ok_or_else(|| {
        let n = found.devices.len();
        let which = if n == 1 {
            "1 CUDA device was found (cuda:0)".to_string()
        } else {
            format!("{n} CUDA devices were found (cuda:0 to cuda:{})", n - 1)
        };
        format!("cuda:{ordinal} does not exist: {which}")
    })?;
    match &device.unusable {
        Some(reason) => Err(reason.clone()),
        None => Ok(device),
    }
}

/// Whether the CUDA backend can run on `cuda:0`, and if not, why.
pub fn availability() -> Availability {
    match usable_device(0) {
        Ok(device) => Availability::Available { device_name: device.name.clone() },
        Err(reason) => Availability::Unavailable { reason },
    }
}

/// The driver, then every device (name, compute capability, memory, whether it can run this build's kernels).
fn probe_all() -> Devices {
    let none = |problem: String| Devices { driver_version: None, devices: Vec::new(), problem: Some(problem) };
    // SAFETY: only tries to open the library (dlopen); cudarc keeps no state from this call.
    if !unsafe { sys::is_culib_present() } {
        return none(DRIVER_LIBRARY_MISSING.to_string());
    }
    if let Err(e) = result::init() {
        return none(match e.0 {
            sys::CUresult::CUDA_ERROR_NO_DEVICE => "no CUDA device found (the driver reports none)".to_string(),
            _ => format!("the CUDA driver failed to initialise ({})", driver_error_name(e)),
        });
    }
    let version = match driver_version() {
        Ok(v) => v,
        Err(e) => return none(format!("cannot read the CUDA driver version ({})", driver_error_name(e))),
    };
    let count = match result::device::get_count() {
        Ok(n) => usize::try_from(n).unwrap_or(0),
        Err(e) => return none(format!("cannot count CUDA devices ({})", driver_error_name(e))),
    };
    if count == 0 {
        return Devices {
            driver_version: Some(version),
            devices: Vec::new(),
            problem: Some("no CUDA device found".into()),
        };
    }
    let devices = (0..count).map(|ordinal| probe_device(ordinal, version)).collect();
    Devices { driver_version: Some(version), devices, problem: None }
}

/// One device; a driver call that fails leaves it listed as unusable with the reason.
fn probe_device(ordinal: usize, driver_version: i32) -> DeviceInfo {
    let mut info = DeviceInfo {
        ordinal,
        name: format!("cuda:{ordinal}"),
        compute_capability: (0, 0),
        total_memory_bytes: 0,
        kernels: None,
        unusable: None,
    };
    if let Err(why) = read_device(&mut info) {
        info.unusable = Some(why);
        return info;
    }
    info.kernels = kernel_source(info.compute_capability);
    info.unusable = why_unusable(&info, driver_version).err();
    info
}

fn read_device(info: &mut DeviceInfo) -> Result<(), String> {
    let ordinal = info.ordinal;
    let fail = |what: &str, e| format!("cannot read the {what} of CUDA device {ordinal} ({})", driver_error_name(e));
    let dev = result::device::get(ordinal as i32).map_err(|e| fail("handle", e))?;
    info.name = result::device::get_name(dev).map_err(|e| fail("name", e))?;
    info.compute_capability = compute_capability(dev).map_err(|e| fail("compute capability", e))?;
    // SAFETY: dev came from cuDeviceGet.
    info.total_memory_bytes = unsafe { result::device::total_mem(dev) }.map_err(|e| fail("memory size", e))?;
    Ok(())
}

/// Checked from the device up to the build: compute capability, kernels present, driver new enough for what the
/// driver will run (SASS: any driver of the nvcc's CUDA major; PTX JIT: a driver at least as new as the nvcc).
fn why_unusable(info: &DeviceInfo, driver_version: i32) -> Result<(), String> {
    let (name, (major, minor)) = (&info.name, info.compute_capability);
    if !KERNELS_BUILT {
        return Err(format!("this build of yolo-loss has no CUDA kernels: {BUILD_NOTE}"));
    }
    let Some(source) = info.kernels else {
        let oldest = SASS_ARCHS.first().copied().unwrap_or_default();
        return Err(format!(
            "{name} has compute capability {major}.{minor}; the CUDA kernels need {}.{} (Turing) or newer",
            oldest / 10,
            oldest % 10
        ));
    };
    let Some(required) = required_driver_version(source).filter(|&r| driver_version < r) else {
        return Ok(());
    };
    let have = format!("{}.{}", driver_version / 1000, driver_version % 1000 / 10);
    let want = format!("{}.{}", required / 1000, required % 1000 / 10);
    Err(match source {
        KernelSource::Sass { arch } => format!(
            "the NVIDIA driver supports CUDA {have}, but the kernels (SASS for sm_{arch}, compiled by nvcc \
             {NVCC_RELEASE}) need a driver for CUDA {} or newer: update the NVIDIA driver",
            required / 1000
        ),
        KernelSource::Ptx { arch } => format!(
            "the NVIDIA driver supports CUDA {have}, but {name} (compute capability {major}.{minor}) is newer than \
             every GPU this build has SASS for, so the driver must compile the PTX (compute_{arch}, from nvcc \
             {NVCC_RELEASE}), which needs a driver for CUDA {want} or newer: update the NVIDIA driver"
        ),
    })
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
        assert!(std::ptr::eq(devices(), devices()));
        let found = devices();
        match &first {
            Availability::Available { device_name } => {
                assert!(!device_name.is_empty());
                assert_eq!(&found.devices[0].name, device_name);
                assert!(found.devices[0].kernels.is_some() && found.devices[0].unusable.is_none());
            }
            Availability::Unavailable { reason } => {
                assert!(!reason.is_empty());
                // SAFETY: as in probe_all().
                if !unsafe { sys::is_culib_present() } {
                    assert_eq!(reason, DRIVER_LIBRARY_MISSING);
                    assert_eq!(found.problem.as_deref(), Some(DRIVER_LIBRARY_MISSING));
                    assert!(found.devices.is_empty() && found.driver_version.is_none());
                }
            }
        }
        for (i, d) in found.devices.iter().enumerate() {
            assert_eq!(d.ordinal, i);
        }
        let mut err = std::io::stderr();
        let _ = std::io::Write::write_all(&mut err, format!("note: CUDA here: {first:?}; {found:?}\n").as_bytes());
    }

    #[test]
    fn a_missing_ordinal_says_how_many_devices_there_are() {
        let found = devices();
        let e = usable_device(found.devices.len() + 7).unwrap_err();
        match &found.problem {
            Some(problem) => assert_eq!(&e, problem),
            None => {
                let n = found.devices.len();
                assert!(e.starts_with(&format!("cuda:{} does not exist: ", n + 7)), "{e}");
                assert!(e.contains(&format!("{n} CUDA device")), "{e}");
            }
        }
    }

    #[test]
    fn an_old_device_or_driver_is_unusable_with_the_reason() {
        if !KERNELS_BUILT {
            return;
        }
        let device = |cc| {
            let mut d = DeviceInfo {
                ordinal: 0,
                name: "Test GPU".into(),
                compute_capability: cc,
                total_memory_bytes: 1 << 30,
                kernels: kernel_source(cc),
                unusable: None,
            };
            // A driver of the nvcc's own version runs SASS and PTX alike.
            d.unusable = why_unusable(&d, required_driver_version(KernelSource::Ptx { arch: 0 }).unwrap()).err();
            d
        };
        let pascal = device((6, 1));
        assert_eq!(
            pascal.unusable.as_deref(),
            Some("Test GPU has compute capability 6.1; the CUDA kernels need 7.5 (Turing) or newer")
        );
        let hopper = device((9, 0));
        assert_eq!((hopper.kernels, hopper.unusable.as_deref()), (Some(KernelSource::Sass { arch: 90 }), None));
        let e = why_unusable(&hopper, 11080).unwrap_err();
        assert!(e.starts_with("the NVIDIA driver supports CUDA 11.8, but the kernels (SASS for sm_90"), "{e}");
        let future = device((15, 0));
        assert!(matches!(future.kernels, Some(KernelSource::Ptx { .. })) && future.unusable.is_none());
        let e = why_unusable(&future, 12000).unwrap_err();
        assert!(e.contains("is newer than every GPU this build has SASS for"), "{e}");
    }
}
