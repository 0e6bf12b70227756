// v8ClassificationLoss (docs/spec.md §12): cross entropy of each image's logits against its class, and the gradient
// (softmax − onehot)/B. The host adds the per-image terms in image order in double, as the CPU backend does
// (crates/core/src/classification.rs), whose operations this kernel repeats in the same order: with the same expf
// and logf (the emulator's glibc) the two agree to the bit; the GPU's expf/logf differ from glibc's by ≤ 2 ulp.
#include "cls.cuh"
#include "common.cuh"

// One thread per image: a row is read three times (max, sum, gradient), from cache after the first.
extern "C" __global__ void __launch_bounds__(256) yl_cls_xent(const ClsParams P) {
    const int64_t i = yl::global_thread();
    if (i >= P.batch) return;
    const float* z = P.logits + i * P.nc;
    float m = z[0];  // nc ≥ 1 and finite logits (host checks): the CPU's fold from −∞
    for (int k = 1; k < P.nc; ++k) m = fmaxf(m, z[k]);
    float sum = 0.0f;
    for (int k = 0; k < P.nc; ++k) sum += expf(z[k] - m);
    const int j = P.target[i];
    P.row_loss[i] = m + logf(sum) - z[j];
    if (P.grad == nullptr) return;
    const float inv_b = 1.0f / static_cast<float>(P.batch);
    float* g = P.grad + i * P.nc;
    for (int k = 0; k < P.nc; ++k) g[k] = expf(z[k] - m) / sum * inv_b;
    g[j] -= inv_b;
}
