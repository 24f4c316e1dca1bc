// Scalar math of the asymmetric loss, shared by the CUDA kernels (asl.cu) and by a host-compiled
// check (asl-core/tests/cuda_mirror/main.rs compiles this header with the host C++ compiler and
// compares it bit for bit with a Rust transcription).
//
// Every function here mirrors asl-core/src/math.rs (`asl_element`, `pow_known`,
// `log_one_minus`) and asl-core/src/single_label.rs (`single_label_row`'s `terms`) operation by
// operation, in the same order, so that the device results differ from the CPU kernel only by
// the rounding of the math library. Keep the three in step.
//
// Plain C++17 when compiled without nvcc: no CUDA header, no intrinsic.

#pragma once

#if defined(__CUDACC__)
#define ASL_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define ASL_HD inline
#endif

// The math library, by compute type (float or double).
template <typename F> struct AslMath;

template <> struct AslMath<float> {
    static ASL_HD float exp(float x) { return expf(x); }
    static ASL_HD float expm1(float x) { return expm1f(x); }
    static ASL_HD float log(float x) { return logf(x); }
    static ASL_HD float log1p(float x) { return log1pf(x); }
    static ASL_HD float pow(float b, float g) { return powf(b, g); }
    static ASL_HD float abs(float x) { return fabsf(x); }
    // fmaxf ignores a NaN operand, as Rust's f32::max does.
    static ASL_HD float max(float a, float b) { return fmaxf(a, b); }
};

template <> struct AslMath<double> {
    static ASL_HD double exp(double x) { return ::exp(x); }
    static ASL_HD double expm1(double x) { return ::expm1(x); }
    static ASL_HD double log(double x) { return ::log(x); }
    static ASL_HD double log1p(double x) { return ::log1p(x); }
    static ASL_HD double pow(double b, double g) { return ::pow(b, g); }
    static ASL_HD double abs(double x) { return ::fabs(x); }
    static ASL_HD double max(double a, double b) { return ::fmax(a, b); }
};

// b^n for n >= 0 by square-and-multiply, in the order of Rust's `powi` (compiler-builtins'
// __powisf2 / __powidf2): 0^0 = 1, 0^n = 0.
template <typename F> ASL_HD F asl_powi(F b, int n) {
    F r = F(1);
    while (true) {
        if (n & 1) {
            r *= b;
        }
        n /= 2;
        if (n == 0) {
            break;
        }
        b *= b;
    }
    return r;
}

// math.rs `pow_known`: b^g through powi when g is a small integer (gi >= 0), else pow.
template <typename F> ASL_HD F asl_pow_known(F b, F g, int gi) {
    return gi >= 0 ? asl_powi(b, gi) : AslMath<F>::pow(b, g);
}

// math.rs `log_one_minus`: log(q) for q = 1 - p_m, near 1 from log1p(-p_m).
template <typename F> ASL_HD F asl_log_one_minus(F q, F p_m) {
    return q > F(0.75) ? AslMath<F>::log1p(-p_m) : AslMath<F>::log(q);
}

// math.rs `AslParams`. gamma_*_int is -1 where the exponent is not a small integer.
template <typename F> struct AslPrm {
    F gamma_pos;
    F gamma_neg;
    F clip;
    F ln_eps;
    bool focal;
    bool detach;
    int gamma_pos_int;
    int gamma_neg_int;
};

// A value and its derivative.
template <typename F> struct AslPair {
    F v;
    F d;
};

// math.rs `clamp_log`: the eps clamp in log space, max(log v, ln eps), zero derivative where it is
// active; a NaN passes through.
template <typename F> ASL_HD AslPair<F> asl_clamp(AslPair<F> a, F ln_eps) {
    if (a.v < ln_eps) {
        return AslPair<F>{ln_eps, F(0)};
    }
    return a;
}

