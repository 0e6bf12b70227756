// Layout of the classification kernel's parameter block (cuda/cls.cuh) as this compiler sees it, for the Rust side
// (crates/cuda/src/classification/tests.rs) to compare with its #[repr(C)] copy.
#include "emu.hpp"

#include <cstddef>

#include "cls.cuh"

extern "C" size_t yl_emu_cls_params_layout(size_t* offsets, size_t n) {
    const size_t o[] = {offsetof(ClsParams, target), offsetof(ClsParams, grad), offsetof(ClsParams, row_loss),
                        offsetof(ClsParams, batch), offsetof(ClsParams, nc)};
    for (size_t i = 0; i < n && i < sizeof(o) / sizeof(o[0]); ++i) offsets[i] = o[i];
    return sizeof(ClsParams);
}
