// The parameter block of the segmentation kernels (seg_mask.cu), identical in layout to `SegParams` in
// crates/cuda/src/segmentation/params.rs, and the per-positive geometry both mask kernels share. The detection
// kernels run first (detect.cuh); these read their positives (`pos_gt`, per (image, anchor): GT slot or −1).
#pragma once

#include "detect.cuh"

struct SegParams {
    int32_t batch, anchors, max_gt, nm;      // B, A, M (GT slots per image), mask coefficients per anchor
    int32_t mh, mw, gt_h, gt_w;              // prototype size Hm×Wm; GT mask size H×W
    int32_t overlap, only_cls, pad0, pad1;   // overlap_mask: index maps [B, H, W], else 0/1 maps [N, H, W]
    float gain_box, img_h, img_w, pad2;      // box gain; image size in pixels (the head's)
    const float* gt_box;                     // [B·M·4] pixel xyxy (the detection GT table)
    const int32_t* pos_gt;                   // [B·A] the detection assignment: GT slot, −1: background
    const float* pred_masks;                 // [B, nm, A]
    const float* proto;                      // [B, nm, Hm, Wm]
    const float* masks;                      // GT masks, [B or N, H, W]
    const int32_t* src_row;                  // [Hm] nearest source row of each prototype row
    const int32_t* src_col;                  // [Wm] nearest source column of each prototype column
    const int32_t* slot_mask;                // [B·M] non-overlap: the mask row of each GT slot
    int32_t* pos_anchor;                     // [B·A] the positives' anchors, image by image, by anchor
    int32_t* pos_start;                      // [B + 1] where each image's positives start in pos_anchor
    float* scalars;                          // [4]: [0] the gradient scale of the mask sum, B·g_box / P
    int32_t* crops;                          // [B·A·4] per positive (pos_anchor order): r0, r1, c0, c1
    float* ups;                              // [B·A] per positive: its gradient factor (MaskCrop::up)
    double* values;                          // [B·A] per positive (pos_anchor order): its mask term
    float* grad_coef;                        // zeroed, [B, nm, A], null: loss only
    float* grad_proto;                       // [B, nm, Hm, Wm], null: loss only
};

namespace yl {

// One positive's crop on the prototype grid and its gradient factor (segmentation.rs `image_mask_term`, same
// operations): rows [r0, r1), columns [c0, c1), the normalised box area, and up = scale / (Hm·Wm·area).
struct MaskCrop {
    int r0, r1, c0, c1, gt;
    float area, up;
};

// Integer indices i in [0, n) with lo ≤ i < hi (segmentation.rs `crop_range`).
__device__ __forceinline__ void crop_range(float lo, float hi, int n, int& first, int& end) {
    first = 0;
    while (first < n && !(static_cast<float>(first) >= lo)) ++first;
    end = first;
    while (end < n && !(static_cast<float>(end) >= hi)) ++end;
}

__device__ __forceinline__ MaskCrop mask_crop(const SegParams& P, int b, int a) {
    MaskCrop k;
    k.gt = P.pos_gt[static_cast<int64_t>(b) * P.anchors + a];
    const float* tb = P.gt_box + (static_cast<int64_t>(b) * P.max_gt + k.gt) * 4;
    const float x0 = tb[0] / P.img_w, y0 = tb[1] / P.img_h, x1 = tb[2] / P.img_w, y1 = tb[3] / P.img_h;
    k.area = (x1 - x0) * (y1 - y0);
    const float mwf = static_cast<float>(P.mw), mhf = static_cast<float>(P.mh);
    crop_range(x0 * mwf, x1 * mwf, P.mw, k.c0, k.c1);
    crop_range(y0 * mhf, y1 * mhf, P.mh, k.r0, k.r1);
    const float map_area = static_cast<float>(P.mh * P.mw);
    k.up = P.scalars[0] / (map_area * k.area);
    return k;
}

// The GT mask of (image b, GT slot g) at prototype pixel (r, c): nearest-resized, 0/1 (segmentation.rs `GtMasks`).
__device__ __forceinline__ float gt_mask(const SegParams& P, int b, int g, int r, int c) {
    const int64_t sr = P.src_row[r], sc = P.src_col[c];
    if (P.overlap) {
        const float v = P.masks[(static_cast<int64_t>(b) * P.gt_h + sr) * P.gt_w + sc];
        return v == static_cast<float>(g + 1) ? 1.0f : 0.0f;
    }
    const int64_t m = P.slot_mask[static_cast<int64_t>(b) * P.max_gt + g];
    return P.masks[(m * P.gt_h + sr) * P.gt_w + sc];
}

// The mask logit Σ_j coef_j·proto_j at pixel (r, c) of image b, j in order from 0 (the CPU's order). `coef(j)`.
template <class C>
__device__ __forceinline__ float mask_logit(const SegParams& P, int b, int r, int c, const C& coef) {
    const int64_t plane = static_cast<int64_t>(P.mh) * P.mw;
    const float* px = P.proto + static_cast<int64_t>(b) * P.nm * plane + static_cast<int64_t>(r) * P.mw + c;
    float m = 0.0f;
    for (int j = 0; j < P.nm; ++j) m += coef(j) * px[j * plane];
    return m;
}

}  // namespace yl
