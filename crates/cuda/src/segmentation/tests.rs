//! The segmentation kernels on the CPU emulator, against the CPU backend and the reference fixtures: the same
//! bodies as the GPU tests (tests/segmentation.rs). Slow-ish (every GPU thread is a fiber): small cases only.

#[path = "../../tests/common/seg_parity.rs"]
#[macro_use]
mod seg_parity;

// The detection tests' shared helpers and bodies, which the segmentation bodies build on.
use crate::detection::tests::{common, parity};
use crate::segmentation::{CudaSegmentationLoss, CudaTVPSegmentLoss};

/// The emulator's makers, or None after printing why the emulator tests are skipped.
#[cfg(yolo_cuda_emulator)]
fn emulator(test: &str) -> Option<seg_parity::SegMakers<'static>> {
    let _ = test;
    Some(seg_parity::SegMakers { seg: &CudaSegmentationLoss::emulated, tvp: &CudaTVPSegmentLoss::emulated })
}

#[cfg(not(yolo_cuda_emulator))]
fn emulator(test: &str) -> Option<seg_parity::SegMakers<'static>> {
    crate::test_support::skip_without_emulator(test);
    None
}

#[cfg(yolo_cuda_emulator)]
#[test]
fn emulator_seg_params_layout_matches_the_kernels() {
    #[link(name = "yl_emu", kind = "static")]
    extern "C" {
        fn yl_emu_seg_params_layout(offsets: *mut usize, n: usize) -> usize;
    }
    let cxx = crate::test_support::cxx_params_layout(yl_emu_seg_params_layout);
    assert_eq!(cxx, super::params::layout_probe(), "SegParams: C++ (size, offsets) vs Rust");
}

seg_kernel_tests!(emulator => emulator_v8_segmentation_fixtures, emulator_tvp_segment_fixtures_and_text_channels,
    emulator_segmentation_synthetic_cases, emulator_segmentation_errors_match_cpu);

/// The loss types cross threads (the binding runs them on worker threads).
#[test]
fn loss_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CudaSegmentationLoss>();
    check::<CudaTVPSegmentLoss>();
    check::<crate::SegmentationLossAny>();
    check::<crate::TVPSegmentLossAny>();
}
