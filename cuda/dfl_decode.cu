// DFL soft-argmax decode of one detection level (docs/spec.md §9 bbox_decode, §5 dist2bbox).
//
// For every image b, anchor (pixel) p of the level and side s ∈ {left, top, right, bottom} the R box logits
// z_k = feat[b, s·R + k, y, x] give the distance d = Σ_k k·softmax(z)_k (R = 1: d = z_0, no DFL). The kernel writes
//   dist [b, a, s]  = d                                     (kept for the gradient: ∂d/∂z_k = softmax_k·(k − d))
//   boxes[b, a, s]  = (ax − d, ay − d, ax + d, ay + d)[s]   (grid-unit xyxy; each side moves exactly one corner)
// with a = anchor_offset + p the anchor's index in the concatenation of all levels and (ax, ay) = (x + ½, y + ½)
// its centre in grid units (make_anchors, offset 0.5). dist and boxes are [B, anchors_total, 4] buffers shared by
// the launches of all levels.
//
// One thread per (b, s, p) with p fastest: neighbouring threads read neighbouring pixels of the same channel, so the
// R strided reads of the NCHW tensor are coalesced. Nothing is reduced across threads.
#include "common.cuh"

extern "C" __global__ void yl_dfl_decode_level(
    const float* __restrict__ feat,  // [B, channels, height, width]; channels ≥ 4·reg_max, box logits first
    float* __restrict__ dist,        // [B, anchors_total, 4]
    float* __restrict__ boxes,       // [B, anchors_total, 4]
    int batch, int channels, int height, int width, int reg_max, int anchors_total, int anchor_offset) {
    const int64_t hw = static_cast<int64_t>(height) * width;
    const int64_t total = static_cast<int64_t>(batch) * 4 * hw;
    for (int64_t i = yl::global_thread(); i < total; i += yl::grid_threads()) {
        const int64_t p = i % hw;
        const int side = static_cast<int>((i / hw) % 4);
        const int64_t b = i / (4 * hw);
        const float* z = feat + (b * channels + static_cast<int64_t>(side) * reg_max) * hw + p;

        float d;
        if (reg_max == 1) {
            d = z[0];
        } else {
            // Max first so that every exponent is ≤ 0; then Σ e and Σ k·e in one pass (d = Σ k·e / Σ e).
            float m = z[0];
            for (int k = 1; k < reg_max; ++k) m = fmaxf(m, z[k * hw]);
            float sum = 0.0f, weighted = 0.0f;
            for (int k = 0; k < reg_max; ++k) {
                const float e = expf(z[k * hw] - m);
                sum += e;
                weighted += e * static_cast<float>(k);
            }
            d = weighted / sum;
        }

        const int64_t out = ((b * anchors_total) + anchor_offset + p) * 4 + side;
        dist[out] = d;
        // Sides 0, 1 (left, top) move x1, y1 towards −∞; sides 2, 3 (right, bottom) move x2, y2 towards +∞.
        const float centre = (side & 1) ? static_cast<float>(p / width) + 0.5f : static_cast<float>(p % width) + 0.5f;
        boxes[out] = side < 2 ? centre - d : centre + d;
    }
}
