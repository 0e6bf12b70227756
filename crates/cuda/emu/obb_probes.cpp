// Layout of the oriented-box kernels' parameter block (cuda/obb.cuh) as this compiler sees it, for the Rust side
// (crates/cuda/src/obb/tests.rs) to compare with its #[repr(C)] copy.
#include "emu.hpp"

#include <cstddef>

#include "obb.cuh"

extern "C" size_t yl_emu_obb_params_layout(size_t* offsets, size_t n) {
    const size_t o[] = {offsetof(ObbParams, angle), offsetof(ObbParams, angle_grad), offsetof(ObbParams, gt_rbox)};
    for (size_t i = 0; i < n && i < sizeof(o) / sizeof(o[0]); ++i) offsets[i] = o[i];
    return sizeof(ObbParams);
}
