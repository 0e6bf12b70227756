// A functional CPU emulator for the kernels of `cuda/*.cu` (tests only): included before every `cuda/*.cu` file
// when build.rs compiles it with the host C++ compiler, it maps the CUDA built-ins the kernels use onto the runtime
// of emu.cpp, which runs a launch block by block, every thread of a block as a fiber (ucontext) scheduled round
// robin on one OS thread. __syncthreads and the warp shuffles are real barriers between the fibers, atomics are
// plain read-modify-writes (a fiber is never interrupted between two barriers), "device memory" is host memory.
//
// It checks the kernels' logic (indexing, the assigner's top-k/fill/conflict rules, block reductions, the
// last-block pattern) on machines without a GPU; it says nothing about timing, coalescing or hardware races.
// Compiled with -ffp-contract=off (like nvcc --fmad=false) and glibc's libm, so its float results follow the CPU
// backend (crates/core) even more closely than the GPU does.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <algorithm>

using std::isfinite;
using std::isnan;
// CUDA's integer min/max.
using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
// Shared memory: one instance for the whole program is right because blocks run one after another. volatile,
// because the compiler could otherwise keep a never-escaping static in a register across a barrier (a call it may
// prove cannot touch it), hiding one fiber's writes from the others.
#define __shared__ static volatile

struct dim3 {
    unsigned x, y, z;
};
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

// Read-only cached load: a plain load here.
template <class T>
inline T __ldg(const T* p) {
    return *p;
}

void __syncthreads();
// Exchanges 64-bit words within the calling thread's warp: returns what lane `src` passed.
uint64_t yl_emu_exchange(uint64_t mine, int src);
void __threadfence();

template <class T>
inline uint64_t yl_emu_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 64 bits");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T yl_emu_from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, int delta) {
    const int lane = static_cast<int>(threadIdx.x & 31u);
    const int src = lane + delta > 31 ? lane : lane + delta;
    return yl_emu_from_bits<T>(yl_emu_exchange(yl_emu_bits(v), src));
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    const int lane = static_cast<int>(threadIdx.x & 31u);
    return yl_emu_from_bits<T>(yl_emu_exchange(yl_emu_bits(v), (lane ^ mask) & 31));
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
    return yl_emu_from_bits<T>(yl_emu_exchange(yl_emu_bits(v), src & 31));
}

template <class T>
inline T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
    const T old = *p;
    if (v > old) *p = v;
    return old;
}

inline float __uint_as_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// The emulator's kernel table. build.rs compiles each `cuda/<module>.cu` inside a generated file that lists the
// module's `extern "C"` kernels with `yl_emu::kernel<&name>("name")` (their names read from the source; the
// compiler checks that each exists) and a table of every module's list (emu_modules.cpp), which yl_emu_launch
// searches. A kernel takes exactly one parameter struct by value, as on the GPU (crates/cuda/src/launch.rs).
namespace yl_emu {

struct Kernel {
    const char* name;
    void (*run)(const void* params);
    size_t params_size;
};

template <class F>
struct OneParam {
    static_assert(sizeof(F) == 0, "an emulated kernel takes exactly one parameter struct, by value");
};
template <class P>
struct OneParam<void (*)(P)> {
    using type = P;
};

template <auto K>
void run_kernel(const void* params) {
    K(*static_cast<const typename OneParam<decltype(K)>::type*>(params));
}

template <auto K>
constexpr Kernel kernel(const char* name) {
    return {name, &run_kernel<K>, sizeof(typename OneParam<decltype(K)>::type)};
}

// One module's kernels: a pointer to the array and, in `count`, its length.
using Module = const Kernel* (*)(size_t* count);
extern const Module kModules[];
extern const size_t kModuleCount;

}  // namespace yl_emu
