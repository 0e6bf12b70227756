// Classification BCE of one detection level (docs/spec.md §9 step 8, §6.1), in two passes that never build the dense
// target tensor [B, A, nc]:
//
//  1. yl_cls_bce_dense: every class logit x of the level as if its target were 0:
//        loss += BCE(x, 0) = max(x, 0) + ln(1 + e^{-|x|}),      grad[x] = σ(x)·scale.
//  2. yl_cls_bce_positive: the few logits whose target t is non-zero (one class per positive anchor), using
//        BCE(x, t) = BCE(x, 0) − t·x   and   ∂BCE(x, t)/∂x = σ(x) − t:
//        loss += −t·x,                                           grad[x] += −t·scale.
//
// Together they give Σ BCE(x, t) over all anchors and classes and scale·(σ(x) − t) in the gradient, with scale the
// caller's factor (B·g_cls/S in v8DetectionLoss); the loss sums are returned unscaled. Pass 2 must run after pass 1
// on the same stream (it adds to what pass 1 wrote).
//
// Both passes write one partial sum per block instead of using atomics on one accumulator: the host adds the
// partials in block order, so the sum is the same on every run and every GPU for a given launch shape.
#include "common.cuh"

// Pass 1. feat and grad are the whole level tensor [B, channels, H, W] (grad may be null: loss only); the class
// logits are channels [class_offset, class_offset + nc) of every image. partials has gridDim.x entries.
extern "C" __global__ void yl_cls_bce_dense(
    const float* __restrict__ feat, float* __restrict__ grad, float* __restrict__ partials,
    int batch, int channels, int hw, int class_offset, int nc, float scale) {
    // The class channels of one image are contiguous (nc·hw values), so (image, offset inside that run) is
    // enough to address them; consecutive threads touch consecutive addresses.
    const int64_t per_image = static_cast<int64_t>(nc) * hw;
    const int64_t total = static_cast<int64_t>(batch) * per_image;
    float acc = 0.0f;
    for (int64_t i = yl::global_thread(); i < total; i += yl::grid_threads()) {
        const int64_t b = i / per_image;
        const int64_t flat = (b * channels + class_offset) * static_cast<int64_t>(hw) + (i - b * per_image);
        const float x = feat[flat];
        const float e = yl::exp_neg_abs(x);
        acc += yl::softplus_from(x, e);
        if (grad != nullptr) grad[flat] = yl::sigmoid_from(x, e) * scale;
    }
    const float block_total = yl::block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = block_total;
}

// Pass 2. index[j] is a flat index into the level tensor (the same indexing as feat/grad) and target[j] its
// target t ≠ 0. Indices out of [0, numel) are skipped (memory safety; the launcher validates host-built lists).
// Duplicated indices are allowed: the gradient update is atomic, and it is exact and order-free whenever the
// indices are distinct, as they are for one-hot targets.
extern "C" __global__ void yl_cls_bce_positive(
    const float* __restrict__ feat, float* __restrict__ grad, float* __restrict__ partials,
    const uint64_t* __restrict__ index, const float* __restrict__ target, int64_t count, int64_t numel,
    float scale) {
    float acc = 0.0f;
    for (int64_t j = yl::global_thread(); j < count; j += yl::grid_threads()) {
        const uint64_t flat = index[j];
        if (flat >= static_cast<uint64_t>(numel)) continue;
        const float t = target[j];
        acc -= t * feat[flat];
        if (grad != nullptr) atomicAdd(grad + flat, -t * scale);
    }
    const float block_total = yl::block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = block_total;
}
