// Runtime of the kernel emulator (see emu.hpp) and its C entry points, called from the Rust tests
// (crates/cuda/src/launch/emu.rs). It knows no kernel or parameter struct: build.rs generates the kernel table.
#include "emu.hpp"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>

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

namespace {

const yl_emu::Kernel* find_kernel(const char* name) {
    for (size_t m = 0; m < yl_emu::kModuleCount; ++m) {
        size_t n = 0;
        const yl_emu::Kernel* kernels = yl_emu::kModules[m](&n);
        for (size_t k = 0; k < n; ++k)
            if (std::strcmp(kernels[k].name, name) == 0) return &kernels[k];
    }
    return nullptr;
}

}  // namespace

// Runs kernel `name` on a (gx, gy) grid of `block`-thread blocks with `params`, a struct of `params_size` bytes
// (the kernel's parameter struct). 0 on success; else a message in `err`. Not thread-safe: the Rust side
// serialises calls.
extern "C" int yl_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned block, const void* params,
                             size_t params_size, char* err, size_t errlen) {
    const yl_emu::Kernel* k = find_kernel(name);
    if (k == nullptr) {
        std::snprintf(err, errlen, "kernel %s is not in the emulator", name);
        return 1;
    }
    if (k->params_size != params_size) {
        std::snprintf(err, errlen, "kernel %s takes a parameter struct of %zu bytes, got %zu", name, k->params_size,
                      params_size);
        return 1;
    }
    g_kernel = k->run;
    g_params = params;
    return run_grid(gx, gy, block, err, errlen) ? 0 : 1;
}

// The name of the emulator's `index`-th kernel, or null past the last: the Rust tests compare the list with the
// kernels nvcc built.
extern "C" const char* yl_emu_kernel_name(size_t index) {
    for (size_t m = 0; m < yl_emu::kModuleCount; ++m) {
        size_t n = 0;
        const yl_emu::Kernel* kernels = yl_emu::kModules[m](&n);
        if (index < n) return kernels[index].name;
        index -= n;
    }
    return nullptr;
}
