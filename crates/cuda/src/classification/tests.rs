//! The classification kernel on the CPU emulator, against the CPU backend and the reference fixtures: the same
//! bodies as the GPU tests (tests/classification.rs), in every `cargo test`.

#[path = "../../tests/common/classification.rs"]
mod bodies;

// What the bodies expect beside them (loaded once in the crate, by the detection tests).
use crate::detection::tests::common;

use super::CudaClassificationLoss;

/// The emulator's maker, or None after saying why the emulator tests are skipped.
#[cfg(yolo_cuda_emulator)]
fn emulator(_test: &str) -> Option<&'static dyn Fn() -> yolo_loss_core::Result<CudaClassificationLoss>> {
    Some(&CudaClassificationLoss::emulated)
}

#[cfg(not(yolo_cuda_emulator))]
fn emulator(test: &str) -> Option<&'static dyn Fn() -> yolo_loss_core::Result<CudaClassificationLoss>> {
    crate::test_support::skip_without_emulator(test);
    None
}

#[cfg(yolo_cuda_emulator)]
#[test]
fn emulator_cls_params_layout_matches_the_kernel() {
    #[link(name = "yl_emu", kind = "static")]
    extern "C" {
        fn yl_emu_cls_params_layout(offsets: *mut usize, n: usize) -> usize;
    }
    let cxx = crate::test_support::cxx_params_layout(yl_emu_cls_params_layout);
    assert_eq!(cxx, super::params::layout_probe(), "ClsParams: C++ (size, offsets) vs Rust");
}

#[test]
fn emulator_classification_fixtures() {
    let Some(make) = emulator("emulator_classification_fixtures") else { return };
    bodies::fixtures(make);
}

#[test]
fn emulator_classification_synthetic() {
    let Some(make) = emulator("emulator_classification_synthetic") else { return };
    bodies::synthetic(make);
}

#[test]
fn emulator_classification_errors() {
    let Some(make) = emulator("emulator_classification_errors") else { return };
    bodies::errors(make);
}

#[test]
fn emulator_time_kernels() {
    let Some(make) = emulator("emulator_time_kernels") else { return };
    bodies::time_kernels(make, false);
}

/// The loss type crosses threads (the binding runs it on worker threads).
#[test]
fn classification_loss_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CudaClassificationLoss>();
    check::<crate::ClassificationLossAny>();
}
