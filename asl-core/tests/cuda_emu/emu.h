// A small CUDA execution model on the host, enough to run asl-core/kernels/asl.cu unchanged in
// tests (tests/cuda_mirror/emulated.rs) on a machine without a GPU.
//
// - A launch runs its blocks one after another. The threads of a block are cooperative fibers
//   (ucontext) on one OS thread: each runs until it reaches a barrier, then the next one runs.
// - __syncthreads() waits for every thread of the block, __shfl_down_sync() for the 32 lanes of
//   the warp (full mask only) and exchanges the values as the hardware does (a lane whose
//   source lane is out of range reads its own value).
// - A barrier that can never complete (a thread exited, or waits at another barrier) is an
//   error, not a hang: CUDA leaves that undefined.
// - The order in which the threads run between barriers is a parameter (forward, reverse,
//   shuffled): a kernel that reads another thread's write without a barrier in between gives
//   different results under different orders, which the tests compare.
// - __shared__ variables are static: shared by the block's threads, reused by the next block
//   (as uninitialised as on the device).
//
// What this does not model: memory coalescing, timing, the device's own math library (host
// libm runs instead), and concurrent blocks (blocks must not depend on each other's writes
// within a launch; asl.cu's do not).

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <ucontext.h>
#include <utility>
#include <vector>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

namespace asl_emu {

[[noreturn]] inline void fail(const std::string &msg) {
    std::fprintf(stderr, "cuda emulation: %s\n", msg.c_str());
    std::exit(3);
}

// A fiber's stack: allocated once, never initialised (only the pages a kernel uses are touched).
constexpr size_t STACK_SIZE = 256 * 1024;

struct Fiber {
    ucontext_t ctx;
    std::unique_ptr<char[]> stack{new char[STACK_SIZE]};
    bool done = false;
};

struct Barrier {
    unsigned arrived = 0;
    unsigned long generation = 0;
};

enum class Order { Forward = 0, Reverse = 1, Shuffled = 2 };

struct State {
    dim3 grid{1, 1, 1};
    dim3 block{1, 1, 1};
    unsigned block_x = 0;
    unsigned current = 0;
    bool cooperative = false; // fibers; false: threads run to completion one by one
    std::string kernel;
    std::vector<Fiber> fibers;
    ucontext_t scheduler;
    Barrier block_barrier;
    std::vector<Barrier> warp_barriers;
    std::vector<uint64_t> warp_slots;
    unsigned long progress = 0;
    std::function<void()> body;
    Order order = Order::Forward;
    uint64_t rng = 1;
};

inline State &state() {
    static State s;
    return s;
}

// Read through calls the optimiser cannot see through, so no value is carried across a switch.
__attribute__((noipa)) inline uint3 thread_idx() { return uint3{state().current, 0, 0}; }
__attribute__((noipa)) inline uint3 block_idx() { return uint3{state().block_x, 0, 0}; }
__attribute__((noipa)) inline dim3 block_dim() { return state().block; }
__attribute__((noipa)) inline dim3 grid_dim() { return state().grid; }

__attribute__((noipa)) inline void yield() {
    State &s = state();
    if (swapcontext(&s.fibers[s.current].ctx, &s.scheduler) != 0) {
        fail("swapcontext failed");
    }
}

// Waits until `n` threads have arrived at `b`.
inline void arrive(Barrier &b, unsigned n, const char *what) {
    State &s = state();
    if (!s.cooperative) {
        fail(s.kernel + ": " + what + " in a kernel registered as barrier-free");
    }
    s.progress++;
    const unsigned long gen = b.generation;
    if (++b.arrived == n) {
        b.arrived = 0;
        b.generation++;
        return;
    }
    while (b.generation == gen) {
        yield();
    }
}

inline void sync_block() {
    State &s = state();
    arrive(s.block_barrier, s.block.x, "__syncthreads");
}

template <typename T> T shfl_down(unsigned mask, T v, unsigned delta) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "a shuffled value is at most 8 bytes");
    State &s = state();
    if (mask != 0xffffffffu) {
        fail(s.kernel + ": __shfl_down_sync with a partial mask is not emulated");
    }
    if (s.block.x % 32 != 0) {
        fail(s.kernel + ": __shfl_down_sync in a block of a partial warp");
    }
    const unsigned warp = s.current / 32, lane = s.current % 32;
    uint64_t *slots = &s.warp_slots[warp * 32];
    std::memcpy(&slots[lane], &v, sizeof v);
    arrive(s.warp_barriers[warp], 32, "__shfl_down_sync");
    T r = v;
    if (lane + delta < 32) {
        std::memcpy(&r, &slots[lane + delta], sizeof r);
    }
    arrive(s.warp_barriers[warp], 32, "__shfl_down_sync");
    return r;
}

