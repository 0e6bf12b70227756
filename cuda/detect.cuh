// Shared pieces of the detection kernels (det_decode.cu, det_assign.cu, det_loss.cu): the one parameter block
// every detection kernel takes, anchor lookup, and device ports of the CPU backend's arithmetic (crates/core) in
// the same operation order, so that with --fmad=false both backends round alike wherever the math library is not
// involved:
//   * exp_neg / log1p_unit / bce_sigmoid: crates/core/src/fastmath.rs (Cephes-style polynomials, no libm);
//   * the soft-argmax in its two forms: the per-anchor one of dfl.rs `softmax_expectation` and the vectorised one
//     of fastmath.rs `softmax_expect_cells` (the CPU assigner uses the latter for images whose GTs cover much of
//     the image, see `img_bulk`);
//   * CIoU value and gradient: crates/core/src/iou.rs (xyxy, eps 1e-7, α constant, min/max ties split half/half,
//     the intersection clamp passing gradient only where its input is > 0).
// expf/logf/atanf remain the CUDA library's (≤ 2 ulp from glibc's); the CPU backend uses glibc's.
//
// Frames: `dist` and boxes in grid units of the anchor's level; the assigner works in pixels (grid × stride).
#pragma once

#include "common.cuh"

namespace yl {

constexpr int kMaxLevels = 8;
// Classes per thread of yl_det_class (run.rs sizes its grid and partial sums with the same number).
constexpr int kClassChunk = 16;
// Largest tal_topk the assigner kernel supports (per-thread candidate lists live in registers/local memory).
constexpr int kMaxTopk = 32;

}  // namespace yl

// Everything a detection kernel reads: one struct, passed by value (kernel parameter space), identical in layout to
// `DetParams` in crates/cuda/src/detection/params.rs. Pointers that a launch does not use may be null.
struct DetParams {
    // Head: per level the [B, C, H, W] prediction tensor and its gradient (null: loss only).
    const float* feat[yl::kMaxLevels];
    float* grad[yl::kMaxLevels];
    int32_t height[yl::kMaxLevels];
    int32_t width[yl::kMaxLevels];
    int32_t offset[yl::kMaxLevels];  // first anchor of the level
    float stride[yl::kMaxLevels];
    int32_t levels, batch, channels, reg_max;
    int32_t cls_ch0, nc, anchors, max_gt;  // class window [cls_ch0, cls_ch0 + nc); A; M (GT slots per image)
    int32_t topk, only_cls, score_blocks, class_blocks;
    int32_t box_blocks, pad0;
    float gain_box, gain_cls, gain_dfl, pad1;
    // GT table, [B·M] slots (pixel xyxy boxes; class index; validity = box sum > 0), and per image the CPU
    // backend's choice of soft-argmax form for the assigner (1: vectorised form).
    const float* gt_box;
    const int32_t* gt_cls;
    const int32_t* gt_valid;
    const int32_t* img_bulk;
    // Work buffers, [B·A] unless said otherwise.
    float* dist;                  // [B·A·4] decoded (l, t, r, b), grid units
    unsigned long long* best;     // zeroed: max over GTs containing the anchor of (u bits, ~g)
    uint32_t* count;              // zeroed: how many GTs' top-k picked the anchor
    uint32_t* claim;              // the picking GT where count == 1
    int32_t* pos_gt;              // resolved GT slot, −1: background
    float* pos_t;                 // align metric t of (pos_gt, anchor)
    float* pos_u;                 // overlap u of (pos_gt, anchor)
    int32_t* pos_cls;             // class of pos_gt, −1: background
    float* pos_score;             // soft target score n
    uint32_t* gt_t;               // zeroed, [B·M]: max t over the GT's positives (float bits)
    uint32_t* gt_u;               // zeroed, [B·M]: max u over the GT's positives (float bits)
    float* scalars;               // [4]: S, then the gradient scales of the iou, cls and dfl sums
    double* sums;                 // per-block partial sums: score | class BCE | box (1 − CIoU)·w | DFL·w
    uint32_t* flags;              // zeroed, [4]: [0] non-finite predictions seen, [1] blocks done (score pass)
};

