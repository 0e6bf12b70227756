// Detection pass 2: task-aligned assignment (docs/spec.md §7) without any (labels × anchors) buffer, reproducing the CPU
// backend's crates/core/src/assigner.rs exactly (same candidates, same deterministic top-k, same conflict rule):
//
//  yl_det_assign  — one block per GT slot (b, g), of 32 to 1024 threads (more for larger boxes, see host.rs). Only the grid cells under the GT's box are visited (per level,
//                   the rectangle of crates/core AnchorGrid::for_each_near), so the work is bounded by the box area.
//                   For each anchor strictly inside: u = max(CIoU(gt, predicted pixel box), 0), t = √σ·u⁶.
//                   * per-anchor conflict target: 64-bit atomicMax of (u bits, ~g) when u > 0 (largest u, lowest g);
//                   * top-k by (t desc, anchor asc) among t > 0: per-thread sorted lists, merged per warp, then per
//                     block (k ≤ 32);
//                   * fewer than k positive metrics: the fill takes the (k − n) lowest anchor indices not picked;
//                     those inside the GT (with t = 0) are picks too (docs/spec.md §D2);
//                   * every pick: count[b, a] += 1, claim[b, a] = g for the first claimant.
//  yl_det_resolve — one thread per (b, a): count 0 → background; 1 → the claimant; > 1 → the GT of the largest
//                   overlap among all GTs containing the anchor (GT 0 if all are 0). Records (g, t, u) and folds
//                   T_g = max t and U_g = max u per GT (atomicMax on non-negative float bits: order-free).
//  yl_det_scores  — one thread per (b, a) (grid-stride): n = t·U_g/(T_g + 1e-9), the class of g; per-block partial
//                   sums of n in double; the last block to finish adds them in block order and writes
//                   S = max(Σ n, 1) and the gradient scales B·gain/S (fixed order: reproducible).
#include "detect.cuh"

