// Detection pass 1 (SPEC §9 bbox_decode): the soft-argmax decode of every anchor, for the assigner.
//
// One thread per (image b, anchor a) over all levels. For each side s it reads the R box logits
// feat[b, s·R + k, y, x] (neighbouring threads read neighbouring pixels: coalesced) and writes the distance to
// dist[b, a, s] in grid units, in the soft-argmax form the CPU assigner uses for that image (img_bulk). When the
// gradient is wanted it also writes 0 into the 4R box channels of grad: pass 3 (det_loss.cu) overwrites the
// positives' ones, so the box part of the gradient is written exactly once per element without a memset.
// Any non-finite box logit raises flags[0]; the host then names the element (the kernels never index memory
// with predicted values, so non-finite input is memory-safe).
#include "detect.cuh"

extern "C" __global__ void __launch_bounds__(256) yl_det_decode(const DetParams P) {
    const int64_t total = static_cast<int64_t>(P.batch) * P.anchors;
    const int64_t i = yl::global_thread();
    if (i >= total) return;
    const yl::ImageAnchor ia = yl::image_anchor(P, i);
    const int64_t hw = ia.hw;
    const float* z = ia.feat;
    float* g = ia.grad;
    const int R = P.reg_max;
    const bool bulk = P.img_bulk[ia.b] != 0;
    bool finite = true;
    float d[4];
    for (int s = 0; s < 4; ++s) {
        const float* zs = z + static_cast<int64_t>(s) * R * hw;
        for (int k = 0; k < R; ++k) finite = finite && isfinite(zs[k * hw]);
        if (R == 1) {
            d[s] = zs[0];
        } else {
            float m, sum;
            d[s] = yl::soft_argmax(zs, hw, R, bulk, m, sum);
        }
        if (g != nullptr) {
            for (int k = 0; k < R; ++k) g[(static_cast<int64_t>(s) * R + k) * hw] = 0.0f;
        }
    }
    float* out = P.dist + i * 4;
    out[0] = d[0];
    out[1] = d[1];
    out[2] = d[2];
    out[3] = d[3];
    if (!finite) atomicAdd(P.flags, 1u);
}
