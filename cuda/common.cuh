// Device helpers shared by the yolo-loss kernels (cuda/*.cu). Header only: each .cu file is its own CUDA module.
//
// Numerics follow docs/spec.md §6.1 in the same stable forms as the CPU backend (crates/core), so that the two backends
// differ only by the last bits of expf/log1pf. build.rs compiles with --fmad=false for the same reason: no
// contraction of a*b+c that the CPU code does not do either.
#pragma once

#include <cstdint>

namespace yl {

// Grid-stride loop bounds in 64-bit: B·C·H·W of a level can pass 2^31 for large batches.
__device__ __forceinline__ int64_t global_thread() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Sum of v (float or double) over the block; the result is valid in thread 0 only. Every thread of the block must
// call it (it synchronises, also before returning, so that calls may follow one another). The order of additions
// is fixed by the block shape, so the result is reproducible.
template <class T>
__device__ __forceinline__ T block_sum(T v) {
    __shared__ T warp_sums[32];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x + 31) >> 5;
        v = lane < warps ? warp_sums[lane] : T(0);
        for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    __syncthreads();  // warp_sums may be reused by a following call
    return v;
}

}  // namespace yl
