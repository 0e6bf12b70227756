//! Probes of the detection kernels' shared code through the CPU emulator (emu/, built by build.rs), for this
//! crate's tests: DetParams' layout as the C++ compiler sees it, and the kernels' per-logit class arithmetic.

#[link(name = "yl_emu", kind = "static")]
extern "C" {
    fn yl_emu_det_params_layout(offsets: *mut usize, n: usize) -> usize;
    fn yl_emu_bce_sigmoid(x: f32, loss: *mut f32, sig: *mut f32);
}

/// (size, field offsets) of DetParams as the C++ compiler lays it out.
pub(crate) fn cxx_layout() -> (usize, [usize; 9]) {
    crate::test_support::cxx_params_layout(yl_emu_det_params_layout)
}

/// (BCE(x, 0), σ(x)) as the kernels compute them (yl::bce_sigmoid of cuda/detect.cuh).
pub(crate) fn kernel_bce_sigmoid(x: f32) -> (f32, f32) {
    let (mut l, mut s) = (0.0, 0.0);
    // SAFETY: a pure function of x writing two floats into the locals.
    unsafe { yl_emu_bce_sigmoid(x, &mut l, &mut s) };
    (l, s)
}
