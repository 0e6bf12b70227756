// Detection pass 3: the loss terms and their gradient (SPEC §9 steps 7–10), after the assignment and S are known.
//
//  yl_det_class — one thread per (image b, anchor a): every class logit x of the loss's class window, in one pass:
//                 Σ BCE(x, t) = Σ BCE(x, 0) − t·x and grad = σ(x)·scale − t·scale (t = the soft score n at the
//                 anchor's assigned class, 0 elsewhere; scale = B·g_cls/S), with the CPU backend's polynomial
//                 exp/log1p. Channels outside the box channels and the class window (TVP text prompts) are checked
//                 for finiteness and get a zero gradient. One partial sum per block (double).
//  yl_det_box   — one thread per (b, a), positives only: the CIoU term (1 − CIoU(pred, target))·w and the DFL term
//                 with their gradient into the 4R box channels (which yl_det_decode zeroed), as crates/core
//                 detection.rs box_terms: target = GT box / stride, w = the soft score, α held constant.
//                 Partial sums per block: Σ (1 − CIoU)·w and Σ DFL·w.
#include "detect.cuh"

extern "C" __global__ void __launch_bounds__(256) yl_det_class(const DetParams P) {
    const int64_t total = static_cast<int64_t>(P.batch) * P.anchors;
    const int64_t i = yl::global_thread();
    double part = 0.0;
    if (i < total) {
        const yl::ImageAnchor ia = yl::image_anchor(P, i);
        const int64_t hw = ia.hw;
        const float* x = ia.feat;
        float* g = ia.grad;
        const int pc = P.pos_cls[i];
        const float n = pc >= 0 ? P.pos_score[i] : 0.0f;
        const float scale = P.scalars[2];
        const int c0 = P.cls_ch0;
        float acc = 0.0f;
        double corr = 0.0;
        bool finite = true;
#pragma unroll 4
        for (int c = 0; c < P.nc; ++c) {
            const int64_t off = static_cast<int64_t>(c0 + c) * hw;
            const float xv = x[off];
            finite = finite && isfinite(xv);
            float l, sg;
            yl::bce_sigmoid(xv, l, sg);
            acc += l;
            float gv = sg * scale;
            if (c == pc) {
                corr -= static_cast<double>(xv * n);
                gv = gv - n * scale;
            }
            if (g != nullptr) g[off] = gv;
        }
        // Channels that are neither box nor loss classes (the text prompts of TVPDetectLoss).
        for (int ch = 4 * P.reg_max; ch < P.channels; ++ch) {
            if (ch == c0) {
                ch = c0 + P.nc - 1;
                continue;
            }
            const int64_t off = static_cast<int64_t>(ch) * hw;
            finite = finite && isfinite(x[off]);
            if (g != nullptr) g[off] = 0.0f;
        }
        if (!finite) atomicAdd(P.flags, 1u);
        part = static_cast<double>(acc) + corr;
    }
    const double block_total = yl::block_sum(part);
    if (threadIdx.x == 0) P.sums[P.score_blocks + blockIdx.x] = block_total;
}

