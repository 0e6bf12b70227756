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
#include "assign.cuh"

namespace {

// The axis-aligned geometry of the detection assigner: strict centre-in-box, CIoU overlaps.
struct AxisGt {
    const DetParams* p;
    float bounds[4];  // the GT's pixel xyxy box
    float atan;
    int cls;
    __device__ __forceinline__ AxisGt(const DetParams& P, int64_t slot) : p(&P), cls(P.gt_cls[slot]) {
        for (int j = 0; j < 4; ++j) bounds[j] = P.gt_box[slot * 4 + j];
        atan = yl::aspect_atan(bounds);
    }
    __device__ __forceinline__ bool inside(float px, float py) const { return yl::centre_inside(px, py, bounds); }
    __device__ __forceinline__ void metric(int b, int a, float& u, float& t) const {
        yl::pair_metric(*p, b, a, bounds, atan, cls, u, t);
    }
};

}  // namespace

extern "C" __global__ void __launch_bounds__(1024) yl_det_assign(const DetParams P) {
    yl::assign_slot<AxisGt>(P, P);
}

extern "C" __global__ void __launch_bounds__(256) yl_det_resolve(const DetParams P) {
    yl::resolve_anchor<AxisGt>(P, P);
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
