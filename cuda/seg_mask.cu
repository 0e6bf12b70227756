// Segmentation: the mask term of v8SegmentationLoss (docs/spec.md §10) and its gradient, after the detection
// kernels (det_*.cu) assigned the positives. Per positive: mask = coef · proto over the prototype grid, BCE against
// the nearest-resized GT mask, summed over the GT box's crop, divided by Hm·Wm and the box's normalised area; the
// same operations in the same order as crates/core segmentation.rs `image_mask_term`, so that with --fmad=false
// every mask logit, BCE and per-pixel gradient rounds as there.
//
//  yl_seg_positives — one block: the positives listed image by image in anchor order (pos_anchor, pos_start),
//                     and the gradient scale B·g_box / P (0 for TVPSegmentLoss, which differentiates cls only).
//  yl_seg_mask      — one block per positive (grid-stride), one thread per crop row: the row's BCE sum and its
//                     coefficient-gradient dots, each in the CPU's column order; rows are then added in row order
//                     (a row tile at a time, through shared memory), as the CPU adds them. Writes the positive's
//                     term, its crop and gradient factor (for the next kernel), and its coefficient gradient.
//  yl_seg_proto     — one thread per (image, prototype pixel): the sum over the image's positives whose crop holds
//                     the pixel of g·coef, positives in order. No atomics: each proto gradient element has one
//                     writer, and the order of its sum is the CPU's.
#include "seg.cuh"

namespace {

constexpr int kPositivesThreads = 256;
// Crop rows per tile of yl_seg_mask, and coefficients per pass over a tile (registers per thread).
constexpr int kMaskThreads = 64;
constexpr int kCoefChunk = 32;

}  // namespace

