// The parameter block of the classification kernel (cls.cu), identical in layout to `ClsParams` in
// crates/cuda/src/classification/params.rs.
#pragma once

#include <cstdint>

struct ClsParams {
    const float* logits;    // [B, nc]
    const int32_t* target;  // [B] class index of each image (checked on the host: in [0, nc))
    float* grad;            // [B, nc], every element written; null: loss only
    float* row_loss;        // [B] cross entropy of each image (f32, as the CPU backend rounds it before summing)
    int32_t batch, nc;
};