namespace {

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

__device__ __forceinline__ void load_gt(const DetParams& P, int64_t slot, float gt[4]) {
    for (int j = 0; j < 4; ++j) gt[j] = P.gt_box[slot * 4 + j];
}

// pair_metric of GT slot g of image b and anchor a.
__device__ __forceinline__ void slot_metric(const DetParams& P, int b, int a, int g, float& u, float& t) {
    const int64_t slot = static_cast<int64_t>(b) * P.max_gt + g;
    float gt[4];
    load_gt(P, slot, gt);
    yl::pair_metric(P, b, a, gt, yl::aspect_atan(gt), P.gt_cls[slot], u, t);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(1024) yl_det_assign(const DetParams P) {
    const int slot = blockIdx.x;
    if (P.gt_valid[slot] == 0) return;  // the whole block: padding slot
    const int b = slot / P.max_gt;
    const int g = slot - b * P.max_gt;
    float gt[4];
    load_gt(P, slot, gt);
    const int cls = P.gt_cls[slot];
    const float gt_atan = yl::aspect_atan(gt);
    const int k = P.topk;
    unsigned long long* best = P.best + static_cast<int64_t>(b) * P.anchors;

    unsigned long long list[yl::kMaxTopk];
    int n = 0;
    for (int l = 0; l < P.levels; ++l) {
        const float s = P.stride[l];
        int x0, x1, y0, y1;
        cell_range(gt[0], gt[2], s, P.width[l], x0, x1);
        cell_range(gt[1], gt[3], s, P.height[l], y0, y1);
        if (x1 < x0 || y1 < y0) continue;
        const int nx = x1 - x0 + 1;
        const int64_t cells = static_cast<int64_t>(nx) * (y1 - y0 + 1);
        for (int64_t c = threadIdx.x; c < cells; c += blockDim.x) {
            const int x = x0 + static_cast<int>(c % nx);
            const int y = y0 + static_cast<int>(c / nx);
            const float px = (static_cast<float>(x) + 0.5f) * s;
            const float py = (static_cast<float>(y) + 0.5f) * s;
            if (!yl::centre_inside(px, py, gt)) continue;
            const int a = P.offset[l] + y * P.width[l] + x;
            float u, t;
            yl::pair_metric(P, b, a, gt, gt_atan, cls, u, t);
            if (u > 0.0f) atomicMax(best + a, rank_key(u, g));
            if (t > 0.0f) insert_topk(list, n, k, rank_key(t, a));
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
    for (int r = 0; r < k; ++r) {
        const unsigned long long head = ptr < n ? list[ptr] : 0ull;
        const unsigned long long m = warp_max(head);
        if (m != 0ull && head == m) ++ptr;
        if (lane == 0) warp_top[warp][r] = m;
    }
    __syncthreads();
    if (warp == 0) {
        int wp = 0;
        for (int r = 0; r < k; ++r) {
            const unsigned long long head = (lane < warps && wp < k) ? warp_top[lane][wp] : 0ull;
            const unsigned long long m = warp_max(head);
            if (m != 0ull && head == m) ++wp;
            if (lane == 0) top[r] = m;
        }
        if (lane == 0) {
            int c = 0;
            while (c < k && top[c] != 0ull) ++c;
            top_n = c;
            if (c < k) {
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
                int last = k - c - 1;
                for (int i = 0; i < c; ++i)
                    if (sorted[i] <= last) ++last;
                fill_last = last;
            }
        }
    }
    __syncthreads();
    const int picked = top_n;
    if (static_cast<int>(threadIdx.x) < picked) claim_anchor(P, b, key_index(top[threadIdx.x]), g);
    if (picked < k) {
        const int last = fill_last;
        for (int a = threadIdx.x; a <= last; a += blockDim.x) {
            const yl::AnchorAt at = yl::anchor_at(P, a);
            const float s = P.stride[at.level];
            const float px = (static_cast<float>(at.x) + 0.5f) * s;
            const float py = (static_cast<float>(at.y) + 0.5f) * s;
            if (!yl::centre_inside(px, py, gt)) continue;
            float u, t;
            yl::pair_metric(P, b, a, gt, gt_atan, cls, u, t);
            if (!(t > 0.0f)) claim_anchor(P, b, a, g);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) yl_det_resolve(const DetParams P) {
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
            slot_metric(P, b, a, g, u_again, t);
            u = __uint_as_float(static_cast<uint32_t>(key >> 32));
        }
    } else {
        g = static_cast<int>(P.claim[i]);
        slot_metric(P, b, a, g, u, t);
    }
    P.pos_gt[i] = g;
    P.pos_t[i] = t;
    P.pos_u[i] = u;
    const int64_t slot = static_cast<int64_t>(b) * P.max_gt + g;
    atomicMax(P.gt_t + slot, __float_as_uint(t));
    atomicMax(P.gt_u + slot, __float_as_uint(u));
}

extern "C" __global__ void __launch_bounds__(256) yl_det_scores(const DetParams P) {
    const int64_t total = static_cast<int64_t>(P.batch) * P.anchors;
    double acc = 0.0;
    for (int64_t i = yl::global_thread(); i < total; i += yl::grid_threads()) {
        const int g = P.pos_gt[i];
        if (g < 0) {
            P.pos_cls[i] = -1;
            continue;
        }
        const int64_t slot = (i / P.anchors) * P.max_gt + g;
        const float tmax = __uint_as_float(P.gt_t[slot]);
        const float umax = __uint_as_float(P.gt_u[slot]);
        const float n = P.pos_t[i] * umax / (tmax + 1e-9f);
        P.pos_score[i] = n;
        P.pos_cls[i] = P.gt_cls[slot];
        acc += static_cast<double>(n);
    }
    const double block_total = yl::block_sum(acc);
    __shared__ bool last_block;
    if (threadIdx.x == 0) {
        P.sums[blockIdx.x] = block_total;
        __threadfence();
        last_block = atomicAdd(P.flags + 1, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    const volatile double* partials = P.sums;
    double v = 0.0;
    for (int j = threadIdx.x; j < static_cast<int>(gridDim.x); j += blockDim.x) v += partials[j];
    const double sum = yl::block_sum(v);
    if (threadIdx.x == 0) {
        const float s_sum = static_cast<float>(sum);
        const float S = s_sum < 1.0f ? 1.0f : s_sum;
        const float bsz = static_cast<float>(P.batch);
        P.scalars[0] = S;
        P.scalars[1] = P.only_cls ? 0.0f : bsz * P.gain_box / S;
        P.scalars[2] = bsz * P.gain_cls / S;
        P.scalars[3] = P.only_cls ? 0.0f : bsz * P.gain_dfl / S;
    }
}
