//! Where kernels run and how they are launched, for every task: a [`Dev`] is the CUDA device or (tests only) the
//! CPU emulator of `emu/`; both take the same typed buffers (`buffers.rs`) and the same launch: a kernel name and
//! its one parameter struct, passed by value to the kernel. A task's launch sequence is written once against this
//! interface, and its test bodies run on both (tests/common/parity.rs).

mod buffers;
#[cfg(all(test, yolo_cuda_emulator))]
pub(crate) mod emu;

use cudarc::driver::{sys, CudaEvent, DeviceRepr, LaunchConfig, PushKernelArg};
use yolo_loss_core::{LossError, Result};

pub(crate) use buffers::{Arena, ArenaLayout, DevBuf, DevPtr, Part};

use crate::errors;
use crate::gpu::Gpu;

/// Where kernels run.
#[derive(Clone, Copy)]
pub(crate) enum Dev {
    Gpu(&'static Gpu),
    /// The CPU emulator (emu/, built by build.rs): every kernel of `cuda/*.cu`, run thread by thread.
    #[cfg(all(test, yolo_cuda_emulator))]
    Emu,
}

/// The one parameter block a kernel takes by value: a `#[repr(C)]` twin of a C struct of `cuda/*.cuh`.
///
/// # Safety
/// The implementing type must have exactly the layout of the C struct that every kernel launched with it takes
/// as its only parameter (the emulator checks the size; a test per struct checks field offsets).
pub(crate) unsafe trait KernelParams: DeviceRepr + Copy {}

impl Dev {
    /// The GPU's name, or the emulator's, for messages and `Debug`.
    pub fn name(&self) -> &'static str {
        match self {
            Dev::Gpu(g) => g.device_name(),
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => "CPU emulator",
        }
    }

    /// Launches `kernel` on `grid` blocks of `block` threads with `params`. An empty grid launches nothing.
    pub fn launch<P: KernelParams>(&self, kernel: &'static str, grid: u32, block: u32, params: &P) -> Result<()> {
        if grid == 0 {
            return Ok(());
        }
        match self {
            Dev::Gpu(gpu) => {
                let f = gpu.function(kernel)?;
                let mut launch = gpu.stream().launch_builder(f);
                launch.arg(params);
                let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
                // SAFETY: the kernel takes one `P` by value (KernelParams' contract), whose device pointers the
                // caller derived from live buffers sized for this launch.
                unsafe { launch.launch(cfg) }.map_err(|e| errors::driver(&format!("launching {kernel}"), e))?;
                Ok(())
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => emu::launch(kernel, grid, block, params),
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

    /// A timing event recorded now on the stream (GPU only: the emulator has no device time).
    pub fn event(&self) -> Result<Option<CudaEvent>> {
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

/// A size as the kernels' `int` parameter; `name` says which in the error.
pub(crate) fn int(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        LossError::invalid(format!("{name}: {v} is too large for the CUDA kernels (at most {})", i32::MAX))
    })
}
