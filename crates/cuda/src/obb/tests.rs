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
    crate::test_support::skip_without_emulator(test);
    None
}

#[cfg(yolo_cuda_emulator)]
#[test]
fn emulator_obb_params_layout_matches_the_kernels() {
    #[link(name = "yl_emu", kind = "static")]
    extern "C" {
        fn yl_emu_obb_params_layout(offsets: *mut usize, n: usize) -> usize;
    }
    let cxx = crate::test_support::cxx_params_layout(yl_emu_obb_params_layout);
    assert_eq!(cxx, super::params::layout_probe(), "ObbParams: C++ (size, offsets) vs Rust");
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
