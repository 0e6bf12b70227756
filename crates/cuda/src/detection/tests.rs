//! The detection kernels on the CPU emulator (emu/, built by build.rs with the host C++ compiler), against the CPU
//! backend and the reference fixtures: the same bodies as the GPU tests (tests/detection.rs), so every CI run
//! checks the kernels' logic even without a GPU. Slow-ish (every GPU thread is a fiber): small cases only.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/parity.rs"]
#[macro_use]
mod parity;

use crate::detection::CudaDetectionLoss;
use crate::e2e::CudaE2EDetectLoss;
use crate::prompts::CudaTVPDetectLoss;

/// The emulator's makers, or None after printing why the emulator tests are skipped.
#[cfg(yolo_cuda_emulator)]
fn emulator(test: &str) -> Option<parity::Makers<'static>> {
    let _ = test;
    Some(parity::Makers {
        det: &CudaDetectionLoss::emulated,
        e2e: &CudaE2EDetectLoss::emulated,
        tvp: &CudaTVPDetectLoss::emulated,
    })
}

#[cfg(not(yolo_cuda_emulator))]
fn emulator(test: &str) -> Option<parity::Makers<'static>> {
    let why = env!("YOLO_LOSS_CUDA_EMULATOR_NOTE");
    if std::env::var("YOLO_LOSS_REQUIRE_EMULATOR").is_ok_and(|v| v == "1") {
        panic!("YOLO_LOSS_REQUIRE_EMULATOR=1 but the kernel emulator was not built: {why}");
    }
    let _ =
        std::io::Write::write_all(&mut std::io::stderr(), format!("skipping emulator test {test}: {why}\n").as_bytes());
    None
}

#[cfg(yolo_cuda_emulator)]
#[test]
fn emulator_params_layout_matches_the_kernels() {
    assert_eq!(super::emu::cxx_layout(), super::params::layout_probe(), "DetParams: C++ (size, offsets) vs Rust");
}

kernel_tests!(emulator => emulator_v8_detection_fixtures, emulator_e2e_fixtures,
    emulator_tvp_fixtures_and_text_channels, emulator_synthetic_cases, emulator_errors_match_cpu);

/// The loss types cross threads (the binding runs them on worker threads).
#[test]
fn loss_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CudaDetectionLoss>();
    check::<CudaE2EDetectLoss>();
    check::<CudaTVPDetectLoss>();
    check::<crate::DetectionLossAny>();
}
