// Runtime of the kernel emulator (see emu.hpp) and its C entry points, called from the Rust tests.
#include "emu.hpp"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <ucontext.h>

#include "detect.cuh"

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
    bool done = false;
};

Fiber g_fiber[kMaxThreads];
ucontext_t g_sched;
int g_threads = 0, g_current = 0, g_live = 0;
// Block barrier and per-warp barriers: arrivals and a generation that advances when everyone alive arrived.
int g_bar_count = 0;
unsigned g_bar_gen = 0;
int g_warp_count[32], g_warp_live[32];
unsigned g_warp_gen[32];
uint64_t g_xbuf[32][32];
unsigned long long g_progress = 0;
void (*g_kernel)(const void*) = nullptr;
const void* g_params = nullptr;

void yield_to_scheduler() { swapcontext(&g_fiber[g_current].ctx, &g_sched); }

void release_if_complete() {
    if (g_bar_count > 0 && g_bar_count == g_live) {
        g_bar_count = 0;
        ++g_bar_gen;
    }
    for (int w = 0; w < 32; ++w) {
        if (g_warp_count[w] > 0 && g_warp_count[w] == g_warp_live[w]) {
            g_warp_count[w] = 0;
            ++g_warp_gen[w];
        }
    }
}

void warp_barrier() {
    const int w = static_cast<int>(threadIdx.x >> 5);
    const unsigned gen = g_warp_gen[w];
    ++g_progress;
    if (++g_warp_count[w] == g_warp_live[w]) {
        g_warp_count[w] = 0;
        ++g_warp_gen[w];
        return;
    }
    while (g_warp_gen[w] == gen) yield_to_scheduler();
}

void trampoline() {
    g_kernel(g_params);
    Fiber& f = g_fiber[g_current];
    f.done = true;
    --g_live;
    --g_warp_live[threadIdx.x >> 5];
    ++g_progress;
    release_if_complete();
    swapcontext(&f.ctx, &g_sched);
}

// Runs every block of the launch; returns false (with a message) on a deadlock (a barrier some threads never reach).
bool run_grid(unsigned gx, unsigned gy, unsigned bx, char* err, size_t errlen) {
    if (bx == 0 || bx > kMaxThreads) {
        std::snprintf(err, errlen, "block size %u not supported by the emulator", bx);
        return false;
    }
    for (unsigned t = 0; t < bx; ++t)
        if (g_fiber[t].stack == nullptr) g_fiber[t].stack = static_cast<char*>(std::malloc(kStackBytes));
    gridDim = {gx, gy, 1};
    blockDim = {bx, 1, 1};
    g_threads = static_cast<int>(bx);
    for (unsigned by = 0; by < gy; ++by) {
        for (unsigned bxi = 0; bxi < gx; ++bxi) {
            blockIdx = {bxi, by, 0};
            for (int t = 0; t < g_threads; ++t) {
                Fiber& f = g_fiber[t];
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = f.stack;
                f.ctx.uc_stack.ss_size = kStackBytes;
                f.ctx.uc_link = nullptr;
                makecontext(&f.ctx, trampoline, 0);
                f.done = false;
            }
            g_live = g_threads;
            g_bar_count = 0;
            for (int w = 0; w < 32; ++w) {
                g_warp_count[w] = 0;
                g_warp_live[w] = 0;
            }
            for (int t = 0; t < g_threads; ++t) ++g_warp_live[t >> 5];
            while (g_live > 0) {
                const unsigned long long before = g_progress;
                for (int t = 0; t < g_threads; ++t) {
                    if (g_fiber[t].done) continue;
                    g_current = t;
                    threadIdx = {static_cast<unsigned>(t), 0, 0};
                    swapcontext(&g_sched, &g_fiber[t].ctx);
                }
                if (g_live > 0 && g_progress == before) {
                    std::snprintf(err, errlen, "deadlock in block (%u, %u): %d threads wait at a barrier others never reach",
                                  bxi, by, g_live);
                    return false;
                }
            }
        }
    }
    return true;
}

template <void (*K)(DetParams)>
void det_entry(const void* p) {
    K(*static_cast<const DetParams*>(p));
}

}  // namespace

void __syncthreads() {
    const unsigned gen = g_bar_gen;
    ++g_progress;
    if (++g_bar_count == g_live) {
        g_bar_count = 0;
        ++g_bar_gen;
        return;
    }
    while (g_bar_gen == gen) yield_to_scheduler();
}

uint64_t yl_emu_exchange(uint64_t mine, int src) {
    const int w = static_cast<int>(threadIdx.x >> 5);
    g_xbuf[w][threadIdx.x & 31] = mine;
    warp_barrier();
    const uint64_t r = g_xbuf[w][src];
    warp_barrier();
    return r;
}

void __threadfence() {}

extern "C" void yl_det_decode(DetParams);
extern "C" void yl_det_assign(DetParams);
extern "C" void yl_det_resolve(DetParams);
extern "C" void yl_det_scores(DetParams);
extern "C" void yl_det_class(DetParams);
extern "C" void yl_det_box(DetParams);

struct Entry {
    const char* name;
    void (*fn)(const void*);
};
static const Entry kKernels[] = {
    {"yl_det_decode", det_entry<yl_det_decode>}, {"yl_det_assign", det_entry<yl_det_assign>},
    {"yl_det_resolve", det_entry<yl_det_resolve>}, {"yl_det_scores", det_entry<yl_det_scores>},
    {"yl_det_class", det_entry<yl_det_class>},   {"yl_det_box", det_entry<yl_det_box>},
};

// Runs kernel `name` on a (gx, gy) grid of `block`-thread blocks with `params` (a DetParams). 0 on success; else
// a message in `err`. Not thread-safe: the Rust side serialises calls.
extern "C" int yl_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned block, const void* params, char* err,
                             size_t errlen) {
    for (const Entry& e : kKernels) {
        if (std::strcmp(e.name, name) == 0) {
            g_kernel = e.fn;
            g_params = params;
            return run_grid(gx, gy, block, err, errlen) ? 0 : 1;
        }
    }
    std::snprintf(err, errlen, "kernel %s is not in the emulator", name);
    return 1;
}

// Layout of DetParams as this compiler sees it, for the Rust side to compare with its #[repr(C)] copy.
extern "C" size_t yl_emu_det_params_layout(size_t* offsets, size_t n) {
    const size_t o[] = {offsetof(DetParams, grad),    offsetof(DetParams, height),   offsetof(DetParams, stride),
                        offsetof(DetParams, levels),  offsetof(DetParams, box_blocks), offsetof(DetParams, gain_box),
                        offsetof(DetParams, gt_box),  offsetof(DetParams, dist),     offsetof(DetParams, flags)};
    for (size_t i = 0; i < n && i < sizeof(o) / sizeof(o[0]); ++i) offsets[i] = o[i];
    return sizeof(DetParams);
}

// The kernels' per-logit class arithmetic (detect.cuh), for the test that holds it bit-equal to the CPU backend's
// (crates/core fastmath.rs): the two are ports of each other and must not drift apart.
extern "C" void yl_emu_bce_sigmoid(float x, float* loss, float* sig) { yl::bce_sigmoid(x, *loss, *sig); }
