//! The oriented-box kernels on the CPU emulator, against the CPU backend and the reference fixtures: the same
//! bodies as the GPU tests (tests/obb.rs), in every `cargo test`.

#[path = "../../tests/common/obb.rs"]
mod bodies;

// What the bodies expect beside them (loaded once in the crate, by the detection tests).
use crate::detection::tests::{common, parity};

use super::CudaObbLoss;

/// The emulator's maker, or None after saying why the emulator tests are skipped.
#[cfg(yolo_cuda_emulator)]
fn emulator(_test: &str) -> Option<bodies::Maker<'static, CudaObbLoss>> {
    Some(&CudaObbLoss::emulated)
}

#[cfg(not(yolo_cuda_emulator))]
fn emulator(test: &str) -> Option<bodies::Maker<'static, CudaObbLoss>> {
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
fn emulator_obb_params_layout_matches_the_kernels() {
    #[link(name = "yl_emu", kind = "static")]
    extern "C" {
        fn yl_emu_obb_params_layout(offsets: *mut usize, n: usize) -> usize;
    }
    let mut offsets = [0usize; 3];
    // SAFETY: writes at most 3 offsets into the array.
    let size = unsafe { yl_emu_obb_params_layout(offsets.as_mut_ptr(), offsets.len()) };
    assert_eq!((size, offsets), super::params::layout_probe(), "ObbParams: C++ (size, offsets) vs Rust");
}

#[test]
fn emulator_obb_fixtures() {
    let Some(make) = emulator("emulator_obb_fixtures") else { return };
    bodies::fixtures(make);
}

#[test]
fn emulator_obb_synthetic() {
    let Some(make) = emulator("emulator_obb_synthetic") else { return };
    bodies::synthetic(make);
}

#[test]
fn emulator_obb_errors() {
    let Some(make) = emulator("emulator_obb_errors") else { return };
    bodies::errors(make);
}
