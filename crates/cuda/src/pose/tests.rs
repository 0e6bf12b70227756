//! The pose kernels on the CPU emulator, against the CPU backend and the reference fixtures: the same bodies as the
//! GPU tests (tests/pose.rs), in every `cargo test`.

#[path = "../../tests/common/pose.rs"]
mod bodies;

// What the bodies expect beside them (loaded once in the crate, by the detection tests).
use crate::detection::tests::{common, parity};

use super::CudaPoseLoss;

/// The emulator's maker, or None after saying why the emulator tests are skipped.
#[cfg(yolo_cuda_emulator)]
fn emulator(_test: &str) -> Option<bodies::Maker<'static, CudaPoseLoss>> {
    Some(&CudaPoseLoss::emulated)
}

#[cfg(not(yolo_cuda_emulator))]
fn emulator(test: &str) -> Option<bodies::Maker<'static, CudaPoseLoss>> {
    crate::test_support::skip_without_emulator(test);
    None
}

#[cfg(yolo_cuda_emulator)]
#[test]
fn emulator_pose_params_layout_matches_the_kernels() {
    #[link(name = "yl_emu", kind = "static")]
    extern "C" {
        fn yl_emu_pose_params_layout(offsets: *mut usize, n: usize) -> usize;
    }
    let cxx = crate::test_support::cxx_params_layout(yl_emu_pose_params_layout);
    assert_eq!(cxx, super::params::layout_probe(), "PoseParams: C++ (size, offsets) vs Rust");
}

#[test]
fn emulator_pose_fixtures() {
    let Some(make) = emulator("emulator_pose_fixtures") else { return };
    bodies::fixtures(make);
}

#[test]
fn emulator_pose_synthetic() {
    let Some(make) = emulator("emulator_pose_synthetic") else { return };
    bodies::synthetic(make);
}

#[test]
fn emulator_pose_errors() {
    let Some(make) = emulator("emulator_pose_errors") else { return };
    bodies::errors(make);
}

/// A configuration beyond the kernels' limits is refused under 'cuda' and runs on the CPU under 'auto'.
#[test]
fn pose_cuda_limits_refused_under_cuda_cpu_under_auto() {
    use crate::{Backend, Device, PoseLossAny};
    let mut cfg = bodies::synthetic_case(&parity::SynthSpec::default(), (5, 3), None).cfg;
    cfg.det.tal_topk = 33;
    #[cfg(yolo_cuda_emulator)]
    {
        let e = CudaPoseLoss::emulated(cfg.clone()).unwrap_err();
        assert_eq!(e.code, yolo_loss_core::ErrorCode::InvalidArgument, "{e}");
        assert!(e.message.contains("tal_topk: the CUDA backend supports at most 32, got 33"), "{e}");
    }
    assert_eq!(PoseLossAny::new(cfg, Device::Auto).unwrap().backend(), Some(Backend::Cpu));
}

/// The loss type crosses threads (the binding runs it on worker threads).
#[test]
fn pose_loss_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CudaPoseLoss>();
    check::<crate::PoseLossAny>();
}