extern "C" __global__ void __launch_bounds__(256) yl_seg_positives(const SegParams P) {
    // Thread i scans a contiguous chunk of the (image, anchor) pairs; an exclusive scan of the counts gives where
    // its positives go, so the list keeps (image, anchor) order.
    __shared__ int scan[kPositivesThreads];
    const int64_t total = static_cast<int64_t>(P.batch) * P.anchors;
    const int64_t chunk = (total + kPositivesThreads - 1) / kPositivesThreads;
    const int64_t from = min(total, static_cast<int64_t>(threadIdx.x) * chunk);
    const int64_t to = min(total, from + chunk);
    int count = 0;
    for (int64_t i = from; i < to; ++i) count += P.pos_gt[i] >= 0 ? 1 : 0;
    scan[threadIdx.x] = count;
    __syncthreads();
    for (int off = 1; off < kPositivesThreads; off <<= 1) {
        const int v = static_cast<int>(threadIdx.x) >= off ? scan[threadIdx.x - off] : 0;
        __syncthreads();
        scan[threadIdx.x] += v;
        __syncthreads();
    }
    int at = scan[threadIdx.x] - count;
    for (int64_t i = from; i < to; ++i) {
        const int64_t a = i % P.anchors;
        if (a == 0) P.pos_start[i / P.anchors] = at;
        if (P.pos_gt[i] >= 0) P.pos_anchor[at++] = static_cast<int>(a);
    }
    if (threadIdx.x == kPositivesThreads - 1) {
        const int positives = scan[threadIdx.x];
        P.pos_start[P.batch] = positives;
        // segmentation.rs: B·g_box / P, in f32 in this order; zero without positives or for the cls-only loss.
        const float scale = static_cast<float>(P.batch) * P.gain_box / static_cast<float>(positives);
        P.scalars[0] = positives > 0 && !P.only_cls ? scale : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(64) yl_seg_mask(const SegParams P) {
    __shared__ float dots[kMaskThreads][kCoefChunk];
    __shared__ float row_loss[kMaskThreads];
    const int positives = P.pos_start[P.batch];
    const int64_t plane = static_cast<int64_t>(P.mh) * P.mw;
    for (int k = blockIdx.x; k < positives; k += gridDim.x) {
        int b = 0;
        while (P.pos_start[b + 1] <= k) ++b;
        const int a = P.pos_anchor[k];
        const yl::MaskCrop q = yl::mask_crop(P, b, a);
        const float* coef = P.pred_masks + static_cast<int64_t>(b) * P.nm * P.anchors + a;
        const auto cf = [&](int j) { return coef[static_cast<int64_t>(j) * P.anchors]; };
        const float* proto = P.proto + static_cast<int64_t>(b) * P.nm * plane;
        float* gc = P.grad_coef == nullptr ? nullptr : P.grad_coef + static_cast<int64_t>(b) * P.nm * P.anchors + a;
        double sum = 0.0;
        for (int rt = q.r0; rt < q.r1; rt += kMaskThreads) {
            const int r = rt + static_cast<int>(threadIdx.x);
            const int rows = min(kMaskThreads, q.r1 - rt);
            // One pass per chunk of coefficients (one pass in all for nm ≤ 32, or without a gradient); the row's
            // logits are recomputed per pass, identically.
            for (int jc = 0; jc < P.nm; jc += kCoefChunk) {
                const int width = min(kCoefChunk, P.nm - jc);
                float dot[kCoefChunk];
                for (int jj = 0; jj < kCoefChunk; ++jj) dot[jj] = 0.0f;
                float acc = 0.0f;
                if (r < q.r1) {
                    const float* row = proto + static_cast<int64_t>(r) * P.mw;
                    for (int c = q.c0; c < q.c1; ++c) {
                        const float m = yl::mask_logit(P, b, r, c, cf);
                        const float t = yl::gt_mask(P, b, q.gt, r, c);
                        float l, s;
                        yl::bce_sigmoid(m, l, s);
                        acc += l - m * t;
                        if (gc != nullptr) {
                            const float g = (s - t) * q.up;
                            for (int jj = 0; jj < width; ++jj) dot[jj] += g * row[(jc + jj) * plane + c];
                        }
                    }
                }
                row_loss[threadIdx.x] = acc;
                for (int jj = 0; jj < kCoefChunk; ++jj) dots[threadIdx.x][jj] = dot[jj];
                __syncthreads();
                if (jc == 0 && threadIdx.x == 0) {
                    for (int i = 0; i < rows; ++i) sum += static_cast<double>(row_loss[i]);
                }
                if (gc != nullptr && static_cast<int>(threadIdx.x) < width) {
                    float* out = gc + static_cast<int64_t>(jc + threadIdx.x) * P.anchors;
                    float v = *out;
                    for (int i = 0; i < rows; ++i) v += dots[i][threadIdx.x];
                    *out = v;
                }
                __syncthreads();
                if (gc == nullptr) break;
            }
        }
        if (threadIdx.x == 0) {
            P.values[k] = sum / static_cast<double>(static_cast<float>(P.mh * P.mw)) / static_cast<double>(q.area);
            int32_t* crop = P.crops + static_cast<int64_t>(k) * 4;
            crop[0] = q.r0;
            crop[1] = q.r1;
            crop[2] = q.c0;
            crop[3] = q.c1;
            P.ups[k] = q.up;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) yl_seg_proto(const SegParams P) {
    const int64_t plane = static_cast<int64_t>(P.mh) * P.mw;
    const int64_t t = yl::global_thread();
    if (t >= static_cast<int64_t>(P.batch) * plane) return;
    const int b = static_cast<int>(t / plane);
    const int64_t px = t - static_cast<int64_t>(b) * plane;
    const int r = static_cast<int>(px / P.mw), c = static_cast<int>(px % P.mw);
    const int first = P.pos_start[b], end = P.pos_start[b + 1];
    float* out = P.grad_proto + static_cast<int64_t>(b) * P.nm * plane + px;
    for (int jc = 0; jc < P.nm; jc += kCoefChunk) {
        const int width = min(kCoefChunk, P.nm - jc);
        float gp[kCoefChunk];
        for (int jj = 0; jj < kCoefChunk; ++jj) gp[jj] = 0.0f;
        for (int k = first; k < end; ++k) {
            const int32_t* crop = P.crops + static_cast<int64_t>(k) * 4;
            if (r < crop[0] || r >= crop[1] || c < crop[2] || c >= crop[3]) continue;
            const int a = P.pos_anchor[k];
            const float* coef = P.pred_masks + static_cast<int64_t>(b) * P.nm * P.anchors + a;
            const auto cf = [&](int j) { return coef[static_cast<int64_t>(j) * P.anchors]; };
            const float m = yl::mask_logit(P, b, r, c, cf);
            const int g_slot = P.pos_gt[static_cast<int64_t>(b) * P.anchors + a];
            const float tv = yl::gt_mask(P, b, g_slot, r, c);
            float l, s;
            yl::bce_sigmoid(m, l, s);
            const float g = (s - tv) * P.ups[k];
            for (int jj = 0; jj < width; ++jj) gp[jj] += g * cf(jc + jj);
        }
        for (int jj = 0; jj < width; ++jj) out[(jc + jj) * plane] = gp[jj];
    }
}