inline void fiber_main();

// Points `f` at the start of fiber_main on its own stack (apart from launch(): getcontext
// returns twice in principle, which constrains the function calling it).
__attribute__((noinline)) inline void init_fiber(Fiber &f, ucontext_t *link) {
    f.done = false;
    if (getcontext(&f.ctx) != 0) {
        fail("getcontext failed");
    }
    f.ctx.uc_stack.ss_sp = f.stack.get();
    f.ctx.uc_stack.ss_size = STACK_SIZE;
    f.ctx.uc_link = link;
    makecontext(&f.ctx, fiber_main, 0);
}

inline void fiber_main() {
    State &s = state();
    s.body();
    s.fibers[s.current].done = true;
    s.progress++;
    // Returning resumes uc_link, the scheduler.
}

inline uint64_t next_random() {
    State &s = state();
    s.rng = s.rng * 6364136223846793005ull + 1442695040888963407ull;
    return s.rng >> 33;
}

// Runs `body` as every thread of a grid of `blocks` blocks of `threads` threads.
inline void launch(const std::string &kernel, unsigned blocks, unsigned threads, bool cooperative,
                   std::function<void()> body) {
    State &s = state();
    if (threads == 0 || threads > 1024) {
        fail(kernel + ": " + std::to_string(threads) + " threads per block (1 to 1024)");
    }
    s.kernel = kernel;
    s.grid = dim3{blocks, 1, 1};
    s.block = dim3{threads, 1, 1};
    s.cooperative = cooperative;
    s.body = std::move(body);
    if (!cooperative) {
        for (unsigned b = 0; b < blocks; b++) {
            s.block_x = b;
            for (unsigned t = 0; t < threads; t++) {
                s.current = t;
                s.body();
            }
        }
        return;
    }
    // Fibers are kept from launch to launch (their stacks with them); only more are added.
    if (s.fibers.size() < threads) {
        s.fibers.resize(threads);
    }
    s.warp_barriers.assign((threads + 31) / 32, Barrier{});
    s.warp_slots.assign(s.warp_barriers.size() * 32, 0);
    std::vector<unsigned> order(threads);
    std::iota(order.begin(), order.end(), 0u);
    if (s.order == Order::Reverse) {
        std::reverse(order.begin(), order.end());
    }
    for (unsigned b = 0; b < blocks; b++) {
        s.block_x = b;
        s.block_barrier = Barrier{};
        for (unsigned t = 0; t < threads; t++) {
            init_fiber(s.fibers[t], &s.scheduler);
        }
        unsigned left = threads;
        while (left > 0) {
            if (s.order == Order::Shuffled) {
                for (unsigned i = threads; i > 1; i--) {
                    std::swap(order[i - 1], order[next_random() % i]);
                }
            }
            const unsigned long before = s.progress;
            for (unsigned t : order) {
                if (s.fibers[t].done) {
                    continue;
                }
                s.current = t;
                if (swapcontext(&s.scheduler, &s.fibers[t].ctx) != 0) {
                    fail("swapcontext failed");
                }
                if (s.fibers[t].done) {
                    left--;
                }
            }
            if (left > 0 && s.progress == before) {
                fail(kernel + ": block " + std::to_string(b) + " deadlocks: " +
                     std::to_string(left) +
                     " threads wait at a barrier that the others never reach");
            }
        }
    }
}

} // namespace asl_emu

#define threadIdx (asl_emu::thread_idx())
#define blockIdx (asl_emu::block_idx())
#define blockDim (asl_emu::block_dim())
#define gridDim (asl_emu::grid_dim())

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static

inline void __syncthreads() { asl_emu::sync_block(); }

template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
    return asl_emu::shfl_down(mask, v, delta);
}

// One OS thread runs everything: a plain read-modify-write is atomic here.
inline unsigned long long atomicMax(unsigned long long *a, unsigned long long v) {
    const unsigned long long old = *a;
    if (v > old) {
        *a = v;
    }
    return old;
}

inline float __int_as_float(int v) {
    float r;
    std::memcpy(&r, &v, sizeof r);
    return r;
}

inline double __longlong_as_double(long long v) {
    double r;
    std::memcpy(&r, &v, sizeof r);
    return r;
}
