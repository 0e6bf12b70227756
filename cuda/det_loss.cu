// Detection pass 3: the loss terms and their gradient (docs/spec.md §9 steps 7–10), after the assignment and S are known.
//
//  yl_det_class — one thread per (image b, chunk of 16 classes, anchor a): the chunk's class logits x, in one pass:
//                 Σ BCE(x, t) = Σ BCE(x, 0) − t·x and grad = σ(x)·scale − t·scale (t = the soft score n at the
//                 anchor's assigned class, 0 elsewhere; scale = B·g_cls/S), with the CPU backend's polynomial
//                 exp/log1p. Channels outside the box channels and the class window (TVP text prompts) are checked
//                 for finiteness and get a zero gradient. One partial sum per block (double).
//  yl_det_box   — four threads (sides) per (b, a), positives only: the CIoU term (1 − CIoU(pred, target))·w and
//                 the DFL term with their gradient into the 4R box channels (which yl_det_decode zeroed), as
//                 crates/core detection.rs box_terms: target = GT box / stride, w = the soft score, α constant.
//                 Partial sums per block: Σ (1 − CIoU)·w and Σ DFL·w.
#include "detect.cuh"

extern "C" __global__ void __launch_bounds__(256) yl_det_class(const DetParams P) {
    // Thread t: (image b, chunk of kClassChunk classes, anchor a), anchors fastest (coalesced).
    const int chunks = (P.nc + yl::kClassChunk - 1) / yl::kClassChunk;
    const int64_t total = static_cast<int64_t>(P.batch) * chunks * P.anchors;
    const int64_t t = yl::global_thread();
    double part = 0.0;
    if (t < total) {
        const int64_t bc = t / P.anchors;
        const int a = static_cast<int>(t - bc * P.anchors);
        const int chunk = static_cast<int>(bc % chunks);
        const int64_t i = (bc / chunks) * P.anchors + a;  // (image, anchor) index
        const yl::ImageAnchor ia = yl::image_anchor(P, i);
        const int64_t hw = ia.hw;
        const float* x = ia.feat;
        float* g = ia.grad;
        const int pc = P.pos_cls[i];
        const float n = pc >= 0 ? P.pos_score[i] : 0.0f;
        const float scale = P.scalars[2];
        const int cls_ch0 = P.cls_ch0;
        const int c0 = chunk * yl::kClassChunk;
        float acc = 0.0f;
        double corr = 0.0;
        bool finite = true;
        // The chunk's logits go into registers before any arithmetic or store, so that all its loads are in flight
        // at once (the gradient may alias the predictions as far as the compiler knows: a load after a store waits
        // for it). Per logit, the same operations in the same order as the CPU backend. Addresses step by H·W
        // from the chunk's first class (no 64-bit multiply per logit); the positive's −t·x is added after the loop.
        const int64_t first = static_cast<int64_t>(cls_ch0 + c0) * hw;
        const int count = min(yl::kClassChunk, P.nc - c0);
        float xs[yl::kClassChunk];
        {
            const float* xp = x + first;
#pragma unroll
            for (int j = 0; j < yl::kClassChunk; ++j, xp += hw) xs[j] = j < count ? __ldg(xp) : 0.0f;
        }
        float x_pos = 0.0f;
        float* gp = g == nullptr ? nullptr : g + first;
#pragma unroll
        for (int j = 0; j < yl::kClassChunk; ++j) {
            if (j >= count) break;
            const float xv = xs[j];
            finite = finite && isfinite(xv);
            float l, sg;
            yl::bce_sigmoid(xv, l, sg);
            acc += l;
            float gv = sg * scale;
            if (c0 + j == pc) {
                x_pos = xv;
                gv = gv - n * scale;
            }
            if (gp != nullptr) {
                *gp = gv;
                gp += hw;
            }
        }
        if (pc >= c0 && pc < c0 + count) corr -= static_cast<double>(x_pos * n);
        // Channels that are neither box nor loss classes (the text prompts of TVPDetectLoss): chunk 0's thread.
        if (chunk == 0) {
            for (int ch = 4 * P.reg_max; ch < P.channels; ++ch) {
                if (ch == cls_ch0) {
                    ch = cls_ch0 + P.nc - 1;
                    continue;
                }
                const int64_t off = static_cast<int64_t>(ch) * hw;
                finite = finite && isfinite(x[off]);
                if (g != nullptr) g[off] = 0.0f;
            }
        }
        if (!finite) atomicAdd(P.flags, 1u);
        part = static_cast<double>(acc) + corr;
    }
    const double block_total = yl::block_sum(part);
    if (threadIdx.x == 0) P.sums[P.score_blocks + blockIdx.x] = block_total;
}

