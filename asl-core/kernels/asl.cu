// CUDA kernels of the fused asymmetric losses (asl-core, feature `cuda`).
//
// Compiled to PTX at build time by asl-core/build.rs (nvcc --ptx -O3 --fmad=false) and loaded by
// asl-core/src/cuda.rs. The per-element math lives in asl_math.cuh, shared with a host-compiled
// check. The launch geometry below and every kernel's parameter list are what
// src/cuda_launch.rs plans launches for, and tests/cuda_mirror transcribes the reduction order:
// change them together. That test also compiles this file for the host and runs every kernel
// under a CUDA emulation (tests/cuda_emu): keep to what it models (1-D grids, __syncthreads,
// full-warp __shfl_down_sync, atomicMax on u64, static __shared__ arrays).
//
// Determinism: no floating-point atomics. Each block of the multi-label kernel sums its fixed tile
// of element losses (per thread in a fixed order, then a fixed shuffle tree) into one f64 partial;
// asl_sum_partials then sums the partials in a fixed order in one block. The same inputs give the
// same bits on every run. The only atomic is an integer max recording the first bad target.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "asl_math.cuh"

// Multi-label kernel: threads per block and elements per thread; a block covers a tile of
// ASL_ML_THREADS * ASL_ML_ELEMS consecutive elements, thread t elements t, t + THREADS, ...
#define ASL_ML_THREADS 256
#define ASL_ML_ELEMS 8
// The partial-sum kernel runs one block of this many threads.
#define ASL_RED_THREADS 1024
// The single-label kernel: one block of this many threads per row.
#define ASL_SL_THREADS 256
// The chaining (upstream-gradient) kernels: threads per block.
#define ASL_CHAIN_THREADS 256

// ---------------------------------------------------------------------------------------------
// Conversions: inputs to the compute type, results to the gradient (= logits) type.

template <typename F> __device__ __forceinline__ F asl_in(float v) { return F(v); }
template <typename F> __device__ __forceinline__ F asl_in(double v) { return F(v); }
template <typename F> __device__ __forceinline__ F asl_in(__half v) { return F(__half2float(v)); }
template <typename F> __device__ __forceinline__ F asl_in(__nv_bfloat16 v) {
    return F(__bfloat162float(v));
}
template <typename F> __device__ __forceinline__ F asl_in(uint8_t v) { return F(v); }
template <typename F> __device__ __forceinline__ F asl_in(uint32_t v) { return F(v); }
template <typename F> __device__ __forceinline__ F asl_in(int64_t v) { return F(v); }

template <typename G> __device__ __forceinline__ G asl_out(float v);
template <> __device__ __forceinline__ float asl_out<float>(float v) { return v; }
template <> __device__ __forceinline__ __half asl_out<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 asl_out<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <typename G> __device__ __forceinline__ G asl_out(double v);
template <> __device__ __forceinline__ double asl_out<double>(double v) { return v; }

// A class index (single-label targets) as a signed 64-bit integer.
__device__ __forceinline__ long long asl_class(uint8_t v) { return (long long)v; }
__device__ __forceinline__ long long asl_class(uint32_t v) { return (long long)v; }
__device__ __forceinline__ long long asl_class(int64_t v) { return (long long)v; }

// A quiet NaN in the compute type.
template <typename F> __device__ __forceinline__ F asl_nan();
template <> __device__ __forceinline__ float asl_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double asl_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// Records index `i` as bad: *bad ends as ~(smallest bad index), 0 when none (the buffer starts
// zeroed). Integer max: the result does not depend on the order of the atomics.
__device__ __forceinline__ void asl_mark_bad(unsigned long long *bad, unsigned long long i) {
    atomicMax(bad, ~i);
}

// ---------------------------------------------------------------------------------------------
// Fixed-order reductions.

