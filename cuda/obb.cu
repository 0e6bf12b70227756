// v8OBBLoss (docs/spec.md §13) after the detection decode: the rotated assignment and the rotated box terms,
// reproducing crates/core/src/obb (assign.rs, loss.rs, geometry.rs) and crates/core/src/probiou.rs in their
// operation order (--fmad=false):
//
//  yl_obb_assign  — the task-aligned assignment of assign.cuh per GT slot with the rotated geometry: candidates are
//                   the anchors of the corner-bounds rectangle whose centre passes the inclusive rotated test, the
//                   overlap is probIoU(gt, predicted pixel box (decoded grid box × stride, θ unchanged)).
//  yl_obb_resolve — assign.cuh's conflict resolution with the same geometry.
//  (then the detection passes: yl_det_scores, yl_det_class)
//  yl_obb_box     — one thread per (b, a): the positives' (1 − probIoU)·w and DFL·w (DFL on the axis-aligned
//                   target, θ ignored) with their gradient into the box channels and θ; θ's gradient is 0
//                   elsewhere. The partial sums go where yl_det_box puts them (stages.loss reads them there).
#include "assign.cuh"
#include "obb.cuh"

namespace {

constexpr float kProbiouEps = 1e-7f;

// dist2rbox (geometry.rs): distances (l, t, r, b) in the rotated frame, θ and the anchor → (cx, cy, w, h).
__device__ __forceinline__ void dist2rbox(const float d[4], float theta, float ax, float ay, float out[4]) {
    const float c = cosf(theta), s = sinf(theta);
    const float xf = (d[2] - d[0]) / 2.0f, yf = (d[3] - d[1]) / 2.0f;
    out[0] = xf * c - yf * s + ax;
    out[1] = xf * s + yf * c + ay;
    out[2] = d[0] + d[2];
    out[3] = d[1] + d[3];
}

// Gradient of Σ up·dist2rbox with respect to the distances and θ (geometry.rs dist2rbox_grad).
__device__ __forceinline__ float dist2rbox_grad(const float d[4], float theta, const float up[4], float gd[4]) {
    const float c = cosf(theta), s = sinf(theta);
    const float xf = (d[2] - d[0]) / 2.0f, yf = (d[3] - d[1]) / 2.0f;
    const float g_xf = up[0] * c + up[1] * s;
    const float g_yf = up[1] * c - up[0] * s;
    const float g_theta = up[0] * (-xf * s - yf * c) + up[1] * (xf * c - yf * s);
    gd[0] = up[2] - g_xf / 2.0f;
    gd[1] = up[3] - g_yf / 2.0f;
    gd[2] = up[2] + g_xf / 2.0f;
    gd[3] = up[3] + g_yf / 2.0f;
    return g_theta;
}

// Inclusive rotated centre-in-box (geometry.rs center_in_rotated_box over xywhr_corners P1, P2, P4).
__device__ __forceinline__ bool centre_in_rotated(float px, float py, const float b[5]) {
    const float c = cosf(b[4]), s = sinf(b[4]);
    const float v1x = b[2] / 2.0f * c, v1y = b[2] / 2.0f * s;
    const float v2x = -b[3] / 2.0f * s, v2y = b[3] / 2.0f * c;
    // Corners (ctr ± v1) ± v2 evaluated left to right: P1 = (+, +), P2 = (+, −), P4 = (−, +).
    const float p1x = b[0] + 1.0f * v1x + 1.0f * v2x, p1y = b[1] + 1.0f * v1y + 1.0f * v2y;
    const float p2x = b[0] + 1.0f * v1x + -1.0f * v2x, p2y = b[1] + 1.0f * v1y + -1.0f * v2y;
    const float p4x = b[0] + -1.0f * v1x + 1.0f * v2x, p4y = b[1] + -1.0f * v1y + 1.0f * v2y;
    const float abx = p2x - p1x, aby = p2y - p1y;
    const float adx = p4x - p1x, ady = p4y - p1y;
    const float apx = px - p1x, apy = py - p1y;
    const float n_ab = abx * abx + aby * aby;
    const float n_ad = adx * adx + ady * ady;
    const float q_ab = apx * abx + apy * aby;
    const float q_ad = apx * adx + apy * ady;
    return q_ab >= 0.0f && q_ab <= n_ab && q_ad >= 0.0f && q_ad <= n_ad;
}

// One box as probIoU's Gaussian (probiou.rs Cov and Gauss).
struct Gauss {
    float x, y, a, b, c, s, c2, s2, sa, sb, sc, det;
};

__device__ __forceinline__ Gauss gauss(const float o[5]) {
    Gauss g;
    g.x = o[0];
    g.y = o[1];
    g.a = o[2] * o[2] / 12.0f;
    g.b = o[3] * o[3] / 12.0f;
    g.c = cosf(o[4]);
    g.s = sinf(o[4]);
    g.c2 = g.c * g.c;
    g.s2 = g.s * g.s;
    g.sa = g.a * g.c2 + g.b * g.s2;
    g.sb = g.a * g.s2 + g.b * g.c2;
    g.sc = (g.a - g.b) * g.c * g.s;
    g.det = g.sa * g.sb - g.sc * g.sc;
    return g;
}

// Every intermediate of probiou.rs forward_gauss.
struct ProbFwd {
    float dx, dy, sa, sb, sc, num1, num2, den, n, d1c, d2c, sqrt_p, dd, q, bd_raw, bd, hd, value;
};

__device__ __forceinline__ ProbFwd probiou_forward(const Gauss& g1, const Gauss& g2) {
    const float eps = kProbiouEps;
    ProbFwd f;
    f.dx = g1.x - g2.x;
    f.dy = g1.y - g2.y;
    f.sa = g1.sa + g2.sa;
    f.sb = g1.sb + g2.sb;
    f.sc = g1.sc + g2.sc;
    f.num1 = f.sa * (f.dy * f.dy) + f.sb * (f.dx * f.dx);
    f.n = f.sa * f.sb - f.sc * f.sc;
    f.den = f.n + eps;
    const float t1 = f.num1 / f.den * 0.25f;
    f.num2 = f.sc * (g2.x - g1.x) * (g1.y - g2.y);
    const float t2 = f.num2 / f.den * 0.5f;
    f.d1c = fmaxf(g1.det, 0.0f);
    f.d2c = fmaxf(g2.det, 0.0f);
    f.sqrt_p = sqrtf(f.d1c * f.d2c);
    f.dd = 4.0f * f.sqrt_p + eps;
    f.q = f.n / f.dd + eps;
    const float t3 = logf(f.q) * 0.5f;
    f.bd_raw = t1 + t2 + t3;
    f.bd = isnan(f.bd_raw) ? f.bd_raw : fminf(fmaxf(f.bd_raw, eps), 100.0f);
    f.hd = sqrtf(1.0f - expf(-f.bd) + eps);
    f.value = 1.0f - f.hd;
    return f;
}

// up · ∂probIoU/∂obb1 of box 1's covariance (probiou.rs covariance_backward), into (w, h, θ).
__device__ __forceinline__ void covariance_backward(const Gauss& c, float w, float h, float g_sa, float g_sb,
                                                    float g_sc, float out[3]) {
    const float g_a = g_sa * c.c2 + g_sb * c.s2 + g_sc * c.c * c.s;
    const float g_b = g_sa * c.s2 + g_sb * c.c2 - g_sc * c.c * c.s;
    const float g_cos2 = g_sa * c.a + g_sb * c.b;
    const float g_sin2 = g_sa * c.b + g_sb * c.a;
    const float amb = c.a - c.b;
    const float g_cos = 2.0f * c.c * g_cos2 + g_sc * amb * c.s;
    const float g_sin = 2.0f * c.s * g_sin2 + g_sc * amb * c.c;
    out[0] = g_a * 2.0f * w / 12.0f;
    out[1] = g_b * 2.0f * h / 12.0f;
    out[2] = c.c * g_sin - c.s * g_cos;
}

// up · ∂probIoU(obb1, obb2)/∂obb1 (probiou.rs backward, box 1's half).
__device__ __forceinline__ void probiou_backward_box1(const ProbFwd& f, const Gauss& c1, const float o1[5], float up,
                                                      float g1[5]) {
    const float eps = kProbiouEps;
    for (int j = 0; j < 5; ++j) g1[j] = 0.0f;
    const float g_hd = -up;
    const float g_bd = g_hd * 0.5f / f.hd * expf(-f.bd);
    const float g = (f.bd_raw > eps && f.bd_raw < 100.0f) ? g_bd : 0.0f;
    if (g == 0.0f) return;
    const float g_num1 = g * 0.25f / f.den;
    const float g_num2 = g * 0.5f / f.den;
    float g_n = -(g * 0.25f) * f.num1 / (f.den * f.den) - (g * 0.5f) * f.num2 / (f.den * f.den);
    const float g_q = g * 0.5f / f.q;
    g_n += g_q / f.dd;
    const float g_dd = -g_q * f.n / (f.dd * f.dd);
    const float g_sqrt_p = 4.0f * g_dd;
    float g_d1c = 0.0f;
    if (f.sqrt_p > 0.0f) {
        const float g_p = g_sqrt_p * 0.5f / f.sqrt_p;
        g_d1c = g_p * f.d2c;
    }
    const float g_d1 = c1.det > 0.0f ? g_d1c : 0.0f;
    const float g_sa = g_n * f.sb + g_num1 * f.dy * f.dy;
    const float g_sb = g_n * f.sa + g_num1 * f.dx * f.dx;
    const float g_sc = -2.0f * f.sc * g_n - g_num2 * f.dx * f.dy;
    g1[0] = g_num1 * f.sb * 2.0f * f.dx - g_num2 * f.sc * f.dy;
    g1[1] = g_num1 * f.sa * 2.0f * f.dy - g_num2 * f.sc * f.dx;
    float r[3];
    covariance_backward(c1, o1[2], o1[3], g_sa + g_d1 * c1.sb, g_sb + g_d1 * c1.sa, g_sc - 2.0f * c1.sc * g_d1, r);
    g1[2] = r[0];
    g1[3] = r[1];
    g1[4] = r[2];
}

// The rotated geometry of the OBB assigner (assign.rs RotatedPreds), for assign.cuh.
struct RotatedGt {
    const ObbParams* k;
    float bounds[4];  // corner bounds of the box (DetParams gt_box)
    float box[5];
    Gauss g;
    int cls;
    __device__ __forceinline__ RotatedGt(const ObbParams& K, int64_t slot) : k(&K), cls(K.det.gt_cls[slot]) {
        for (int j = 0; j < 4; ++j) bounds[j] = K.det.gt_box[slot * 4 + j];
        for (int j = 0; j < 5; ++j) box[j] = K.gt_rbox[slot * 5 + j];
        g = gauss(box);
    }
    __device__ __forceinline__ bool inside(float px, float py) const { return centre_in_rotated(px, py, box); }
    __device__ __forceinline__ void metric(int b, int a, float& u, float& t) const {
        const DetParams& P = k->det;
        const yl::AnchorAt at = yl::anchor_at(P, a);
        const float s = P.stride[at.level];
        const float ax = static_cast<float>(at.x) + 0.5f, ay = static_cast<float>(at.y) + 0.5f;
        const int64_t i = static_cast<int64_t>(b) * P.anchors + a;
        const float theta = k->angle[i];
        float rb[4];
        dist2rbox(P.dist + i * 4, theta, ax, ay, rb);
        const float pred[5] = {rb[0] * s, rb[1] * s, rb[2] * s, rb[3] * s, theta};
        u = fmaxf(probiou_forward(g, gauss(pred)).value, 0.0f);
        t = yl::align_metric(P, b, at, cls, u);
    }
};

}  // namespace

