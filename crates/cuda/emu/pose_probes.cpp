// Layout of the pose kernels' parameter block (cuda/pose.cuh) as this compiler sees it, for the Rust side
// (crates/cuda/src/pose/tests.rs) to compare with its #[repr(C)] copy.
#include "emu.hpp"

#include <cstddef>

#include "pose.cuh"

extern "C" size_t yl_emu_pose_params_layout(size_t* offsets, size_t n) {
    const size_t o[] = {offsetof(PoseParams, kpts),      offsetof(PoseParams, kpts_grad), offsetof(PoseParams, gt_kpts),
                        offsetof(PoseParams, sigmas),    offsetof(PoseParams, positives), offsetof(PoseParams, sums),
                        offsetof(PoseParams, k),         offsetof(PoseParams, img_h),     offsetof(PoseParams, gain_pose)};
    for (size_t i = 0; i < n && i < sizeof(o) / sizeof(o[0]); ++i) offsets[i] = o[i];
    return sizeof(PoseParams);
}
