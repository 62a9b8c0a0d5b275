// The CPU emulation of CUDA C used by the kernel tests. Each CUDA thread of a block is a fiber (ucontext)
// on the calling OS thread: a round runs every live fiber of the block up to its next __syncthreads (or
// its end), so no thread passes a barrier before all have reached it; blocks run one after another.
// Shared by tests/test_gpu.py (the kernels on their own) and tests/cuda_emu/libcuda_emu.cpp (a CUDA driver
// for PyCUDA, tests/test_gpu_emulated_driver.py). Not thread-safe: one launch at a time.
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>
#include <ucontext.h>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct int4 { int x, y, z, w; };
static dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __shared__ static
#define __constant__ static
static ucontext_t emu_sched;
static std::vector<ucontext_t> emu_fibers;
static unsigned emu_cur;
static const std::function<void()>* emu_body;
static std::vector<char> emu_done;
inline void __syncthreads() { swapcontext(&emu_fibers[emu_cur], &emu_sched); }
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
    s &= 31; return (unsigned)(((((unsigned long long)hi) << 32) | lo) >> s); }
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = ((unsigned long long)y << 32) | x; unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
static void emu_fiber_main() { (*emu_body)(); emu_done[emu_cur] = 1; }  // returns to emu_sched (uc_link)
template <typename F> void launch(dim3 grid, dim3 block, F f) {
    const size_t STACK = 64 * 1024;
    gridDim = grid; blockDim = block;
    const unsigned n = block.x * block.y * block.z;
    const std::function<void()> body = f;
    emu_body = &body;
    std::vector<char> stacks((size_t)n * STACK);
    emu_fibers.assign(n, ucontext_t{});
    for (unsigned by = 0; by < grid.y; ++by) for (unsigned bx = 0; bx < grid.x; ++bx) {
        emu_done.assign(n, 0);
        for (unsigned t = 0; t < n; ++t) {
            getcontext(&emu_fibers[t]);
            emu_fibers[t].uc_stack.ss_sp = stacks.data() + (size_t)t * STACK;
            emu_fibers[t].uc_stack.ss_size = STACK;
            emu_fibers[t].uc_link = &emu_sched;
            makecontext(&emu_fibers[t], emu_fiber_main, 0);
        }
        for (unsigned live = n; live > 0;) {
            live = 0;
            for (unsigned t = 0; t < n; ++t) {
                if (emu_done[t]) continue;
                emu_cur = t;
                threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                blockIdx = dim3{bx, by, 0};
                swapcontext(&emu_sched, &emu_fibers[t]);
                live += !emu_done[t];
            }
        }
    } }
