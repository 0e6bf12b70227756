// Probes of the detection kernels' shared code (cuda/detect.cuh) for the Rust tests
// (crates/cuda/src/detection/emu.rs), compiled into the emulator library beside the kernels.
#include "emu.hpp"

#include <cstddef>

#include "detect.cuh"

// Layout of DetParams as this compiler sees it, for the Rust side to compare with its #[repr(C)] copy.
extern "C" size_t yl_emu_det_params_layout(size_t* offsets, size_t n) {
    const size_t o[] = {offsetof(DetParams, grad),    offsetof(DetParams, height),   offsetof(DetParams, stride),
                        offsetof(DetParams, levels),  offsetof(DetParams, box_blocks), offsetof(DetParams, gain_box),
                        offsetof(DetParams, gt_box),  offsetof(DetParams, dist),     offsetof(DetParams, flags)};
    for (size_t i = 0; i < n && i < sizeof(o) / sizeof(o[0]); ++i) offsets[i] = o[i];
    return sizeof(DetParams);
}

// The kernels' per-logit class arithmetic (detect.cuh), for the test that holds it bit-equal to the CPU backend's
// (crates/core fastmath.rs): the two are ports of each other and must not drift apart.
extern "C" void yl_emu_bce_sigmoid(float x, float* loss, float* sig) { yl::bce_sigmoid(x, *loss, *sig); }
