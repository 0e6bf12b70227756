// The task-aligned assigner's two per-GT and per-anchor steps (docs/spec.md §7), shared by the axis-aligned
// assigner (det_assign.cu) and the rotated one (obb.cu): the rules of crates/core/src/assigner.rs, whatever the
// geometry. The geometry is a GT type `Gt`, built from the kernel's parameter block `k` and a GT slot:
//   bounds[4]         the pixel rectangle (x1, y1, x2, y2) whose grid cells may hold candidates;
//   inside(px, py)    whether an anchor centre is a candidate;
//   metric(b, a, u, t) overlap u = max(overlap(gt, predicted pixel box), 0) and align metric t = √σ·u⁶.
// `assign_slot` is yl_det_assign's body and `resolve_anchor` yl_det_resolve's (see det_assign.cu).
#pragma once

#include "detect.cuh"

namespace yl {

__device__ __forceinline__ unsigned long long rank_key(float v, int index) {
    return (static_cast<unsigned long long>(__float_as_uint(v)) << 32) | static_cast<uint32_t>(~index);
}
__device__ __forceinline__ int key_index(unsigned long long key) { return static_cast<int>(~static_cast<uint32_t>(key)); }

__device__ __forceinline__ unsigned long long warp_max(unsigned long long v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const unsigned long long o = __shfl_xor_sync(0xffffffffu, v, offset);
        v = o > v ? o : v;
    }
    return v;
}

// Inserts `key` into the descending list[0..n) holding at most k keys.
__device__ __forceinline__ void insert_topk(unsigned long long* list, int& n, int k, unsigned long long key) {
    int i;
    if (n < k) {
        i = n++;
    } else if (key > list[k - 1]) {
        i = k - 1;
    } else {
        return;
    }
    while (i > 0 && list[i - 1] < key) {
        list[i] = list[i - 1];
        --i;
    }
    list[i] = key;
}

// Cells [lo, hi] of one axis whose centre may lie in (v1, v2) at this stride (a superset, as for_each_near).
__device__ __forceinline__ void cell_range(float v1, float v2, float stride, int n, int& lo, int& hi) {
    const double s = stride;
    lo = static_cast<int>(fmin(fmax(floor(static_cast<double>(v1) / s - 0.5) - 1.0, 0.0), static_cast<double>(n)));
    hi = static_cast<int>(fmax(fmin(ceil(static_cast<double>(v2) / s - 0.5) + 1.0, static_cast<double>(n - 1)), -1.0));
}

__device__ __forceinline__ void claim_anchor(const DetParams& P, int b, int a, int g) {
    const int64_t i = static_cast<int64_t>(b) * P.anchors + a;
    if (atomicAdd(P.count + i, 1u) == 0u) P.claim[i] = static_cast<uint32_t>(g);
}