namespace {

// The whole thread: `pos` says whether (image, anchor) i is a positive (GT slot gi). Every thread of the warp
// runs the shuffles (the four side-threads of an anchor are four neighbouring lanes), positives or not.
template <int RC>
__device__ __forceinline__ void box_thread(const DetParams& P, int64_t i, int s, bool pos, int gi, double& iou_part,
                                           double& dfl_part) {
    const int lane = static_cast<int>(threadIdx.x & 31u);
    const int group = lane & ~3;
    float d = 0.0f, m = 0.0f, sum = 1.0f;
    yl::ImageAnchor ia{};
    const float* zs = nullptr;
    if (pos) {
        ia = yl::image_anchor(P, i);
        zs = ia.feat + static_cast<int64_t>(s) * P.reg_max * ia.hw;
    }
    const yl::SideLogits<RC> z(zs, ia.hw);  // zs null where not a positive: nothing loaded
    const int R = RC > 0 ? RC : P.reg_max;  // a constant in the RC > 0 build: the loops unroll over registers
    if (pos) d = R == 1 ? z(0) : yl::soft_argmax<RC>(z, R, false, m, sum);
    float dd[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) dd[q] = __shfl_sync(0xffffffffu, d, group + q);
    float dfl_s = 0.0f;
    if (pos) {
        const yl::AnchorAt at = ia.at;
        float* gr = P.only_cls ? nullptr : ia.grad;
        const float w = P.pos_score[i];
        const float stride = P.stride[at.level];
        const float ax = static_cast<float>(at.x) + 0.5f, ay = static_cast<float>(at.y) + 0.5f;
        const float pred[4] = {ax - dd[0], ay - dd[1], ax + dd[2], ay + dd[3]};
        const int64_t slot = static_cast<int64_t>(ia.b) * P.max_gt + gi;
        const float target[4] = {P.gt_box[slot * 4] / stride, P.gt_box[slot * 4 + 1] / stride,
                                 P.gt_box[slot * 4 + 2] / stride, P.gt_box[slot * 4 + 3] / stride};
        const yl::Ciou f = yl::ciou_forward(pred, target, yl::aspect_atan(pred), yl::aspect_atan(target));
        float gb[4];
        yl::ciou_backward_box1(f, pred, target, -P.scalars[1] * w, gb);
        if (s == 0) iou_part = static_cast<double>((1.0f - f.value) * w);
        const float g_dist = s < 2 ? -gb[s] : gb[s];
        float* gs = gr == nullptr ? nullptr : gr + static_cast<int64_t>(s) * R * ia.hw;
        if (R == 1) {
            if (gs != nullptr) gs[0] = g_dist;
        } else {
            // bbox2dist with the bound R − 1.01 (both clamps of the reference use the same bound).
            const float hi = static_cast<float>(static_cast<double>(R - 1) - 0.01);
            const float ltrb[4] = {ax - target[0], ay - target[1], target[2] - ax, target[3] - ay};
            const float y_raw = fminf(fmaxf(ltrb[s], 0.0f), hi);
            dfl_s = yl::dfl_side(z, R, y_raw, hi, m, sum, d, P.scalars[3] * w / 4.0f, g_dist, gs, ia.hw);
        }
    }
    // The DFL term of the anchor: its four sides added in order (as the CPU does), by the side-0 thread.
    float sides[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) sides[q] = __shfl_sync(0xffffffffu, dfl_s, group + q);
    if (pos && s == 0 && R > 1) {
        float dfl = 0.0f;
        for (int q = 0; q < 4; ++q) dfl += sides[q];
        dfl_part = static_cast<double>(dfl / 4.0f * P.pos_score[i]);
    }
}

}  // namespace

// One thread per (image b, anchor a, side s), sides fastest: a positive's work is split over four lanes (its
// soft-argmax, DFL term and logit gradient per side; the CIoU term, which needs all four distances, is computed
// by each of the four from the shuffled distances). Shorter per-thread work and fewer registers than one thread
// per anchor: the kernel's time is the longest positive's chain, not memory traffic.
extern "C" __global__ void __launch_bounds__(256) yl_det_box(const DetParams P) {
    const int64_t total = static_cast<int64_t>(P.batch) * P.anchors * 4;
    const int64_t t = yl::global_thread();
    const int64_t i = t / 4;
    const int s = static_cast<int>(t % 4);
    double iou_part = 0.0, dfl_part = 0.0;
    const int gi = t < total ? P.pos_gt[i] : -1;
    if (P.reg_max == 16) {
        box_thread<16>(P, i, s, gi >= 0, gi, iou_part, dfl_part);
    } else {
        box_thread<0>(P, i, s, gi >= 0, gi, iou_part, dfl_part);
    }
    const double iou_total = yl::block_sum(iou_part);
    const double dfl_total = yl::block_sum(dfl_part);
    if (threadIdx.x == 0) {
        const int64_t o = static_cast<int64_t>(P.score_blocks) + P.class_blocks;
        P.sums[o + blockIdx.x] = iou_total;
        P.sums[o + P.box_blocks + blockIdx.x] = dfl_total;
    }
}