namespace yl {

// Level of anchor a (levels are numbered in anchor order; every level is non-empty).
__device__ __forceinline__ int level_of(const DetParams& P, int a) {
    int l = P.levels - 1;
    while (l > 0 && a < P.offset[l]) --l;
    return l;
}

// e^t for t ≤ 0, as crates/core/src/fastmath.rs `exp_neg` (same constants, same order of operations).
__device__ __forceinline__ float exp_neg(float t) {
    t = fmaxf(t, -87.0f);
    const float magic = 12582912.0f;
    const float n = (t * 1.44269504088896340736f + magic) - magic;
    const float r = t - n * 0.6933594f - n * (-2.1219444e-4f);
    float p = 1.9875691e-4f;
    p = p * r + 1.3981999e-3f;
    p = p * r + 8.333452e-3f;
    p = p * r + 4.1665796e-2f;
    p = p * r + 1.6666665e-1f;
    p = p * r + 0.5f;
    const float er = p * r * r + r + 1.0f;
    const float scale = __uint_as_float(static_cast<uint32_t>(static_cast<int>(n) + 127) << 23);
    return er * scale;
}

// ln(1 + e) for e in [0, 1], as fastmath.rs `log1p_unit`: e·P(e), P of degree 9 (a Chebyshev fit of ln(1 + e)/e),
// Horner's scheme in the same order. No division.
__device__ __forceinline__ float log1p_unit(float e) {
    float p = -0.0032140363f;
    p = p * e + 0.019649167f;
    p = p * e - 0.05643503f;
    p = p * e + 0.105332285f;
    p = p * e - 0.15251452f;
    p = p * e + 0.19651492f;
    p = p * e - 0.24947809f;
    p = p * e + 0.333291f;
    p = p * e - 0.4999985f;
    p = p * e + 1.0f;
    return e * p;
}

// (BCE(x, 0), σ(x)) as fastmath.rs `bce_sigmoid`.
__device__ __forceinline__ void bce_sigmoid(float x, float& loss, float& sig) {
    const float e = exp_neg(-fabsf(x));
    const float inv = 1.0f / (1.0f + e);
    loss = fmaxf(x, 0.0f) + log1p_unit(e);
    sig = x >= 0.0f ? inv : e * inv;
}

// The R logits of one side of an anchor, feat[(s·R + k)·hw] for k < R. RC > 0 is R known at compile time: the
// constructor loads all of them into registers before any arithmetic or store, so that they are in flight at once
// (a kernel that stores gradients may alias the predictions as far as the compiler knows: a load after a store
// waits for it). RC = 0: R = reg_max, read in place. A null `side_logits` reads nothing (a thread with no work).
template <int RC>
struct SideLogits {
    float v[RC > 0 ? RC : 1];
    const float* zs;
    int64_t hw;
    __device__ __forceinline__ SideLogits(const float* side_logits, int64_t hw_) : zs(side_logits), hw(hw_) {
        if constexpr (RC > 0) {
#pragma unroll
            for (int k = 0; k < RC; ++k) v[k] = zs != nullptr ? __ldg(zs + k * hw) : 0.0f;
        }
    }
    __device__ __forceinline__ float operator()(int k) const {
        if constexpr (RC > 0) {
            return v[k];
        } else {
            return zs[k * hw];
        }
    }
};

// Soft-argmax Σ k·softmax(z)_k of one side; z(k) returns logit k of the R logits. `bulk`: the vectorised CPU form
// (Σ k·e_k / Σ e_k), else the per-anchor form (Σ (e_k / Σ e)·k). RC > 0 is R known at compile time: the loops
// unroll over registers and each e_k = exp(z_k − max) is computed once; RC = 0 takes R = reg_max and computes e_k
// where needed. Outputs the maximum and Σ e_k too (the DFL gradient needs them).
template <int RC, class Z>
__device__ __forceinline__ float soft_argmax(const Z& z, int reg_max, bool bulk, float& m_out, float& sum_out) {
    const int R = RC > 0 ? RC : reg_max;
    float m = z(0);
#pragma unroll
    for (int k = 1; k < R; ++k) m = fmaxf(m, z(k));
    float e[RC > 0 ? RC : 1];
    if constexpr (RC > 0) {
#pragma unroll
        for (int k = 0; k < RC; ++k) e[k] = exp_neg(z(k) - m);
    }
    const auto ek = [&](int k) -> float {
        if constexpr (RC > 0) {
            return e[k];
        } else {
            return exp_neg(z(k) - m);
        }
    };
    float sum = 0.0f, d = 0.0f;
    if (bulk) {
        float wsum = 0.0f;
#pragma unroll
        for (int k = 0; k < R; ++k) {
            const float ev = ek(k);
            sum += ev;
            wsum += ev * static_cast<float>(k);
        }
        d = wsum / sum;
    } else {
#pragma unroll
        for (int k = 0; k < R; ++k) sum += ek(k);
#pragma unroll
        for (int k = 0; k < R; ++k) d += ek(k) / sum * static_cast<float>(k);
    }
    m_out = m;
    sum_out = sum;
    return d;
}

constexpr float kIouEps = 1e-7f;

// atan(w/h) of an xyxy box with eps on the height (iou.rs `aspect_atan`).
__device__ __forceinline__ float aspect_atan(const float b[4]) {
    return atanf((b[2] - b[0]) / (b[3] - b[1] + kIouEps));
}

__device__ __forceinline__ float four_over_pi2() { return static_cast<float>(4.0 / (3.14159265358979323846 * 3.14159265358979323846)); }

// Every intermediate of CIoU(box1, box2) that the gradient needs (iou.rs `iou_forward`, xyxy, CIoU).
struct Ciou {
    float w1, h1, w2, h2, iw_raw, ih_raw, iw, ih, inter, uni, cw, ch, c2, rho2, datan, alpha, value;
};

__device__ __forceinline__ Ciou ciou_forward(const float b1[4], const float b2[4], float atan1, float atan2) {
    const float eps = kIouEps;
    Ciou f;
    f.w1 = b1[2] - b1[0];
    f.h1 = b1[3] - b1[1] + eps;
    f.w2 = b2[2] - b2[0];
    f.h2 = b2[3] - b2[1] + eps;
    f.iw_raw = fminf(b1[2], b2[2]) - fmaxf(b1[0], b2[0]);
    f.ih_raw = fminf(b1[3], b2[3]) - fmaxf(b1[1], b2[1]);
    f.iw = fmaxf(f.iw_raw, 0.0f);
    f.ih = fmaxf(f.ih_raw, 0.0f);
    f.inter = f.iw * f.ih;
    f.uni = f.w1 * f.h1 + f.w2 * f.h2 - f.inter + eps;
    const float iou = f.inter / f.uni;
    f.cw = fmaxf(b1[2], b2[2]) - fminf(b1[0], b2[0]);
    f.ch = fmaxf(b1[3], b2[3]) - fminf(b1[1], b2[1]);
    f.c2 = f.cw * f.cw + f.ch * f.ch + eps;
    const float dx = b2[0] + b2[2] - b1[0] - b1[2];
    const float dy = b2[1] + b2[3] - b1[1] - b1[3];
    f.rho2 = (dx * dx + dy * dy) / 4.0f;
    f.datan = atan2 - atan1;
    const float v = four_over_pi2() * f.datan * f.datan;
    f.alpha = v / (v - iou + (1.0f + eps));
    f.value = iou - (f.rho2 / f.c2 + v * f.alpha);
    return f;
}

// Gradient split of min(a, b) / max(a, b): all to the selected argument, half/half on a tie.
__device__ __forceinline__ void min_split(float a, float b, float g, float& ga, float& gb) {
    if (a < b) { ga = g; gb = 0.0f; }
    else if (b < a) { ga = 0.0f; gb = g; }
    else { ga = g * 0.5f; gb = ga; }
}
__device__ __forceinline__ void max_split(float a, float b, float g, float& ga, float& gb) {
    if (a > b) { ga = g; gb = 0.0f; }
    else if (b > a) { ga = 0.0f; gb = g; }
    else { ga = g * 0.5f; gb = ga; }
}

// up · ∂CIoU/∂box1 (iou.rs `iou_backward`, CIoU, xyxy); the gradient of box2 is computed alongside as the CPU
// does (the min/max splits touch both) but only box1's is returned.
__device__ __forceinline__ void ciou_backward_box1(const Ciou& f, const float b1[4], const float b2[4], float up,
                                                   float g1[4]) {
    float g2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    g1[0] = g1[1] = g1[2] = g1[3] = 0.0f;
    float gw1 = 0.0f, gh1 = 0.0f, gw2 = 0.0f, gh2 = 0.0f;
    float ga, gb;
    const float g_iou = up;
    float g_union = 0.0f;
    // value = iou − rho2/c2 − v·α
    const float g_rho2 = -up / f.c2;
    const float g_c2 = up * f.rho2 / (f.c2 * f.c2);
    const float g_cw = g_c2 * 2.0f * f.cw;
    const float g_ch = g_c2 * 2.0f * f.ch;
    // enclosing box: cw = max(x2¹, x2²) − min(x1¹, x1²), ch likewise
    max_split(b1[2], b2[2], g_cw, ga, gb); g1[2] += ga; g2[2] += gb;
    min_split(b1[0], b2[0], g_cw, ga, gb); g1[0] -= ga; g2[0] -= gb;
    max_split(b1[3], b2[3], g_ch, ga, gb); g1[3] += ga; g2[3] += gb;
    min_split(b1[1], b2[1], g_ch, ga, gb); g1[1] -= ga; g2[1] -= gb;
    const float dx = b2[0] + b2[2] - b1[0] - b1[2];
    const float dy = b2[1] + b2[3] - b1[1] - b1[3];
    const float gdx = g_rho2 * dx / 2.0f;
    const float gdy = g_rho2 * dy / 2.0f;
    g2[0] += gdx; g2[2] += gdx; g1[0] -= gdx; g1[2] -= gdx;
    g2[1] += gdy; g2[3] += gdy; g1[1] -= gdy; g1[3] -= gdy;
    // v = k·datan², α constant
    const float g_v = -up * f.alpha;
    const float g_datan = g_v * four_over_pi2() * 2.0f * f.datan;
    const float d2 = f.w2 * f.w2 + f.h2 * f.h2;
    const float d1 = f.w1 * f.w1 + f.h1 * f.h1;
    gw2 += g_datan * f.h2 / d2;
    gh2 -= g_datan * f.w2 / d2;
    gw1 -= g_datan * f.h1 / d1;
    gh1 += g_datan * f.w1 / d1;
    // iou = inter / union
    float g_inter = g_iou / f.uni;
    g_union -= g_iou * f.inter / (f.uni * f.uni);
    // union = w1·h1 + w2·h2 − inter + eps
    gw1 += g_union * f.h1;
    gh1 += g_union * f.w1;
    gw2 += g_union * f.h2;
    gh2 += g_union * f.w2;
    g_inter -= g_union;
    const float g_iw = f.iw_raw > 0.0f ? g_inter * f.ih : 0.0f;
    const float g_ih = f.ih_raw > 0.0f ? g_inter * f.iw : 0.0f;
    min_split(b1[2], b2[2], g_iw, ga, gb); g1[2] += ga; g2[2] += gb;
    max_split(b1[0], b2[0], g_iw, ga, gb); g1[0] -= ga; g2[0] -= gb;
    min_split(b1[3], b2[3], g_ih, ga, gb); g1[3] += ga; g2[3] += gb;
    max_split(b1[1], b2[1], g_ih, ga, gb); g1[1] -= ga; g2[1] -= gb;
    // w = x2 − x1, h = y2 − y1 + eps
    g1[2] += gw1; g1[0] -= gw1; g1[3] += gh1; g1[1] -= gh1;
    (void)gw2; (void)gh2;
}

// Strict centre-in-box test of the assigner: min(px − x1, py − y1, x2 − px, y2 − py) > 1e-9 (geometry.rs).
__device__ __forceinline__ bool centre_inside(float px, float py, const float b[4]) {
    const float m = fminf(fminf(fminf(px - b[0], py - b[1]), b[2] - px), b[3] - py);
    return m > 1e-9f;
}

// The anchor's pixel centre and its level/cell. The grid point (x + ½, y + ½) times the stride, as the CPU does.
struct AnchorAt {
    int level, x, y, cell;
};
__device__ __forceinline__ AnchorAt anchor_at(const DetParams& P, int a) {
    AnchorAt r;
    r.level = level_of(P, a);
    r.cell = a - P.offset[r.level];
    r.x = r.cell % P.width[r.level];
    r.y = r.cell / P.width[r.level];
    return r;
}

// Thread i of a launch over the (image b, anchor a) pairs, i = b·A + a: the anchor's level and cell, H·W of its
// level, and where its channels start in the level's prediction tensor and gradient (channel c at [c·hw]).
struct ImageAnchor {
    int b, a;
    AnchorAt at;
    int64_t hw;
    const float* feat;
    float* grad;  // null when the launch computes no gradient
};
__device__ __forceinline__ ImageAnchor image_anchor(const DetParams& P, int64_t i) {
    ImageAnchor r;
    r.b = static_cast<int>(i / P.anchors);
    r.a = static_cast<int>(i - static_cast<int64_t>(r.b) * P.anchors);
    r.at = anchor_at(P, r.a);
    r.hw = static_cast<int64_t>(P.height[r.at.level]) * P.width[r.at.level];
    const int64_t base = static_cast<int64_t>(r.b) * P.channels * r.hw + r.at.cell;
    r.feat = P.feat[r.at.level] + base;
    r.grad = P.grad[r.at.level] == nullptr ? nullptr : P.grad[r.at.level] + base;
    return r;
}

// The align metric t = √σ(logit of class cls at the anchor) · u⁶ of overlap u.
__device__ __forceinline__ float align_metric(const DetParams& P, int b, const AnchorAt& at, int cls, float u) {
    const int64_t hw = static_cast<int64_t>(P.height[at.level]) * P.width[at.level];
    const float x = P.feat[at.level][(static_cast<int64_t>(b) * P.channels + P.cls_ch0 + cls) * hw + at.cell];
    const float sigma = 1.0f / (1.0f + expf(-x));
    const float u2 = u * u;
    return sqrtf(sigma) * (u2 * u2 * u2);
}

// The assigner's view of (GT g of image b, anchor a): overlap u = max(CIoU(gt, predicted pixel box), 0) and
// align metric t = √σ(logit of the GT class) · u⁶. `gt_atan` is aspect_atan(gt).
__device__ __forceinline__ void pair_metric(const DetParams& P, int b, int a, const float gt[4], float gt_atan, int cls,
                                            float& u, float& t) {
    const AnchorAt at = anchor_at(P, a);
    const float s = P.stride[at.level];
    const float ax = static_cast<float>(at.x) + 0.5f, ay = static_cast<float>(at.y) + 0.5f;
    const float* d = P.dist + (static_cast<int64_t>(b) * P.anchors + a) * 4;
    const float pred[4] = {(ax - d[0]) * s, (ay - d[1]) * s, (ax + d[2]) * s, (ay + d[3]) * s};
    const Ciou f = ciou_forward(gt, pred, gt_atan, aspect_atan(pred));
    u = fmaxf(f.value, 0.0f);
    t = align_metric(P, b, at, cls, u);
}

// The DFL term of one side (returned) and, when `gs` is given, the gradient of its R logits: the two-bin cross
// entropy against the target distance y, and the soft-argmax's share g_dist·∂d/∂z (d = this side's distance).
// The exponentials are computed again rather than kept from soft_argmax: kept, 16 more live registers per thread
// cost more occupancy than the recomputation costs time (measured on an H200).
template <class Z>
__device__ __forceinline__ float dfl_side(const Z& z, int R, float y_raw, float hi, float m, float sum, float d,
                                          float up, float g_dist, float* gs, int64_t hw) {
    const float y = fminf(fmaxf(y_raw, 0.0f), hi);
    int left = static_cast<int>(floorf(y));
    if (left > R - 2) left = R - 2;
    const float w_left = static_cast<float>(left + 1) - y;
    const float w_right = 1.0f - w_left;
    // log Σ exp(z) with the accurate exp/log, as dfl.rs logsumexp (m is the maximum of the same logits).
    float se = 0.0f;
#pragma unroll
    for (int k = 0; k < R; ++k) se += expf(z(k) - m);
    const float lse = m + logf(se);
    float z_left = 0.0f, z_right = 0.0f;
#pragma unroll
    for (int k = 0; k < R; ++k) {
        if (k == left) z_left = z(k);
        if (k == left + 1) z_right = z(k);
    }
    if (gs != nullptr) {
        const float wsum = w_left + w_right;
#pragma unroll
        for (int k = 0; k < R; ++k) {
            const float p = exp_neg(z(k) - m) / sum;
            float g = up * wsum * p;
            if (k == left) g -= up * w_left;
            if (k == left + 1) g -= up * w_right;
            g += g_dist * p * (static_cast<float>(k) - d);
            gs[k * hw] = g;
        }
    }
    return (lse - z_left) * w_left + (lse - z_right) * w_right;
}

}  // namespace yl
