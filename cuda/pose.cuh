// The parameter block of the pose kernels (pose.cu), identical in layout to `PoseParams` in
// crates/cuda/src/pose/params.rs: the detection stages' block (their positives, GT boxes, levels) and the
// keypoint pass's own inputs and work buffers.
#pragma once

#include "detect.cuh"

struct PoseParams {
    DetParams det;
    const float* kpts;     // [B, K·D, A]
    float* kpts_grad;      // [B, K·D, A], every element written; null: loss only
    const float* gt_kpts;  // [B·M, K, D] the normalised keypoints of each GT slot (zeros in padding slots)
    const double* sigmas;  // [K] OKS sigmas (COCO-17) or 1/K
    uint32_t* positives;   // zeroed, [1]: positive anchors of the batch (yl_pose_count)
    double* sums;          // per-block partial sums: [blocks] OKS terms | [blocks] visibility BCE terms
    int32_t k, d, blocks, pad0;
    float img_h, img_w, pad1, pad2;  // image size in pixels (level 0's grid × stride)
    double gain_pose, gain_kobj;
};
