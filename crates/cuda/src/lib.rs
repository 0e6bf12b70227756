//! CUDA backend of yolo-loss.
//!
//! The kernels live in `cuda/*.cu` at the repository root; `build.rs` compiles each file with nvcc into a fatbin
//! (SASS for every GPU architecture from sm_75 up to the newest the nvcc knows, plus that newest one's PTX for the
//! driver to JIT-compile on still newer GPUs) and this crate embeds them (`cfg(yolo_cuda_kernels)`). At run time the
//! driver API is opened with cudarc's dynamic loading, so the same binary starts on machines without a driver or
//! GPU: [`availability`] says whether CUDA can be used on `cuda:0` and, if not, why, [`devices`] lists every GPU;
//! [`gpu`] opens one device (context, stream, modules) once per process.
//!
//! Layout of the crate, one concern per file:
//! * `probe.rs`: [`availability`], [`devices`], a cached, panic-free probe of the driver and every device;
//! * `embedded.rs`: the fatbins that build.rs embedded, [`KERNELS_BUILT`], [`kernel_names`], and which part of
//!   them runs on a given GPU ([`KernelSource`]: SASS, or PTX JIT-compiled by the driver);
//! * `gpu.rs`: one [`Gpu`] per device (context, stream, loaded kernels, upload/download);
//! * `staging.rs`, `pinned.rs`: large host copies, through pinned staging buffers, or straight from and to caller
//!   buffers that [`HostPins`] page-locked (the binding's `out` buffers and reused prediction arrays);
//! * `errors.rs`: CUDA driver errors → [`yolo_loss_core::LossError`] (out of memory is its own code);
//! * `launch.rs`: where kernels run ([`Gpu`], or the CPU emulator in tests), typed device buffers and arenas
//!   (`launch/buffers.rs`), one launch for any kernel and its parameter struct;
//! * `detection/`: [`CudaDetectionLoss`], the fused detection loss of cuda/det_*.cu (decode, assigner, class and
//!   box terms with their gradient), and `e2e.rs`, `prompts.rs`: E2EDetectLoss and TVPDetectLoss on top of it;
//!   every task launches its kernels through its `Kernels` (run.rs), so [`time_kernels`] times any task's calls
//!   (benchmarks: examples/gpu_bench);
//! * `obb/`: [`CudaObbLoss`] (the detection decode and class passes + cuda/obb.cu: rotated assignment, box terms);
//! * `pose/`, `classification/`: [`CudaPoseLoss`] (the detection stages + cuda/pose.cu), [`CudaClassificationLoss`];
//! * `segmentation/`: [`CudaSegmentationLoss`] and [`CudaTVPSegmentLoss`], the detection stages plus the mask
//!   kernels of cuda/seg_mask.cu;
//! * `backend.rs`: `device: 'cpu' | 'cuda' | 'cuda:N' | 'auto'` → a [`Selected`] task loss (the CPU type of the core,
//!   the CUDA type, or under 'auto' with a usable GPU both), one alias per task ([`DetectionLossAny`], ...,
//!   [`ClassificationLossAny`]): what the binding calls;
//! * `auto/`: 'auto' with both backends ([`AutoLoss`]): per shape key ([`ShapeKey`]), the first calls timed on each,
//!   then the faster one.
//!
//! Every CUDA loss implements the core's `TaskLoss<f32>` with the same predictions and batch as the task's CPU type,
//! and [`CudaLoss`] (its constructor on a GPU); [`Selected`] implements `TaskLoss<f32>` by delegation. Giving a new
//! task a CUDA backend is implementing those two traits for its CUDA type and naming it in the task's alias in
//! backend.rs (crates/cuda/README.md has the whole recipe).
//!
//! For the binding: parse the option with [`Device`]'s `FromStr`, build the task's alias with `new(config, device)`
//! (the configuration of the CPU type: [`CpuLoss::Config`]), call `call` / `value_and_grad` / `value_and_grad_into`
//! with the core's predictions and batch (f32 only), and report `.backend()` (`Some(Cpu | Cuda)`, or None for 'auto'
//! with both) and `.last_backend()`. `'cuda'` without a usable GPU fails with `ERR_CUDA_UNAVAILABLE` and the reason
//! (for `'cuda:N'` past the last GPU: how many there are; for a task without a CUDA backend a message about `device:`
//! itself); `'auto'` tries `cuda:0` and falls back to the CPU silently.
//!
//! Testing without a GPU: `emu/` is a CPU emulator of every kernel of `cuda/*.cu` (built by build.rs with the host
//! C++ compiler, linked into this crate's unit tests only), so the kernels' logic is checked against the CPU
//! backend in every `cargo test`; the GPU runs of the same test bodies are in `tests/` and `scripts/gpu-check.sh`.
//!
//! Adding a CUDA backend for a task: the recipe in this crate's README.md.
//!
//! Launchers compile in every build (cudarc is always there); only the fatbins need nvcc, so a build without it
//! reports "built without kernels" at run time instead of losing the launcher code from type checking.

mod auto;
pub mod backend;
pub mod classification;
pub mod detection;
pub mod e2e;
mod embedded;
mod errors;
mod gpu;
mod launch;
pub mod obb;
mod pinned;
pub mod pose;
mod probe;
pub mod prompts;
pub mod segmentation;
mod staging;
#[cfg(test)]
mod test_support;
/// Lets test code shared with `tests/` (tests/common/gpu.rs) name this crate `yolo_loss_cuda` from inside it.
#[cfg(test)]
extern crate self as yolo_loss_cuda;

pub use auto::{AutoLoss, ShapeKey};
pub use backend::{
    Backend, ClassificationLossAny, CpuLoss, CudaLoss, DetectionLossAny, Device, E2EDetectLossAny, ObbLossAny,
    PoseLossAny, SegmentationLossAny, Selected, TVPDetectLossAny, TVPSegmentLossAny,
};
pub use classification::CudaClassificationLoss;
/// The cudarc this crate is built with, so that callers can name device buffers ([`CudaSlice`]) without depending
/// on a possibly different cudarc version themselves.
pub use cudarc;
pub use cudarc::driver::CudaSlice;
pub use detection::{time_kernels, Assignment, CudaDetectionLoss, KernelTiming, StageTimes, STAGES};
pub use e2e::CudaE2EDetectLoss;
pub use embedded::{kernel_names, kernel_source, sass_architectures, KernelSource, KERNELS_BUILT};
pub use gpu::{gpu, opened_gpu, Gpu};
pub use obb::CudaObbLoss;
pub use pinned::{
    Driver, HostPins, HostRange, Keepalive, Offer, PinStats, PinnedCall, Registrar, Role, MIN_PIN_BYTES,
    PIN_BUDGET_BYTES,
};
pub use pose::CudaPoseLoss;
pub use probe::{availability, devices, usable_device, Availability, DeviceInfo, Devices};
pub use prompts::CudaTVPDetectLoss;
pub use segmentation::{CudaSegmentationLoss, CudaTVPSegmentLoss};
