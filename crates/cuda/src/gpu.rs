//! An opened CUDA device: context, stream and the kernels of every embedded module, opened once per device and
//! process.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_BINARY_VERSION;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nvrtc::Ptx;
use yolo_loss_core::{LossError, Result};

use crate::embedded::{loaded_source, KernelSource, MODULES};
use crate::errors;
use crate::pinned::{route, HostRange, Route};
use crate::probe::{devices, usable_device, DeviceInfo};
use crate::staging::Staging;

/// An opened CUDA device with every kernel of this build loaded.
///
/// All work of this crate on one device goes to its one stream, in order, so kernels of one call see the results of
/// the previous ones without events. Several threads may use it at once: their work interleaves on the stream, each
/// call's buffers are its own, and reading a result back waits for the stream. Each device has its own `Gpu`
/// (context, stream, modules), so instances on different devices run side by side.
pub struct Gpu {
    device_name: String,
    /// What the driver loaded from the fatbins for this device (read back from a loaded kernel).
    kernel_source: KernelSource,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    /// Pinned buffers for large copies (see staging.rs), and whether to use them.
    staging: Staging,
    staged: AtomicBool,
    // The retained primary context; everything above lives in it.
    _ctx: Arc<CudaContext>,
}

/// Device `ordinal` (`cuda:<ordinal>`), opened on first use (a context, the modules loaded: SASS as it is, or the
/// PTX JIT-compiled for a GPU newer than the build). `ERR_CUDA_UNAVAILABLE` with the reason when it cannot be
/// used, or does not exist (the message says how many devices there are). The outcome is cached per device.
pub fn gpu(ordinal: usize) -> Result<&'static Gpu> {
    let device = usable_device(ordinal).map_err(errors::unavailable)?;
    slots()[ordinal]
        .get_or_init(|| {
            // cudarc panics on a driver symbol it cannot find; that must not cross into the caller.
            catch_unwind(AssertUnwindSafe(|| Gpu::open(device))).unwrap_or_else(|panic| {
                Err(errors::unavailable(format!("CUDA could not be started: {}", errors::panic_message(&*panic))))
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Device `ordinal` if it has been opened in this process (nothing is opened here).
pub fn opened_gpu(ordinal: usize) -> Option<&'static Gpu> {
    slots().get(ordinal)?.get()?.as_ref().ok()
}

/// Every device opened so far in this process.
pub(crate) fn opened_gpus() -> impl Iterator<Item = &'static Gpu> {
    slots().iter().filter_map(|s| s.get()?.as_ref().ok())
}

/// One slot per device the probe found, filled when that device is first opened.
fn slots() -> &'static [OnceLock<Result<Gpu>>] {
    static GPUS: OnceLock<Box<[OnceLock<Result<Gpu>>]>> = OnceLock::new();
    GPUS.get_or_init(|| devices().devices.iter().map(|_| OnceLock::new()).collect())
}

impl Gpu {
    fn open(device: &DeviceInfo) -> Result<Gpu> {
        let ctx = CudaContext::new(device.ordinal).map_err(|e| errors::opening("creating the CUDA context", e))?;
        // SAFETY: every buffer of this crate lives on the single stream below, so cudarc's per-buffer events (which
        // order uses across streams) have nothing to order; turning them off saves two events per allocation.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| errors::opening("creating a CUDA stream", e))?;
        let mut functions = HashMap::new();
        for m in MODULES {
            // The driver takes the SASS for this GPU from the fatbin, or JIT-compiles its PTX (and caches the result
            // on disk for next time). cuModuleLoadData reads the fatbin's headers in place: the copy `from_binary`
            // takes is malloc-aligned (16 bytes), which the fatbin's 8-byte fields need; include_bytes! promises 1.
            let module = ctx
                .load_module(Ptx::from_binary(m.fatbin.to_vec()))
                .map_err(|e| errors::opening(&format!("loading the kernels of cuda/{}.cu", m.name), e))?;
            for &entry in m.entries {
                let f =
                    module.load_function(entry).map_err(|e| errors::opening(&format!("finding kernel {entry}"), e))?;
                functions.insert(entry, f);
            }
        }
        // Which code the driver chose: the binary version of any loaded kernel (all come from the same fatbins).
        let first = functions.values().next().ok_or_else(|| errors::unavailable("this build has no CUDA kernels"))?;
        let binary_version = first
            .get_attribute(CU_FUNC_ATTRIBUTE_BINARY_VERSION)
            .map_err(|e| errors::opening("reading a kernel's binary version", e))?;
        Ok(Gpu {
            device_name: device.name.clone(),
            kernel_source: loaded_source(binary_version),
            stream,
            functions,
            staging: Staging::default(),
            staged: AtomicBool::new(true),
            _ctx: ctx,
        })
    }

    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// What runs: SASS built for one of the build's architectures, or code the driver JIT-compiled from the PTX.
    pub fn kernel_source(&self) -> KernelSource {
        self.kernel_source
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// A loaded kernel. Missing only if a launcher names a kernel that no `cuda/*.cu` defines (a bug here).
    pub(crate) fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| {
            LossError::new(
                yolo_loss_core::ErrorCode::Internal,
                format!("CUDA kernel {name} is not in this build's kernels"),
            )
        })
    }

    /// A device copy of `host`; `what` names the data in an out-of-memory message.
    pub fn upload<T: DeviceRepr>(&self, what: &str, host: &[T]) -> Result<CudaSlice<T>> {
        let bytes = std::mem::size_of_val(host);
        // SAFETY: the uninitialised buffer is fully overwritten by the copy right after, on the same stream.
        let mut dev = unsafe { self.stream.alloc::<T>(host.len()) }.map_err(|e| errors::alloc(what, bytes, e))?;
        self.stream
            .memcpy_htod(host, &mut dev)
            .map_err(|e| errors::driver(&format!("copying {what} to the GPU"), e))?;
        Ok(dev)
    }

    /// `len` zeroed elements on the device.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, what: &str, len: usize) -> Result<CudaSlice<T>> {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        self.stream.alloc_zeros::<T>(len).map_err(|e| errors::alloc(what, bytes, e))
    }

    /// Copies `dev` back, after everything queued before it has finished. Errors of earlier kernels (an invalid
    /// address, say) surface here, since launches are asynchronous.
    pub fn download<T: DeviceRepr + Default + Clone>(&self, what: &str, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        let mut host = vec![T::default(); dev.len()];
        self.stream
            .memcpy_dtoh(dev, &mut host)
            .map_err(|e| errors::driver(&format!("copying {what} from the GPU"), e))?;
        self.synchronize()?;
        Ok(host)
    }

    /// Whether large copies between host and device go through pinned staging buffers (the default) or are left
    /// to the driver. For benchmarks that compare the two; results are the same either way.
    pub fn set_staged_copies(&self, on: bool) {
        self.staged.store(on, Ordering::Relaxed);
    }

    /// Copies `src` to device address `dst` (a buffer of at least `src.len()` bytes of this crate's). `src` may be
    /// reused when this returns, except where it is registered for the current call (pinned/call.rs: the call's
    /// end waits for the copy).
    pub(crate) fn copy_htod(&self, what: &str, dst: u64, src: &[u8]) -> Result<()> {
        let staged = self.staged.load(Ordering::Relaxed);
        if route(HostRange::of(src), staged) == Route::Staged {
            if let Some(r) = self.staging.htod(&self.stream, what, dst, src) {
                return r;
            }
        }
        // Direct (registered memory: a DMA queued and not waited for) or plain (pageable: the driver stages it and
        // returns once `src` has been read).
        self.stream.context().bind_to_thread().map_err(|e| errors::driver("binding the CUDA context", e))?;
        // SAFETY: the caller guarantees that dst is a device buffer of at least src.len() bytes. A direct copy reads
        // `src` after this returns: the call's PinnedCall scope waits for it before the caller gets `src` back.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| errors::driver(&format!("copying {what} to the GPU"), e))
    }

    /// Copies `dst.len()` bytes from device address `src` (a buffer of this crate's), after all queued work. Waits
    /// for the copy, except into memory registered for the current call (its PinnedCall scope waits at the end:
    /// nothing reads such a buffer, a caller's gradient output, before the call returns).
    pub(crate) fn copy_dtoh(&self, what: &str, src: u64, dst: &mut [u8]) -> Result<()> {
        let staged = self.staged.load(Ordering::Relaxed);
        let direct = match route(HostRange::of(dst), staged) {
            Route::Staged => match self.staging.dtoh(&self.stream, what, src, dst) {
                Some(r) => return r,
                None => false,
            },
            Route::Direct => true,
            Route::Plain => false,
        };
        self.stream.context().bind_to_thread().map_err(|e| errors::driver("binding the CUDA context", e))?;
        // SAFETY: the caller guarantees that src is a device buffer of at least dst.len() bytes. A direct copy writes
        // `dst` after this returns: its PinnedCall scope waits before the caller gets `dst` back.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| errors::driver(&format!("copying {what} from the GPU"), e))?;
        if direct {
            Ok(())
        } else {
            self.synchronize()
        }
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| errors::driver("waiting for the GPU", e))
    }
}