template <class Gt, class K>
__device__ __forceinline__ void assign_slot(const K& k, const DetParams& P) {
    const int slot = blockIdx.x;
    if (P.gt_valid[slot] == 0) return;  // the whole block: padding slot
    const int b = slot / P.max_gt;
    const int g = slot - b * P.max_gt;
    const Gt gt(k, slot);
    const int topk = P.topk;
    unsigned long long* best = P.best + static_cast<int64_t>(b) * P.anchors;

    unsigned long long list[yl::kMaxTopk];
    int n = 0;
    for (int l = 0; l < P.levels; ++l) {
        const float s = P.stride[l];
        int x0, x1, y0, y1;
        cell_range(gt.bounds[0], gt.bounds[2], s, P.width[l], x0, x1);
        cell_range(gt.bounds[1], gt.bounds[3], s, P.height[l], y0, y1);
        if (x1 < x0 || y1 < y0) continue;
        const int nx = x1 - x0 + 1;
        const int64_t cells = static_cast<int64_t>(nx) * (y1 - y0 + 1);
        for (int64_t c = threadIdx.x; c < cells; c += blockDim.x) {
            const int x = x0 + static_cast<int>(c % nx);
            const int y = y0 + static_cast<int>(c / nx);
            const float px = (static_cast<float>(x) + 0.5f) * s;
            const float py = (static_cast<float>(y) + 0.5f) * s;
            if (!gt.inside(px, py)) continue;
            const int a = P.offset[l] + y * P.width[l] + x;
            float u, t;
            gt.metric(b, a, u, t);
            if (u > 0.0f) atomicMax(best + a, rank_key(u, g));
            if (t > 0.0f) insert_topk(list, n, topk, rank_key(t, a));
        }
    }

    // Block-wide top-k of the per-thread lists: k rounds per warp, then k rounds over the warps' lists.
    __shared__ unsigned long long warp_top[32][yl::kMaxTopk];  // up to 1024 threads (host.rs picks 32 to 1024)
    __shared__ unsigned long long top[yl::kMaxTopk];
    __shared__ int top_n;
    __shared__ int fill_last;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    int ptr = 0;
    for (int r = 0; r < topk; ++r) {
        const unsigned long long head = ptr < n ? list[ptr] : 0ull;
        const unsigned long long m = warp_max(head);
        if (m != 0ull && head == m) ++ptr;
        if (lane == 0) warp_top[warp][r] = m;
    }
    __syncthreads();
    if (warp == 0) {
        int wp = 0;
        for (int r = 0; r < topk; ++r) {
            const unsigned long long head = (lane < warps && wp < topk) ? warp_top[lane][wp] : 0ull;
            const unsigned long long m = warp_max(head);
            if (m != 0ull && head == m) ++wp;
            if (lane == 0) top[r] = m;
        }
        if (lane == 0) {
            int c = 0;
            while (c < topk && top[c] != 0ull) ++c;
            top_n = c;
            if (c < topk) {
                // The (k − c)-th lowest anchor index that is not one of the c picks (which are all the GT's
                // positive-metric anchors here): walk the picks in ascending anchor order.
                int sorted[yl::kMaxTopk];
                for (int i = 0; i < c; ++i) {
                    int v = key_index(top[i]), j = i;
                    while (j > 0 && sorted[j - 1] > v) {
                        sorted[j] = sorted[j - 1];
                        --j;
                    }
                    sorted[j] = v;
                }
                int last = topk - c - 1;
                for (int i = 0; i < c; ++i)
                    if (sorted[i] <= last) ++last;
                fill_last = last;
            }
        }
    }
    __syncthreads();
    const int picked = top_n;
    if (static_cast<int>(threadIdx.x) < picked) claim_anchor(P, b, key_index(top[threadIdx.x]), g);
    if (picked < topk) {
        const int last = fill_last;
        for (int a = threadIdx.x; a <= last; a += blockDim.x) {
            const yl::AnchorAt at = yl::anchor_at(P, a);
            const float s = P.stride[at.level];
            const float px = (static_cast<float>(at.x) + 0.5f) * s;
            const float py = (static_cast<float>(at.y) + 0.5f) * s;
            if (!gt.inside(px, py)) continue;
            float u, t;
            gt.metric(b, a, u, t);
            if (!(t > 0.0f)) claim_anchor(P, b, a, g);
        }
    }
}

template <class Gt, class K>
__device__ __forceinline__ void resolve_anchor(const K& k, const DetParams& P) {
    const int64_t i = yl::global_thread();
    if (i >= static_cast<int64_t>(P.batch) * P.anchors) return;
    const uint32_t cnt = P.count[i];
    if (cnt == 0u) {
        P.pos_gt[i] = -1;
        return;
    }
    const int b = static_cast<int>(i / P.anchors);
    const int a = static_cast<int>(i - static_cast<int64_t>(b) * P.anchors);
    int g;
    float u, t;
    if (cnt > 1u) {
        const unsigned long long key = P.best[i];
        if (key == 0ull) {
            g = 0;
            u = 0.0f;
            t = 0.0f;
        } else {
            g = key_index(key);
            float u_again;
            Gt(k, static_cast<int64_t>(b) * P.max_gt + g).metric(b, a, u_again, t);
            u = __uint_as_float(static_cast<uint32_t>(key >> 32));
        }
    } else {
        g = static_cast<int>(P.claim[i]);
        Gt(k, static_cast<int64_t>(b) * P.max_gt + g).metric(b, a, u, t);
    }
    P.pos_gt[i] = g;
    P.pos_t[i] = t;
    P.pos_u[i] = u;
    const int64_t slot = static_cast<int64_t>(b) * P.max_gt + g;
    atomicMax(P.gt_t + slot, __float_as_uint(t));
    atomicMax(P.gt_u + slot, __float_as_uint(u));
}

}  // namespace yl