// The two reductions: the operation, and what a missing lane of the second level holds.
template <typename V> struct AslSum {
    static __device__ __forceinline__ V op(V a, V b) { return a + b; }
    static __device__ __forceinline__ V missing(const V *) { return V(0); }
};
template <typename V> struct AslMax {
    static __device__ __forceinline__ V op(V a, V b) { return AslMath<V>::max(a, b); }
    static __device__ __forceinline__ V missing(const V *scratch) { return scratch[0]; }
};

// Tree reduction over a warp with shuffles: after it, lane 0 holds, for the sum,
// ((v0 + v16) + (v8 + v24)) + ... in the fixed pattern of offsets 16, 8, 4, 2, 1.
template <typename Op, typename V> __device__ __forceinline__ V asl_warp_reduce(V v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v = Op::op(v, __shfl_down_sync(0xffffffffu, v, o));
    }
    return v;
}

// Block reduction (blockDim.x a multiple of 32): each warp's tree, then warp 0 reduces the warp
// results (missing lanes: 0 for the sum, warp 0's result for the max) with the same tree. Every
// thread gets the result. `scratch` holds 33 values; the function may be called again right
// after it returns.
template <typename Op, typename V> __device__ __forceinline__ V asl_block_reduce(V v, V *scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = asl_warp_reduce<Op>(v);
    __syncthreads(); // scratch is free: whatever read it before this call is done with it
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : Op::missing(scratch);
        v = asl_warp_reduce<Op>(v);
        if (lane == 0) {
            scratch[32] = v;
        }
    }
    __syncthreads();
    return scratch[32];
}

__device__ __forceinline__ double asl_block_sum(double v, double *scratch) {
    return asl_block_reduce<AslSum<double>>(v, scratch);
}

template <typename F> __device__ __forceinline__ F asl_block_max(F v, F *scratch) {
    return asl_block_reduce<AslMax<F>>(v, scratch);
}

// ---------------------------------------------------------------------------------------------
// Multi-label ASL: one pass, loss and gradient.
//
// x, y: n logits and targets (contiguous). grad (n, logits dtype) receives
// d loss_element / dx * grad_scale, or is null; per_el (n, compute type) receives the element
// losses (Reduction::None), or is null; partials (gridDim.x doubles) receives each block's loss
// sum, or is null. A target outside [0, 1] gives a NaN loss and gradient and is recorded in bad.
// The element math, once per compute type in the module (inlining it into each of the
// ASL_ML_ELEMS unrolled iterations of 28 kernels made the PTX 9 MB, slow to JIT).
template <typename F> __device__ __noinline__ AslPair<F> asl_element_call(F x, F y, AslPrm<F> prm) {
    return asl_element(x, y, prm);
}

template <typename L, typename T, typename F>
__device__ __forceinline__ void asl_ml_body(const L *__restrict__ x, const T *__restrict__ y,
                                            unsigned long long n, AslPrm<F> prm, F grad_scale,
                                            L *__restrict__ grad, F *__restrict__ per_el,
                                            double *__restrict__ partials,
                                            unsigned long long *bad) {
    __shared__ double scratch[33];
    const unsigned long long first =
        (unsigned long long)blockIdx.x * (ASL_ML_THREADS * ASL_ML_ELEMS) + threadIdx.x;
    // All loads first, so that each thread has 2 * ASL_ML_ELEMS requests in flight.
    F xs[ASL_ML_ELEMS];
    F ys[ASL_ML_ELEMS];
#pragma unroll
    for (int k = 0; k < ASL_ML_ELEMS; k++) {
        const unsigned long long i = first + (unsigned long long)k * ASL_ML_THREADS;
        if (i < n) {
            xs[k] = asl_in<F>(x[i]);
            ys[k] = asl_in<F>(y[i]);
        } else {
            xs[k] = F(0);
            ys[k] = F(0);
        }
    }
    double acc = 0.0;
    unsigned long long first_bad = ~0ull;
#pragma unroll
    for (int k = 0; k < ASL_ML_ELEMS; k++) {
        const unsigned long long i = first + (unsigned long long)k * ASL_ML_THREADS;
        if (i < n) {
            const F t = ys[k];
            AslPair<F> r;
            if (t >= F(0) && t <= F(1)) {
                r = asl_element_call(xs[k], t, prm);
            } else {
                r = AslPair<F>{asl_nan<F>(), asl_nan<F>()};
                first_bad = first_bad < i ? first_bad : i;
            }
            acc += (double)r.v;
            if (grad != nullptr) {
                grad[i] = asl_out<L>(r.d * grad_scale);
            }
            if (per_el != nullptr) {
                per_el[i] = r.v;
            }
        }
    }
    if (first_bad != ~0ull) {
        asl_mark_bad(bad, first_bad);
    }
    if (partials != nullptr) {
        const double s = asl_block_sum(acc, scratch);
        if (threadIdx.x == 0) {
            partials[blockIdx.x] = s;
        }
    }
}