extern "C" __global__ void __launch_bounds__(256) yl_det_box(const DetParams P) {
    const int64_t total = static_cast<int64_t>(P.batch) * P.anchors;
    const int64_t i = yl::global_thread();
    double iou_part = 0.0, dfl_part = 0.0;
    const int gi = i < total ? P.pos_gt[i] : -1;
    if (gi >= 0) {
        const yl::ImageAnchor ia = yl::image_anchor(P, i);
        const int b = ia.b;
        const yl::AnchorAt at = ia.at;
        const int64_t hw = ia.hw;
        const float* z = ia.feat;
        float* gr = P.only_cls ? nullptr : ia.grad;
        const int R = P.reg_max;
        const float w = P.pos_score[i];
        const float stride = P.stride[at.level];
        const float ax = static_cast<float>(at.x) + 0.5f, ay = static_cast<float>(at.y) + 0.5f;

        float d[4], m[4], sum[4];
        for (int s = 0; s < 4; ++s) {
            const float* zs = z + static_cast<int64_t>(s) * R * hw;
            if (R == 1) {
                d[s] = zs[0];
            } else {
                d[s] = yl::soft_argmax(zs, hw, R, false, m[s], sum[s]);
            }
        }
        const float pred[4] = {ax - d[0], ay - d[1], ax + d[2], ay + d[3]};
        const int64_t slot = static_cast<int64_t>(b) * P.max_gt + gi;
        const float target[4] = {P.gt_box[slot * 4] / stride, P.gt_box[slot * 4 + 1] / stride,
                                 P.gt_box[slot * 4 + 2] / stride, P.gt_box[slot * 4 + 3] / stride};
        const yl::Ciou f = yl::ciou_forward(pred, target, yl::aspect_atan(pred), yl::aspect_atan(target));
        float gb[4];
        yl::ciou_backward_box1(f, pred, target, -P.scalars[1] * w, gb);
        iou_part = static_cast<double>((1.0f - f.value) * w);
        const float g_dist[4] = {-gb[0], -gb[1], gb[2], gb[3]};
        if (R == 1) {
            if (gr != nullptr)
                for (int s = 0; s < 4; ++s) gr[static_cast<int64_t>(s) * hw] = g_dist[s];
        } else {
            // bbox2dist with the bound R − 1.01 (both clamps of the reference use the same bound).
            const float hi = static_cast<float>(static_cast<double>(R - 1) - 0.01);
            const float ltrb[4] = {fminf(fmaxf(ax - target[0], 0.0f), hi), fminf(fmaxf(ay - target[1], 0.0f), hi),
                                   fminf(fmaxf(target[2] - ax, 0.0f), hi), fminf(fmaxf(target[3] - ay, 0.0f), hi)};
            const float up = P.scalars[3] * w / 4.0f;
            float dfl = 0.0f;
            for (int s = 0; s < 4; ++s) {
                const float* zs = z + static_cast<int64_t>(s) * R * hw;
                const float y = fminf(fmaxf(ltrb[s], 0.0f), hi);
                int left = static_cast<int>(floorf(y));
                if (left > R - 2) left = R - 2;
                const float w_left = static_cast<float>(left + 1) - y;
                const float w_right = 1.0f - w_left;
                // CE against the two bins: log Σ exp(z) with the accurate exp/log, as dfl.rs logsumexp.
                float mm = zs[0];
                for (int k = 1; k < R; ++k) mm = fmaxf(mm, zs[k * hw]);
                float se = 0.0f;
                for (int k = 0; k < R; ++k) se += expf(zs[k * hw] - mm);
                const float lse = mm + logf(se);
                dfl += (lse - zs[left * hw]) * w_left + (lse - zs[(left + 1) * hw]) * w_right;
                if (gr != nullptr) {
                    const float wsum = w_left + w_right;
                    float* gs = gr + static_cast<int64_t>(s) * R * hw;
                    for (int k = 0; k < R; ++k) {
                        const float p = yl::exp_neg(zs[k * hw] - m[s]) / sum[s];
                        float v = up * wsum * p;
                        if (k == left) v -= up * w_left;
                        if (k == left + 1) v -= up * w_right;
                        v += g_dist[s] * p * (static_cast<float>(k) - d[s]);
                        gs[k * hw] = v;
                    }
                }
            }
            dfl_part = static_cast<double>(dfl / 4.0f * w);
        }
    }
    const double iou_total = yl::block_sum(iou_part);
    const double dfl_total = yl::block_sum(dfl_part);
    if (threadIdx.x == 0) {
        const int64_t o = static_cast<int64_t>(P.score_blocks) + P.class_blocks;
        P.sums[o + blockIdx.x] = iou_total;
        P.sums[o + P.box_blocks + blockIdx.x] = dfl_total;
    }
}
