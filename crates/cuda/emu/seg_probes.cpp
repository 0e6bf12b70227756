// Probe of the segmentation kernels' parameter block (cuda/seg.cuh) for the Rust tests
// (crates/cuda/src/segmentation/tests.rs), compiled into the emulator library beside the kernels.
#include "emu.hpp"

#include <cstddef>

#include "seg.cuh"

// Layout of SegParams as this compiler sees it, for the Rust side to compare with its #[repr(C)] copy.
extern "C" size_t yl_emu_seg_params_layout(size_t* offsets, size_t n) {
    const size_t o[] = {offsetof(SegParams, mh),      offsetof(SegParams, overlap),    offsetof(SegParams, gain_box),
                        offsetof(SegParams, gt_box),  offsetof(SegParams, masks),      offsetof(SegParams, slot_mask),
                        offsetof(SegParams, scalars), offsetof(SegParams, ups),        offsetof(SegParams, grad_proto)};
    for (size_t i = 0; i < n && i < sizeof(o) / sizeof(o[0]); ++i) offsets[i] = o[i];
    return sizeof(SegParams);
}