#define ASL_ML_KERNEL(LN, L, TN, T, F)                                                             \
    extern "C" __global__ void __launch_bounds__(ASL_ML_THREADS) asl_ml_##LN##_##TN(              \
        const L *x, const T *y, unsigned long long n, F gamma_pos, F gamma_neg, F clip, F ln_eps, \
        int focal, int detach, int gamma_pos_int, int gamma_neg_int, F grad_scale, L *grad,       \
        F *per_el, double *partials, unsigned long long *bad) {                                   \
        AslPrm<F> prm;                                                                            \
        prm.gamma_pos = gamma_pos;                                                                \
        prm.gamma_neg = gamma_neg;                                                                \
        prm.clip = clip;                                                                          \
        prm.ln_eps = ln_eps;                                                                      \
        prm.focal = focal != 0;                                                                   \
        prm.detach = detach != 0;                                                                 \
        prm.gamma_pos_int = gamma_pos_int;                                                        \
        prm.gamma_neg_int = gamma_neg_int;                                                        \
        asl_ml_body<L, T, F>(x, y, n, prm, grad_scale, grad, per_el, partials, bad);              \
    }

#define ASL_ML_TARGETS(LN, L, F)                                                                   \
    ASL_ML_KERNEL(LN, L, u8, uint8_t, F)                                                          \
    ASL_ML_KERNEL(LN, L, u32, uint32_t, F)                                                        \
    ASL_ML_KERNEL(LN, L, i64, int64_t, F)                                                         \
    ASL_ML_KERNEL(LN, L, f16, __half, F)                                                          \
    ASL_ML_KERNEL(LN, L, bf16, __nv_bfloat16, F)                                                  \
    ASL_ML_KERNEL(LN, L, f32, float, F)                                                           \
    ASL_ML_KERNEL(LN, L, f64, double, F)

ASL_ML_TARGETS(f32, float, float)
ASL_ML_TARGETS(f16, __half, float)
ASL_ML_TARGETS(bf16, __nv_bfloat16, float)
ASL_ML_TARGETS(f64, double, double)

// ---------------------------------------------------------------------------------------------
// Second level of the reduction: one block sums `count` partials in a fixed order (thread t:
// partials t, t + ASL_RED_THREADS, ... in increasing order from 0.0, then the block tree) and
// writes (F)(sum * scale).
#define ASL_SUM_KERNEL(FN, F)                                                                      \
    extern "C" __global__ void __launch_bounds__(ASL_RED_THREADS)                                 \
        asl_sum_partials_##FN(const double *partials, unsigned long long count, double scale,     \
                              F *out) {                                                           \
        __shared__ double scratch[33];                                                            \
        double acc = 0.0;                                                                         \
        for (unsigned long long i = threadIdx.x; i < count; i += ASL_RED_THREADS) {               \
            acc += partials[i];                                                                   \
        }                                                                                         \
        const double s = asl_block_sum(acc, scratch);                                             \
        if (threadIdx.x == 0) {                                                                   \
            out[0] = (F)(s * scale);                                                              \
        }                                                                                         \
    }

