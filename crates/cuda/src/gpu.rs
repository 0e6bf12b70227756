//! The process-wide CUDA device: context, stream and the kernels of every embedded PTX module, opened once.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nvrtc::Ptx;
use yolo_loss_core::{LossError, Result};

use crate::embedded::MODULES;
use crate::errors;
use crate::probe::{availability, Availability, DEVICE_ORDINAL};
use crate::staging::{Staging, MIN_STAGED_BYTES};

/// An opened CUDA device with every kernel of this build loaded.
///
/// All work of this crate goes to one stream, in order, so kernels of one call see the results of the previous
/// ones without events. Several threads may use it at once: their work interleaves on the stream, each call's
/// buffers are its own, and reading a result back waits for the stream.
pub struct Gpu {
    device_name: String,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    /// Pinned buffers for large copies (see staging.rs), and whether to use them.
    staging: Staging,
    staged: AtomicBool,
    // The retained primary context; everything above lives in it.
    _ctx: Arc<CudaContext>,
}

/// The device, opened on first use (a context, the PTX JIT-compiled for this GPU). The outcome is cached: after
/// a failure every call returns the same error (`ERR_CUDA_UNAVAILABLE` with the reason).
pub fn gpu() -> Result<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let device_name = match availability() {
            Availability::Available { device_name } => device_name,
            Availability::Unavailable { reason } => return Err(errors::unavailable(reason)),
        };
        // cudarc panics on a driver symbol it cannot find; that must not cross into the caller.
        catch_unwind(AssertUnwindSafe(|| Gpu::open(device_name))).unwrap_or_else(|panic| {
            Err(errors::unavailable(format!("CUDA could not be started: {}", errors::panic_message(&*panic))))
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

impl Gpu {
    fn open(device_name: String) -> Result<Gpu> {
        let ctx =
            CudaContext::new(DEVICE_ORDINAL as usize).map_err(|e| errors::opening("creating the CUDA context", e))?;
        // SAFETY: every buffer of this crate lives on the single stream below, so cudarc's per-buffer events (which
        // order uses across streams) have nothing to order; turning them off saves two events per allocation.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| errors::opening("creating a CUDA stream", e))?;
        let mut functions = HashMap::new();
        for m in MODULES {
            // The driver JIT-compiles the PTX for this GPU here (and caches the result on disk for next time).
            let module = ctx
                .load_module(Ptx::from_src(m.ptx))
                .map_err(|e| errors::opening(&format!("loading the PTX of cuda/{}.cu", m.name), e))?;
            for &entry in m.entries {
                let f =
                    module.load_function(entry).map_err(|e| errors::opening(&format!("finding kernel {entry}"), e))?;
                functions.insert(entry, f);
            }
        }
        Ok(Gpu {
            device_name,
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

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// A loaded kernel. Missing only if a launcher names a kernel that no `cuda/*.cu` defines (a bug here).
    pub(crate) fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| {
            LossError::new(
                yolo_loss_core::ErrorCode::Internal,
                format!("CUDA kernel {name} is not in this build's PTX"),
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

    /// Copies `src` to device address `dst` (a buffer of at least `src.len()` bytes of this crate's).
    pub(crate) fn copy_htod(&self, what: &str, dst: u64, src: &[u8]) -> Result<()> {
        if src.len() >= MIN_STAGED_BYTES && self.staged.load(Ordering::Relaxed) {
            if let Some(r) = self.staging.htod(&self.stream, what, dst, src) {
                return r;
            }
        }
        self.stream.context().bind_to_thread().map_err(|e| errors::driver("binding the CUDA context", e))?;
        // SAFETY: the caller guarantees that dst is a device buffer of at least src.len() bytes.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| errors::driver(&format!("copying {what} to the GPU"), e))
    }

    /// Copies `dst.len()` bytes from device address `src` (a buffer of this crate's), after all queued work; waits.
    pub(crate) fn copy_dtoh(&self, what: &str, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.len() >= MIN_STAGED_BYTES && self.staged.load(Ordering::Relaxed) {
            if let Some(r) = self.staging.dtoh(&self.stream, what, src, dst) {
                return r;
            }
        }
        self.stream.context().bind_to_thread().map_err(|e| errors::driver("binding the CUDA context", e))?;
        // SAFETY: the caller guarantees that src is a device buffer of at least dst.len() bytes.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| errors::driver(&format!("copying {what} from the GPU"), e))?;
        self.synchronize()
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| errors::driver("waiting for the GPU", e))
    }
}