// math.rs `asl_element`: loss and d loss / d x of one element (before reduction). One function
// here; in math.rs, `Sigmoid` (p, 1 - p and their logs), `negative_log`, one function per target
// kind (`hard_negative`, `hard_positive`, `soft_target`) and `weighted` (the last lines).
template <typename F> ASL_HD AslPair<F> asl_element(F x, F y, const AslPrm<F> &prm) {
    const F zero = F(0);
    const F one = F(1);
    const F e = AslMath<F>::exp(-AslMath<F>::abs(x)); // in (0, 1]
    const F inv = one / (one + e);
    const bool x_pos = x >= zero;
    const F p = x_pos ? inv : e * inv;
    const F sn = x_pos ? e * inv : inv;
    // log p = -softplus(-x), log(1 - p) = -softplus(x), only on the branches that need them.
    auto log_p = [&]() -> F {
        const F l = AslMath<F>::log1p(e);
        return x_pos ? -l : x - l;
    };
    auto log_sn = [&]() -> F {
        const F l = AslMath<F>::log1p(e);
        return x_pos ? -x - l : -l;
    };
    // The shifted probability p_m = max(p - clip, 0) = 1 - p_neg.
    const F p_m = prm.clip > zero ? AslMath<F>::max(p - prm.clip, zero) : p;
    // log(p_neg) and its derivative; false where p <= clip (p_neg = 1: no loss, no gradient).
    auto negative_log = [&](AslPair<F> &out) -> bool {
        if (prm.clip > zero) {
            const F q = sn + prm.clip;
            if (q > one) {
                return false;
            }
            out = asl_clamp(AslPair<F>{asl_log_one_minus(q, p_m), -p * sn / q}, prm.ln_eps);
            return true;
        }
        out = asl_clamp(AslPair<F>{log_sn(), -p}, prm.ln_eps);
        return true;
    };

    F a, da, w, dw;
    if (y == zero) {
        AslPair<F> neg;
        if (!negative_log(neg)) {
            return AslPair<F>{zero, zero};
        }
        a = neg.v;
        da = neg.d;
        if (!prm.focal) {
            return AslPair<F>{-a, -da};
        }
        if (prm.gamma_neg == zero) {
            w = one;
            dw = zero;
        } else if (p_m == zero) {
            w = zero;
            dw = zero;
        } else {
            // gamma_neg p_m^(gamma_neg-1) p (1-p) as gamma_neg w (p / p_m) (1-p).
            w = asl_pow_known(p_m, prm.gamma_neg, prm.gamma_neg_int);
            dw = prm.gamma_neg * w * (p / p_m) * sn;
        }
    } else if (y == one) {
        const AslPair<F> pos = asl_clamp(AslPair<F>{log_p(), sn}, prm.ln_eps);
        a = pos.v;
        da = pos.d;
        if (!prm.focal) {
            return AslPair<F>{-a, -da};
        }
        // w = (1-p)^gamma_pos; dw/dx = -gamma_pos p w
        w = asl_pow_known(sn, prm.gamma_pos, prm.gamma_pos_int);
        dw = -prm.gamma_pos * p * w;
    } else {
        // Soft target: both log terms, and a focal weight whose base and exponent are mixtures.
        const AslPair<F> pos = asl_clamp(AslPair<F>{log_p(), sn}, prm.ln_eps);
        AslPair<F> neg;
        if (!negative_log(neg)) {
            neg = AslPair<F>{zero, zero};
        }
        a = y * pos.v + (one - y) * neg.v;
        da = y * pos.d + (one - y) * neg.d;
        if (!prm.focal) {
            return AslPair<F>{-a, -da};
        }
        const bool above_clip = prm.clip <= zero || p > prm.clip;
        const F base = y * sn + (one - y) * p_m;
        const F gamma = y * prm.gamma_pos + (one - y) * prm.gamma_neg;
        const F dbase = -y * p * sn + (above_clip ? (one - y) * p * sn : zero);
        w = AslMath<F>::pow(base, gamma); // base >= 0: 0^0 = 1, 0^g = 0
        if (gamma == zero || dbase == zero || base == zero) {
            dw = zero;
        } else {
            dw = gamma * w * (dbase / base);
        }
    }
    if (prm.detach) {
        dw = zero;
    }
    return AslPair<F>{-a * w, -(da * w + a * dw)};
}

// single_label.rs `single_label_row`'s `terms`: (w_k, l_k p_k dw_k/dp_k) of one class, from
// l = log p and p.
template <typename F>
ASL_HD AslPair<F> asl_sl_terms(bool is_target, F l, F p, F gp, F gn, int gpi, int gni) {
    const F zero = F(0);
    const F one = F(1);
    if (is_target) {
        if (gp == zero) {
            return AslPair<F>{one, zero};
        }
        // q = 1 - p_t = -expm1(l_t); l p dw/dp = -gp p w (l / q).
        const F q = -AslMath<F>::expm1(l);
        const F w = asl_pow_known(q, gp, gpi);
        const F l_over_q = q == zero ? -one : l / q;
        return AslPair<F>{w, -gp * p * w * l_over_q};
    }
    const F w = asl_pow_known(p, gn, gni);
    return AslPair<F>{w, l * gn * w};
}
