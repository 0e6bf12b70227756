//! Helpers of the GPU tests: skip (with the reason, visible in `cargo test` output) where CUDA cannot run.

// The skip rule of the integration tests (tests/common/gpu.rs), which names this crate as `yolo_loss_cuda` (see
// the `extern crate self` in lib.rs).
#[path = "../tests/common/gpu.rs"]
mod gpu_skip;
pub(crate) use gpu_skip::gpu_or_skip;
