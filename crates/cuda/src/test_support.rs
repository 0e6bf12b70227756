//! Helpers of the GPU tests: skip (with the reason, visible in `cargo test` output) where CUDA cannot run.

use std::io::Write;

use crate::gpu::{gpu, Gpu};

/// The device, or None after printing why the test is skipped. With YOLO_LOSS_REQUIRE_GPU=1 (on a GPU machine) a
/// missing device fails the test instead.
pub(crate) fn gpu_or_skip(test: &str) -> Option<&'static Gpu> {
    match gpu() {
        Ok(g) => Some(g),
        Err(e) if std::env::var("YOLO_LOSS_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("YOLO_LOSS_REQUIRE_GPU=1 but CUDA is unavailable: {e}")
        }
        Err(e) => {
            // Straight to stderr: libtest captures print!/eprint! of passing tests, and a skip should be seen.
            // One write_all per line keeps the line whole when tests run in parallel.
            let _ = std::io::stderr().write_all(format!("skipping CUDA test {test}: {}\n", e.message).as_bytes());
            None
        }
    }
}

/// |got − want| ≤ abs + rel·|want| for every element.
pub(crate) fn assert_close(name: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{name}[{i}]: got {g}, want {w}");
    }
}

/// The deterministic random stream of the crate's tests.
pub(crate) use yolo_loss_testkit::Lcg;
