// v8PoseLoss's own pass (docs/spec.md §11) after the detection stages: for every positive anchor, the OKS keypoint
// loss against its GT's keypoints and the keypoint-visibility BCE, with their gradient w.r.t. `kpts`. The same
// operations in the same order as crates/core/src/pose.rs (`KptCtx::image_terms`): the decoded keypoint and the
// target in f32, everything from the distance on in double (the reference's COCO sigmas are float64).
#include "pose.cuh"

namespace {

// The keypoint terms of thread i = (image b, anchor a): a positive adds its OKS and BCE terms to `pose` and `kobj`
// and writes its K·D gradient elements; any other anchor writes zeros there.
__device__ __forceinline__ void keypoint_terms(const PoseParams& P, int64_t i, double& pose, double& kobj) {
    const DetParams& D = P.det;
    const int b = static_cast<int>(i / D.anchors);
    const int a = static_cast<int>(i - static_cast<int64_t>(b) * D.anchors);
    const int K = P.k, Dk = P.d, kd = K * Dk;
    const int64_t A = D.anchors;
    const int64_t base = static_cast<int64_t>(b) * kd * A + a;  // channel c at [c·A]
    const float* kp = P.kpts + base;
    float* gr = P.kpts_grad == nullptr ? nullptr : P.kpts_grad + base;
    const int gi = D.pos_gt[i];
    if (gi < 0) {
        if (gr != nullptr)
            for (int c = 0; c < kd; ++c) gr[c * A] = 0.0f;
        return;
    }
    // ∂J/∂(Σ OKS terms), ∂J/∂(Σ BCE terms): B·gain / (P·K), P ≥ 1 here.
    const double pk = static_cast<double>(static_cast<uint64_t>(*P.positives) * static_cast<uint64_t>(K));
    const double bsz = static_cast<double>(D.batch);
    const double scale_pose = bsz * P.gain_pose / pk, scale_kobj = bsz * P.gain_kobj / pk;

    const yl::AnchorAt at = yl::anchor_at(D, a);
    const float stride = D.stride[at.level];
    const float ax = static_cast<float>(at.x) + 0.5f, ay = static_cast<float>(at.y) + 0.5f;
    const int64_t slot = static_cast<int64_t>(b) * D.max_gt + gi;
    const float* tb = D.gt_box + slot * 4;
    const float tg[4] = {tb[0] / stride, tb[1] / stride, tb[2] / stride, tb[3] / stride};
    const double area = static_cast<double>((tg[2] - tg[0]) * (tg[3] - tg[1]));
    const float* g = P.gt_kpts + slot * kd;
    int nvis = 0;
    for (int kk = 0; kk < K; ++kk) nvis += (Dk < 3 || g[kk * Dk + 2] != 0.0f) ? 1 : 0;
    const double factor = static_cast<double>(static_cast<float>(K) / (static_cast<float>(nvis) + 1e-9f));
    for (int kk = 0; kk < K; ++kk) {
        const double v = (Dk < 3 || g[kk * Dk + 2] != 0.0f) ? 1.0 : 0.0;
        // Decode: 2·p + (anchor − 0.5), grid units.
        const double x = static_cast<double>(kp[(kk * Dk) * A] * 2.0f + (ax - 0.5f));
        const double y = static_cast<double>(kp[(kk * Dk + 1) * A] * 2.0f + (ay - 0.5f));
        const double gx = static_cast<double>(g[kk * Dk] * P.img_w / stride);
        const double gy = static_cast<double>(g[kk * Dk + 1] * P.img_h / stride);
        const double dx = x - gx, dy = y - gy;
        const double dist = dx * dx + dy * dy;
        const double two_sigma = 2.0 * P.sigmas[kk];
        const double den = two_sigma * two_sigma * (area + 1e-9) * 2.0;
        const double ex = exp(-(dist / den));
        pose += factor * (1.0 - ex) * v;
        if (gr != nullptr) {
            // ∂/∂raw = 2·∂/∂X; ∂e/∂X = 2(X − gx)/den. `0 + ` as the CPU adds into a zeroed buffer (−0 → +0).
            const double c = scale_pose * factor * v * ex * 2.0 / den * 2.0;
            gr[(kk * Dk) * A] = 0.0f + static_cast<float>(c * dx);
            gr[(kk * Dk + 1) * A] = 0.0f + static_cast<float>(c * dy);
        }
        if (Dk == 3) {
            const double z = static_cast<double>(kp[(kk * Dk + 2) * A]);
            kobj += fmax(z, 0.0) - z * v + log1p(exp(-fabs(z)));
            if (gr != nullptr) {
                const double sig = 1.0 / (1.0 + exp(-z));
                gr[(kk * Dk + 2) * A] = 0.0f + static_cast<float>(scale_kobj * (sig - v));
            }
        }
    }
}

}  // namespace

// One thread per (image, anchor): the number of positives, which the keypoint pass's gradient scale needs.
extern "C" __global__ void __launch_bounds__(256) yl_pose_count(const PoseParams P) {
    const int64_t i = yl::global_thread();
    const uint32_t positive = i < static_cast<int64_t>(P.det.batch) * P.det.anchors && P.det.pos_gt[i] >= 0;
    const uint32_t in_block = yl::block_sum(positive);
    if (threadIdx.x == 0 && in_block > 0) atomicAdd(P.positives, in_block);
}

// One thread per (image, anchor): the keypoint terms of the positives, summed per block; the whole kpts gradient.
extern "C" __global__ void __launch_bounds__(256) yl_pose_kpt(const PoseParams P) {
    const int64_t i = yl::global_thread();
    double pose = 0.0, kobj = 0.0;
    if (i < static_cast<int64_t>(P.det.batch) * P.det.anchors) keypoint_terms(P, i, pose, kobj);
    const double pose_total = yl::block_sum(pose);
    const double kobj_total = yl::block_sum(kobj);
    if (threadIdx.x == 0) {
        P.sums[blockIdx.x] = pose_total;
        P.sums[P.blocks + blockIdx.x] = kobj_total;
    }
}
