// The parameter block of the oriented-box kernels (obb.cu), identical in layout to `ObbParams` in
// crates/cuda/src/obb/params.rs: the detection stages' block (levels, decoded distances, assignment buffers; its
// gt_box holds each GT's corner bounds, the rectangle the assigner walks) and the rotated inputs.
#pragma once

#include "detect.cuh"

struct ObbParams {
    DetParams det;
    const float* angle;    // [B·A] θ of every anchor
    float* angle_grad;     // [B·A], every element written; null: loss only
    const float* gt_rbox;  // [B·M·5] pixel (cx, cy, w, h, θ) of each GT slot (zeros in padding slots)
};
