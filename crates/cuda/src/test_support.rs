//! Helpers of the GPU tests: skip (with the reason, visible in `cargo test` output) where CUDA cannot run.

// The skip rule of the integration tests (tests/common/gpu.rs), which names this crate as `yolo_loss_cuda` (see
// the `extern crate self` in lib.rs).
#[path = "../tests/common/gpu.rs"]
mod gpu_skip;
pub(crate) use gpu_skip::gpu_or_skip;

/// Where the kernel emulator was not built: panics under `YOLO_LOSS_REQUIRE_EMULATOR=1` (CI), else says on stderr that
/// `test` is skipped and why. Every task's emulator tests call it from their `emulator()` maker.
#[cfg(not(yolo_cuda_emulator))]
pub(crate) fn skip_without_emulator(test: &str) {
    let why = env!("YOLO_LOSS_CUDA_EMULATOR_NOTE");
    if std::env::var("YOLO_LOSS_REQUIRE_EMULATOR").is_ok_and(|v| v == "1") {
        panic!("YOLO_LOSS_REQUIRE_EMULATOR=1 but the kernel emulator was not built: {why}");
    }
    let _ =
        std::io::Write::write_all(&mut std::io::stderr(), format!("skipping emulator test {test}: {why}\n").as_bytes());
}

/// The C++ side's (size, field offsets) of a kernel parameter struct, from its `emu/<task>_probes.cpp` probe: what
/// each task's layout test compares with its Rust twin's `layout_probe()`.
#[cfg(yolo_cuda_emulator)]
pub(crate) fn cxx_params_layout<const N: usize>(
    probe: unsafe extern "C" fn(*mut usize, usize) -> usize,
) -> (usize, [usize; N]) {
    let mut offsets = [0usize; N];
    // SAFETY: the probes write at most `n` offsets into the array.
    let size = unsafe { probe(offsets.as_mut_ptr(), offsets.len()) };
    (size, offsets)
}
