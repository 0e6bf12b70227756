//! Where the detection kernels run: the CUDA device, or (tests only) the CPU emulator of `emu/`. The launch
//! sequence in `run.rs` is written once against this small interface: raw byte buffers addressed by their device
//! address, uploads, downloads, and launches that take one `DetParams`.

use cudarc::driver::{result, sys, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use yolo_loss_core::{ErrorCode, LossError, Result};

use super::params::DetParams;
use crate::errors;
use crate::gpu::Gpu;

#[derive(Clone, Copy)]
pub(crate) enum Dev {
    Gpu(&'static Gpu),
    #[cfg(all(test, yolo_cuda_emulator))]
    Emu,
}

/// A device buffer of `bytes` bytes at device address `ptr`.
pub(crate) struct DevBuf {
    pub ptr: u64,
    pub bytes: usize,
    keep: Keep,
}

/// Owns the memory behind a `DevBuf` (freed on drop); the buffer is addressed through `DevBuf::ptr`.
enum Keep {
    Gpu(#[allow(dead_code)] CudaSlice<u8>),
    #[cfg(all(test, yolo_cuda_emulator))]
    Host(#[allow(dead_code)] Vec<u64>),
}

impl DevBuf {
    /// Address of element `index` of a buffer of `T`s.
    pub fn at<T>(&self, index: usize) -> u64 {
        self.ptr + (index * std::mem::size_of::<T>()) as u64
    }
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: T is Copy plain data (f32/i32/u32/f64/u64 here); any byte view of it is valid to read.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above; the callers only write bytes that form valid values of T (copies of T values).
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

impl Dev {
    /// `bytes` uninitialised bytes (the emulator's are zero).
    pub fn alloc(&self, what: &str, bytes: usize) -> Result<DevBuf> {
        match self {
            Dev::Gpu(gpu) => {
                let stream = gpu.stream();
                // SAFETY: every kernel writes what it later reads (see run.rs); nothing reads the raw bytes.
                let slice = unsafe { stream.alloc::<u8>(bytes.max(1)) }.map_err(|e| errors::alloc(what, bytes, e))?;
                let ptr = slice.device_ptr(stream).0;
                Ok(DevBuf { ptr, bytes, keep: Keep::Gpu(slice) })
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => {
                let v = vec![0u64; bytes.div_ceil(8).max(1)];
                Ok(DevBuf { ptr: v.as_ptr() as u64, bytes, keep: Keep::Host(v) })
            }
        }
    }

    /// `bytes` zero bytes.
    pub fn zeros(&self, what: &str, bytes: usize) -> Result<DevBuf> {
        let mut b = self.alloc(what, bytes)?;
        self.fill(&mut b, 0)?;
        Ok(b)
    }

    /// Sets every byte of `buf` to `byte` (asynchronously on the GPU).
    pub fn fill(&self, buf: &mut DevBuf, byte: u8) -> Result<()> {
        match (self, &mut buf.keep) {
            (Dev::Gpu(gpu), Keep::Gpu(_)) => {
                // A raw driver call: make the context current on this thread first (cudarc's own calls do).
                gpu.stream().context().bind_to_thread().map_err(|e| errors::driver("binding the CUDA context", e))?;
                // SAFETY: the range is the buffer's own allocation; the stream orders it with the kernels.
                unsafe { result::memset_d8_async(buf.ptr, byte, buf.bytes, gpu.stream().cu_stream()) }
                    .map_err(|e| errors::driver("clearing a work buffer", e))
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            (Dev::Emu, Keep::Host(v)) => {
                as_bytes_mut(v.as_mut_slice())[..buf.bytes].fill(byte);
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(LossError::new(ErrorCode::Internal, "a buffer was used with another device")),
        }
    }

    /// A device copy of `host`.
    pub fn upload<T: Copy>(&self, what: &str, host: &[T]) -> Result<DevBuf> {
        let bytes = as_bytes(host);
        let mut buf = self.alloc(what, bytes.len())?;
        match (self, &mut buf.keep) {
            (Dev::Gpu(gpu), Keep::Gpu(_)) => {
                if !bytes.is_empty() {
                    gpu.copy_htod(what, buf.ptr, bytes)?;
                }
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            (Dev::Emu, Keep::Host(v)) => as_bytes_mut(v.as_mut_slice())[..bytes.len()].copy_from_slice(bytes),
            #[allow(unreachable_patterns)]
            _ => return Err(LossError::new(ErrorCode::Internal, "a buffer was used with another device")),
        }
        Ok(buf)
    }

    /// Copies `out.len()` values of `T` from `buf`, starting at element `start`. Waits for the copy (and so for
    /// everything queued before it).
    pub fn download<T: Copy>(&self, what: &str, buf: &DevBuf, start: usize, out: &mut [T]) -> Result<()> {
        let size = std::mem::size_of::<T>();
        let (from, len) = (start * size, std::mem::size_of_val(out));
        if from + len > buf.bytes {
            return Err(LossError::new(ErrorCode::Internal, format!("download of {what} past the end of its buffer")));
        }
        if len == 0 {
            return Ok(());
        }
        match (self, &buf.keep) {
            (Dev::Gpu(gpu), Keep::Gpu(_)) => gpu.copy_dtoh(what, buf.ptr + from as u64, as_bytes_mut(out)),
            #[cfg(all(test, yolo_cuda_emulator))]
            (Dev::Emu, Keep::Host(v)) => {
                as_bytes_mut(out).copy_from_slice(&as_bytes(v.as_slice())[from..from + len]);
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(LossError::new(ErrorCode::Internal, "a buffer was used with another device")),
        }
    }

    /// Launches detection kernel `name` on `grid` blocks of `block` threads.
    pub fn launch(&self, name: &'static str, grid: u32, block: u32, p: &DetParams) -> Result<()> {
        if grid == 0 {
            return Ok(());
        }
        match self {
            Dev::Gpu(gpu) => {
                let f = gpu.function(name)?;
                let mut launch = gpu.stream().launch_builder(f);
                launch.arg(p);
                let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: every yl_det_* kernel takes exactly one `DetParams` by value (same layout, see params.rs),
                // and run.rs fills it with live buffers sized for the launch's shapes.
                unsafe { launch.launch(cfg) }.map_err(|e| errors::driver(&format!("launching {name}"), e))?;
                Ok(())
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => super::emu::launch(name, grid, block, p),
        }
    }

    /// Waits for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Dev::Gpu(gpu) => gpu.synchronize(),
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => Ok(()),
        }
    }

    /// A timing event recorded now on the stream (GPU only).
    pub fn event(&self) -> Result<Option<cudarc::driver::CudaEvent>> {
        match self {
            Dev::Gpu(gpu) => gpu
                .stream()
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map(Some)
                .map_err(|e| errors::driver("recording a timing event", e)),
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => Ok(None),
        }
    }
}
