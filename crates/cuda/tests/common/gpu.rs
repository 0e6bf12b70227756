//! GPU tests skip with the reason where CUDA cannot run (visible in `cargo test` output); with
//! `YOLO_LOSS_REQUIRE_GPU=1` (scripts/gpu-check.sh on a GPU machine) they fail instead. Used by the integration
//! tests and by the crate's own unit tests (src/test_support.rs).

#![allow(dead_code)]

use std::io::Write;

pub fn require_gpu() -> bool {
    std::env::var("YOLO_LOSS_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The device, or None after printing why `test` is skipped.
pub fn gpu_or_skip(test: &str) -> Option<&'static yolo_loss_cuda::Gpu> {
    match yolo_loss_cuda::gpu(0) {
        Ok(g) => Some(g),
        Err(e) if require_gpu() => panic!("YOLO_LOSS_REQUIRE_GPU=1 but CUDA is unavailable: {e}"),
        Err(e) => {
            // Straight to stderr: libtest captures print!/eprint! of passing tests, and a skip should be seen.
            // One write_all per line keeps the line whole when tests run in parallel.
            let _ = std::io::stderr().write_all(format!("skipping CUDA test {test}: {}\n", e.message).as_bytes());
            None
        }
    }
}
