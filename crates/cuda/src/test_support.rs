//! Helpers of the GPU tests: skip (with the reason, visible in `cargo test` output) where CUDA cannot run.

// The skip rule of the integration tests (tests/common/gpu.rs), which names this crate as `yolo_loss_cuda` (see
// the `extern crate self` in lib.rs).
#[path = "../tests/common/gpu.rs"]
mod gpu_skip;
pub(crate) use gpu_skip::gpu_or_skip;

/// |got − want| ≤ abs + rel·|want| for every element.
pub(crate) fn assert_close(name: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{name}[{i}]: got {g}, want {w}");
    }
}

/// The deterministic random stream of the crate's tests.
pub(crate) use yolo_loss_testkit::Lcg;
