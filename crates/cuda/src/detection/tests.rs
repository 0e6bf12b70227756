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
#[cfg(yolo_cuda_emulator)]
use yolo_loss_core::Real;

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

/// The kernels' per-logit BCE and sigmoid are a port of the CPU backend's (fastmath.rs): compiled without
/// contraction (like nvcc --fmad=false) they must agree to the bit, so the two backends cannot drift apart unseen.
#[cfg(yolo_cuda_emulator)]
#[test]
fn kernel_class_math_is_the_cpu_backends_bit_for_bit() {
    let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.025).collect();
    xs.extend([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 87.5, -87.5, 88.0, -88.0, 1e4, -1e4, f32::MAX, -f32::MAX]);
    for x in xs {
        let (loss, sig) = super::emu::kernel_bce_sigmoid(x);
        let (cpu_loss, cpu_sig) = Real::bce_sigmoid(x);
        assert_eq!((loss.to_bits(), sig.to_bits()), (cpu_loss.to_bits(), cpu_sig.to_bits()), "x = {x}");
        // And through the CPU's vectorised pass (the SIMD build the CPU backend dispatches to).
        let mut grad = [0.0f32];
        let sum = <f32 as Real>::bce_zero(&[x], Some(&mut grad), 1.0);
        assert_eq!((sum, grad[0].to_bits()), (loss as f64, sig.to_bits()), "x = {x} (vectorised pass)");
    }
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