ASL_SUM_KERNEL(f32, float)
ASL_SUM_KERNEL(f64, double)

// ---------------------------------------------------------------------------------------------
// Single-label (softmax) ASL: one block per row; loss and gradient (single_label.rs
// `single_label_row`). Row sums are accumulated in f64 (per thread, then the block tree).
//
// t: class indices [rows]. A class outside [0, k) gives a NaN row loss and gradient and is
// recorded in bad (by row). grad (rows * k, logits dtype) or null; per_row (rows, compute type)
// or null; partials (rows doubles: the row loss rounded to F) or null.
// The per-class weights, once per compute type in the module (as asl_element_call).
template <typename F>
__device__ __noinline__ AslPair<F> asl_sl_terms_call(bool is_target, F l, F p, F gp, F gn, int gpi,
                                                     int gni) {
    return asl_sl_terms(is_target, l, p, gp, gn, gpi, gni);
}

template <typename L, typename T, typename F>
__device__ __forceinline__ void asl_sl_body(const L *__restrict__ x, const T *__restrict__ t,
                                            unsigned long long k, F gp, F gn, int gpi, int gni,
                                            F s_target, F s_other, F grad_scale,
                                            L *__restrict__ grad, F *__restrict__ per_row,
                                            double *__restrict__ partials,
                                            unsigned long long *bad) {
    __shared__ double scratch[33];
    __shared__ F fscratch[33];
    const unsigned long long row = blockIdx.x;
    const L *xr = x + row * k;
    const long long c = asl_class(t[row]);
    if (c < 0 || (unsigned long long)c >= k) {
        // Uniform over the block: no thread reaches a barrier.
        if (threadIdx.x == 0) {
            asl_mark_bad(bad, row);
            if (per_row != nullptr) {
                per_row[row] = asl_nan<F>();
            }
            if (partials != nullptr) {
                partials[row] = (double)asl_nan<F>();
            }
        }
        if (grad != nullptr) {
            for (unsigned long long j = threadIdx.x; j < k; j += blockDim.x) {
                grad[row * k + j] = asl_out<L>(asl_nan<F>());
            }
        }
        return;
    }
    const unsigned long long target = (unsigned long long)c;

    F m = -INFINITY;
    for (unsigned long long j = threadIdx.x; j < k; j += blockDim.x) {
        m = AslMath<F>::max(m, asl_in<F>(xr[j]));
    }
    const F max = asl_block_max(m, fscratch);
    double se = 0.0;
    for (unsigned long long j = threadIdx.x; j < k; j += blockDim.x) {
        se += (double)AslMath<F>::exp(asl_in<F>(xr[j]) - max);
    }
    const F sum_exp = (F)asl_block_sum(se, scratch);
    const F lse = max + AslMath<F>::log(sum_exp);

    double loss = 0.0;
    if (grad == nullptr) {
        for (unsigned long long j = threadIdx.x; j < k; j += blockDim.x) {
            const F l = asl_in<F>(xr[j]) - lse;
            const bool is_t = j == target;
            const F s = is_t ? s_target : s_other;
            const AslPair<F> tw = asl_sl_terms_call(is_t, l, AslMath<F>::exp(l), gp, gn, gpi, gni);
            if (s != F(0) && tw.v != F(0)) {
                loss += (double)(s * l * tw.v);
            }
        }
    } else {
        double c_sum = 0.0;
        for (unsigned long long j = threadIdx.x; j < k; j += blockDim.x) {
            const F l = asl_in<F>(xr[j]) - lse;
            const F p = AslMath<F>::exp(l);
            const bool is_t = j == target;
            const F s = is_t ? s_target : s_other;
            const AslPair<F> tw = asl_sl_terms_call(is_t, l, p, gp, gn, gpi, gni);
            if (s != F(0)) {
                loss += (double)(s * l * tw.v);
                c_sum += (double)(s * (tw.v + tw.d));
            }
        }
        const F cs = (F)asl_block_sum(c_sum, scratch);
        // d loss / dx_j = -(c_j - p_j sum_k c_k), c recomputed (the row is in cache).
        for (unsigned long long j = threadIdx.x; j < k; j += blockDim.x) {
            const F l = asl_in<F>(xr[j]) - lse;
            const F p = AslMath<F>::exp(l);
            const bool is_t = j == target;
            const F s = is_t ? s_target : s_other;
            const AslPair<F> tw = asl_sl_terms_call(is_t, l, p, gp, gn, gpi, gni);
            const F cj = s == F(0) ? F(0) : s * (tw.v + tw.d);
            grad[row * k + j] = asl_out<L>(-(cj - p * cs) * grad_scale);
        }
    }
    const F row_loss = -(F)asl_block_sum(loss, scratch);
    if (threadIdx.x == 0) {
        if (per_row != nullptr) {
            per_row[row] = row_loss;
        }
        if (partials != nullptr) {
            partials[row] = (double)row_loss;
        }
    }
}

