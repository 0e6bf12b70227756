// Detection pass 1 (docs/spec.md §9 bbox_decode): the soft-argmax decode of every anchor, for the assigner.
//
// One thread per (image b, side s, anchor a), anchors fastest: it reads the R box logits feat[b, s·R + k, y, x]
// (neighbouring threads read neighbouring pixels: coalesced) and writes the distance to dist[b, a, s] in grid
// units, in the soft-argmax form the CPU assigner uses for that image (img_bulk). When the gradient is wanted it
// also writes 0 into the side's R box channels of grad: pass 3 (det_loss.cu) overwrites the positives' ones, so
// the box part of the gradient is written exactly once per element without a memset. Any non-finite box logit
// raises flags[0]; the host then names the element (the kernels never index memory with predicted values, so
// non-finite input is memory-safe).
//
// Speed: the kernel moves 2 × 4R·B·A floats and does little arithmetic per byte, so what matters is keeping many
// loads in flight and overlapping one warp's arithmetic with other warps' memory traffic: one side per thread
// (four times the threads of one anchor per thread, fewer registers each), and with R = 16 all logits loaded into
// registers before any arithmetic or store. (A loop that interleaves loads with the zeroing stores serialises:
// as far as the compiler knows the gradient may alias the predictions, so each load waits for the store before.)
#include "detect.cuh"

namespace {

// One side: RC > 0 is R known at compile time (registers, unrolled); RC = 0 reads R = reg_max logits in place.
template <int RC>
__device__ __forceinline__ float decode_side(const float* zs, float* gs, int64_t hw, int reg_max, bool bulk,
                                             bool& finite) {
    const int R = RC > 0 ? RC : reg_max;
    const yl::SideLogits<RC> z(zs, hw);
#pragma unroll
    for (int k = 0; k < R; ++k) finite = finite && isfinite(z(k));
    float d;
    if (R == 1) {
        d = z(0);
    } else {
        float m, sum;
        d = yl::soft_argmax<RC>(z, R, bulk, m, sum);
    }
    if (gs != nullptr) {
#pragma unroll
        for (int k = 0; k < R; ++k) gs[k * hw] = 0.0f;
    }
    return d;
}

}  // namespace

extern "C" __global__ void __launch_bounds__(256) yl_det_decode(const DetParams P) {
    const int64_t total = static_cast<int64_t>(P.batch) * 4 * P.anchors;
    const int64_t t = yl::global_thread();
    if (t >= total) return;
    const int64_t bs = t / P.anchors;
    const int a = static_cast<int>(t - bs * P.anchors);
    const int s = static_cast<int>(bs % 4);
    const int64_t i = (bs / 4) * P.anchors + a;  // (image, anchor) index
    const yl::ImageAnchor ia = yl::image_anchor(P, i);
    const int64_t side0 = static_cast<int64_t>(s) * P.reg_max * ia.hw;
    const float* zs = ia.feat + side0;
    float* gs = ia.grad == nullptr ? nullptr : ia.grad + side0;
    const bool bulk = P.img_bulk[ia.b] != 0;
    bool finite = true;
    const float d = P.reg_max == 16 ? decode_side<16>(zs, gs, ia.hw, 16, bulk, finite)
                                    : decode_side<0>(zs, gs, ia.hw, P.reg_max, bulk, finite);
    P.dist[i * 4 + s] = d;
    if (!finite) atomicAdd(P.flags, 1u);
}
