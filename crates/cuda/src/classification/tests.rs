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
fn emulator_cls_params_layout_matches_the_kernel() {
    #[link(name = "yl_emu", kind = "static")]
    extern "C" {
        fn yl_emu_cls_params_layout(offsets: *mut usize, n: usize) -> usize;
    }
    let mut offsets = [0usize; 5];
    // SAFETY: writes at most 5 offsets into the array.
    let size = unsafe { yl_emu_cls_params_layout(offsets.as_mut_ptr(), offsets.len()) };
    assert_eq!((size, offsets), super::params::layout_probe(), "ClsParams: C++ (size, offsets) vs Rust");
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

/// The loss type crosses threads (the binding runs it on worker threads).
#[test]
fn classification_loss_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CudaClassificationLoss>();
    check::<crate::ClassificationLossAny>();
}