#define ASL_SL_KERNEL(LN, L, TN, T, F)                                                             \
    extern "C" __global__ void __launch_bounds__(ASL_SL_THREADS) asl_sl_##LN##_##TN(              \
        const L *x, const T *t, unsigned long long k, F gamma_pos, F gamma_neg,                   \
        int gamma_pos_int, int gamma_neg_int, F s_target, F s_other, F grad_scale, L *grad,       \
        F *per_row, double *partials, unsigned long long *bad) {                                  \
        asl_sl_body<L, T, F>(x, t, k, gamma_pos, gamma_neg, gamma_pos_int, gamma_neg_int,         \
                             s_target, s_other, grad_scale, grad, per_row, partials, bad);        \
    }

#define ASL_SL_TARGETS(LN, L, F)                                                                   \
    ASL_SL_KERNEL(LN, L, u8, uint8_t, F)                                                          \
    ASL_SL_KERNEL(LN, L, u32, uint32_t, F)                                                        \
    ASL_SL_KERNEL(LN, L, i64, int64_t, F)

ASL_SL_TARGETS(f32, float, float)
ASL_SL_TARGETS(f16, __half, float)
ASL_SL_TARGETS(bf16, __nv_bfloat16, float)
ASL_SL_TARGETS(f64, double, double)

// ---------------------------------------------------------------------------------------------
// Chaining the upstream gradient into the cached d loss / d logits, in place, in the compute
// type S (the loss's dtype): g = g * s for a scalar loss (nothing to do when s is exactly 1, the
// usual case), g[i] = g[i] * up[i / div] for an unreduced one.

#define ASL_CHAIN_KERNELS(GN, G, S)                                                                \
    extern "C" __global__ void __launch_bounds__(ASL_CHAIN_THREADS)                               \
        asl_scale_scalar_##GN(G *g, unsigned long long n, const S *s) {                           \
        const S v = s[0];                                                                         \
        if (v == S(1)) {                                                                          \
            return;                                                                               \
        }                                                                                         \
        for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;    \
             i < n; i += (unsigned long long)gridDim.x * blockDim.x) {                            \
            g[i] = asl_out<G>(asl_in<S>(g[i]) * v);                                               \
        }                                                                                         \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(ASL_CHAIN_THREADS) asl_scale_rows_##GN(          \
        G *g, unsigned long long n, const S *up, unsigned long long div) {                        \
        for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;    \
             i < n; i += (unsigned long long)gridDim.x * blockDim.x) {                            \
            g[i] = asl_out<G>(asl_in<S>(g[i]) * up[i / div]);                                     \
        }                                                                                         \
    }

ASL_CHAIN_KERNELS(f32, float, float)
ASL_CHAIN_KERNELS(f16, __half, float)
ASL_CHAIN_KERNELS(bf16, __nv_bfloat16, float)
ASL_CHAIN_KERNELS(f64, double, double)