extern "C" __global__ void __launch_bounds__(1024) yl_obb_assign(const ObbParams K) {
    yl::assign_slot<RotatedGt>(K, K.det);
}

extern "C" __global__ void __launch_bounds__(256) yl_obb_resolve(const ObbParams K) {
    yl::resolve_anchor<RotatedGt>(K, K.det);
}

// Launched with the detection box pass's grid (four threads per anchor there): here one thread per (b, a), so the
// blocks past B·A / 256 only write zero partial sums, which keeps the sums' layout the detection stages read.
extern "C" __global__ void __launch_bounds__(256) yl_obb_box(const ObbParams K) {
    const DetParams& P = K.det;
    const int64_t i = yl::global_thread();
    double iou_part = 0.0, dfl_part = 0.0;
    const int gi = i < static_cast<int64_t>(P.batch) * P.anchors ? P.pos_gt[i] : -2;
    if (gi == -1 && K.angle_grad != nullptr) K.angle_grad[i] = 0.0f;
    if (gi >= 0) {
        const yl::ImageAnchor ia = yl::image_anchor(P, i);
        const int R = P.reg_max;
        float dist[4], m[4], sum[4];
        for (int s = 0; s < 4; ++s) {
            const yl::SideLogits<0> z(ia.feat + static_cast<int64_t>(s) * R * ia.hw, ia.hw);
            m[s] = 0.0f;
            sum[s] = 1.0f;
            dist[s] = R == 1 ? z(0) : yl::soft_argmax<0>(z, R, false, m[s], sum[s]);
        }
        const float w = P.pos_score[i];
        const float stride = P.stride[ia.at.level];
        const float ax = static_cast<float>(ia.at.x) + 0.5f, ay = static_cast<float>(ia.at.y) + 0.5f;
        const int64_t slot = static_cast<int64_t>(ia.b) * P.max_gt + gi;
        const float* tb = K.gt_rbox + slot * 5;
        const float target[5] = {tb[0] / stride, tb[1] / stride, tb[2] / stride, tb[3] / stride, tb[4]};
        const float theta = K.angle[i];
        float rb[4];
        dist2rbox(dist, theta, ax, ay, rb);
        const float pred[5] = {rb[0], rb[1], rb[2], rb[3], theta};
        const Gauss gp = gauss(pred);
        const ProbFwd f = probiou_forward(gp, gauss(target));
        float g5[5];
        probiou_backward_box1(f, gp, pred, -P.scalars[1] * w, g5);
        iou_part = static_cast<double>((1.0f - f.value) * w);
        float g_dist[4];
        const float g_theta = dist2rbox_grad(dist, theta, g5, g_dist);
        if (K.angle_grad != nullptr) K.angle_grad[i] = 0.0f + (g_theta + g5[4]);
        float* gr = ia.grad;
        if (R == 1) {
            if (gr != nullptr)
                for (int s = 0; s < 4; ++s) gr[s * ia.hw] = g_dist[s];
        } else {
            // DFL on the axis-aligned target: bbox2dist(anchor, xywh2xyxy(target), R − 1), bound R − 1.01.
            const float hw = target[2] / 2.0f, hh = target[3] / 2.0f;
            const float xyxy[4] = {target[0] - hw, target[1] - hh, target[0] + hw, target[1] + hh};
            const float hi = static_cast<float>(static_cast<double>(R - 1) - 0.01);
            const float ltrb[4] = {ax - xyxy[0], ay - xyxy[1], xyxy[2] - ax, xyxy[3] - ay};
            float dfl = 0.0f;
            for (int s = 0; s < 4; ++s) {
                const yl::SideLogits<0> z(ia.feat + static_cast<int64_t>(s) * R * ia.hw, ia.hw);
                const float y_raw = fminf(fmaxf(ltrb[s], 0.0f), hi);
                float* gs = gr == nullptr ? nullptr : gr + static_cast<int64_t>(s) * R * ia.hw;
                dfl += yl::dfl_side(z, R, y_raw, hi, m[s], sum[s], dist[s], P.scalars[3] * w / 4.0f, g_dist[s], gs,
                                    ia.hw);
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
