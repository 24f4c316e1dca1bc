//! The vectorised f32 path of the fused multi-label kernel.
//!
//! Nearly every element a multi-label loss sees has a hard target (exactly 0 or 1), and the
//! reference configurations use small integer exponents (0, 1, 2, 4). For those, this module
//! evaluates the same formula as [`crate::math::asl_element`] branch-free over blocks of
//! elements, with its own `exp` and `log` (range reduction plus short polynomials, about 1 ulp),
//! so that the compiler turns the loops into SIMD code. On x86-64 the block is compiled twice,
//! for the baseline (SSE2) and for AVX2, and the wider one is chosen at run time.
//!
//! Blocks holding a soft target, and configurations outside the fast path (non-integer
//! exponents, a clip below 1e-30), go through the scalar kernel. Which path a block takes
//! depends only on its contents, so results stay reproducible.

use std::sync::OnceLock;

use crate::math::AslParams;

/// Elements per block: large enough for the vector loops, small enough to live in L1.
pub(crate) const BLOCK: usize = 64;

/// The configuration, as the block kernel needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastParams {
    gamma_pos: u32,
    gamma_neg: u32,
    clip: f32,
    ln_eps: f32,
    focal: bool,
    detach: bool,
}

impl FastParams {
    /// The fast-path parameters, or `None` when the configuration needs the scalar kernel.
    pub(crate) fn new(prm: &AslParams<f32>) -> Option<Self> {
        let clip_ok = prm.clip == 0.0 || prm.clip >= 1e-30;
        match (prm.gamma_pos_int, prm.gamma_neg_int) {
            (Some(gamma_pos), Some(gamma_neg))
                if clip_ok && gamma_pos <= MAX_GAMMA && gamma_neg <= MAX_GAMMA =>
            {
                Some(FastParams {
                    gamma_pos: gamma_pos as u32,
                    gamma_neg: gamma_neg as u32,
                    clip: prm.clip,
                    ln_eps: prm.ln_eps,
                    focal: prm.focal,
                    detach: prm.detach,
                })
            }
            _ => None,
        }
    }
}

const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// `1.5 * 2^23`: adding and subtracting it rounds an f32 of magnitude below 2^22 to the nearest
/// integer, with plain arithmetic that vectorises (`f32::round` does not on baseline x86-64).
const ROUNDER: f32 = 12_582_912.0;

/// `2^n` for integer-valued `n` in [-126, 127], by building the exponent bits. The integer is
/// read from the low 22 mantissa bits of `n + 127 + ROUNDER` (no float-to-int conversion).
#[inline(always)]
fn pow2i(n: f32) -> f32 {
    let biased = (n + (ROUNDER + 127.0)).to_bits() & 0x003f_ffff;
    f32::from_bits(biased << 23)
}

/// `exp(-a)` for `a >= 0` (including +inf), to about 1 ulp, subnormal results included.
#[inline(always)]
fn exp_neg(a: f32) -> f32 {
    let x = -(if a < 104.0 { a } else { 104.0 }); // exp(-104) is below the smallest subnormal
    let n = (x * LOG2_E + ROUNDER) - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO; // |r| <= ln2 / 2
                                           // exp(r) on [-0.347, 0.347]: degree-6 Taylor polynomial, relative error below 1e-8.
    let poly = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n in two steps so that n down to -151 yields subnormals (and 0) correctly.
    let n1 = (n * 0.5 + ROUNDER) - ROUNDER;
    poly * pow2i(n1) * pow2i(n - n1)
}

/// `log(1 + f)` for `f` in [-0.2929, 0.4143], via `2 atanh(s)`, `s = f / (2 + f)`, `|s| < 0.172`.
#[inline(always)]
fn log1p_reduced(f: f32) -> f32 {
    let s = f / (2.0 + f);
    let s2 = s * s;
    // 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9): truncation error below 1e-9 relative.
    2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))))
}

/// `log(q)` for `q = 1 - p_m` in [1e-30, 1]: near 1 from `-p_m` (see `math::log_one_minus`).
#[inline(always)]
fn ln_one_minus(q: f32, p_m: f32) -> f32 {
    let bits = q.to_bits();
    let k = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let k = if big { k + 1 } else { k } as f32;
    let near_one = q > 0.75;
    let f = if near_one { -p_m } else { m - 1.0 };
    let k = if near_one { 0.0 } else { k };
    k * LN2_HI + (log1p_reduced(f) + k * LN2_LO)
}

/// `log(1 + e)` for `e` in [0, 1], accurate for tiny `e` (no `1 + e` rounding).
#[inline(always)]
fn log1p_unit(e: f32) -> f32 {
    let big = e > std::f32::consts::SQRT_2 - 1.0;
    // For e > sqrt(2) - 1: log(1 + e) = ln 2 + log(1 + (e - 1) / 2), e - 1 exact (Sterbenz).
    let f = if big { (e - 1.0) * 0.5 } else { e };
    let base = if big { LN2_HI } else { 0.0 };
    let low = if big { LN2_LO } else { 0.0 };
    base + (log1p_reduced(f) + low)
}

/// `b^n` for `0 <= n <= MAX_GAMMA` by square-and-multiply with a fixed number of steps (so the
/// loop vectorises across elements).
#[inline(always)]
fn powi(b: f32, n: u32) -> f32 {
    let (mut r, mut sq) = (1.0f32, b);
    for bit in 0..4 {
        r = if n & (1 << bit) != 0 { r * sq } else { r };
        sq *= sq;
    }
    r
}

/// The largest integer exponent of the fast path (four squaring steps).
const MAX_GAMMA: i32 = 15;

/// One block: `y` holds only 0s and 1s. Writes element losses and gradients (unscaled).
/// `CLIP` and `FOCAL` are the configuration's `clip > 0` and `gamma > 0` as constants, so the
/// element loop has no branch.
#[inline(always)]
fn block_body<const CLIP: bool, const FOCAL: bool>(
    x: &[f32; BLOCK],
    y: &[f32; BLOCK],
    prm: &FastParams,
    loss: &mut [f32; BLOCK],
    grad: &mut [f32; BLOCK],
) {
    let clip = prm.clip;
    let (gamma_pos, gamma_neg) = (prm.gamma_pos as f32, prm.gamma_neg as f32);
    let detach = if prm.detach { 0.0 } else { 1.0 };
    for i in 0..BLOCK {
        let (x, positive) = (x[i], y[i] == 1.0);
        let e = exp_neg(x.abs());
        let inv = 1.0 / (1.0 + e);
        let x_pos = x >= 0.0;
        let p = if x_pos { inv } else { e * inv };
        let sn = if x_pos { e * inv } else { inv };
        let l1pe = log1p_unit(e);

        // Positive: log(max(p, eps)) with log p = -softplus(-x).
        let log_p = if x_pos { -l1pe } else { x - l1pe };
        // Comparisons are written so that a NaN is never "clamped" away.
        let pos_clamped = log_p < prm.ln_eps;
        let a_pos = if pos_clamped { prm.ln_eps } else { log_p };
        let da_pos = if pos_clamped { 0.0 } else { sn };

        // Negative: log(max(p_neg, eps)), p_neg = min(1 - p + clip, 1) (or 1 - p).
        // The shifted probability p_m = max(p - clip, 0) = 1 - p_neg.
        let p_m = if CLIP {
            let d = p - clip;
            if d > 0.0 {
                d
            } else {
                0.0
            }
        } else {
            p
        };
        let (a_neg, da_neg) = if CLIP {
            let q = sn + clip;
            let outside = q > 1.0; // p <= clip: no loss, no gradient
            let lq = ln_one_minus(if outside { 1.0 } else { q }, p_m);
            (
                if outside { 0.0 } else { lq },
                if outside { 0.0 } else { -p * sn / q },
            )
        } else {
            (if x_pos { -x - l1pe } else { -l1pe }, -p)
        };
        let neg_clamped = a_neg < prm.ln_eps;
        let a_neg = if neg_clamped { prm.ln_eps } else { a_neg };
        let da_neg = if neg_clamped { 0.0 } else { da_neg };

        let a = if positive { a_pos } else { a_neg };
        let da = if positive { da_pos } else { da_neg };
        if FOCAL {
            let w_pos = powi(sn, prm.gamma_pos);
            let dw_pos = -gamma_pos * p * w_pos;
            // Integer gamma_neg >= 1 here: p_m^(gamma_neg-1) <= 1 cannot overflow, so
            // dw/dx = gamma_neg p_m^(gamma_neg-1) p (1-p) needs no division.
            let w1 = powi(p_m, prm.gamma_neg.saturating_sub(1));
            let w_neg = if prm.gamma_neg > 0 { w1 * p_m } else { 1.0 };
            let dw_neg = gamma_neg * w1 * p * sn;
            let w = if positive { w_pos } else { w_neg };
            let dw = if positive { dw_pos } else { dw_neg } * detach;
            loss[i] = -a * w;
            grad[i] = -(da * w + a * dw);
        } else {
            loss[i] = -a;
            grad[i] = -da;
        }
        // A NaN logit gives a NaN loss and gradient (the clamps above would hide it).
        if x.is_nan() {
            loss[i] = x;
            grad[i] = x;
        }
    }
}

/// Instantiates the block body for the four (clip, focal) combinations.
#[inline(always)]
fn block_dispatch(
    x: &[f32; BLOCK],
    y: &[f32; BLOCK],
    prm: &FastParams,
    loss: &mut [f32; BLOCK],
    grad: &mut [f32; BLOCK],
) {
    match (prm.clip > 0.0, prm.focal) {
        (true, true) => block_body::<true, true>(x, y, prm, loss, grad),
        (true, false) => block_body::<true, false>(x, y, prm, loss, grad),
        (false, true) => block_body::<false, true>(x, y, prm, loss, grad),
        (false, false) => block_body::<false, false>(x, y, prm, loss, grad),
    }
}

/// The block kernel compiled for one instruction set (`#[target_feature]` on a wrapper is what
/// lets LLVM use the wider vectors inside the inlined body).
macro_rules! block_variant {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        fn $name(
            x: &[f32; BLOCK],
            y: &[f32; BLOCK],
            prm: &FastParams,
            loss: &mut [f32; BLOCK],
            grad: &mut [f32; BLOCK],
        ) {
            block_dispatch(x, y, prm, loss, grad)
        }
    };
}

block_variant!(block_baseline);
block_variant!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    block_avx2
);
block_variant!(
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    block_avx512
);

/// A block kernel, as chosen at run time.
pub(crate) type BlockFn =
    fn(&[f32; BLOCK], &[f32; BLOCK], &FastParams, &mut [f32; BLOCK], &mut [f32; BLOCK]);

/// The block kernels this CPU can run, widest first (the baseline is always there).
fn available_kernels() -> Vec<(&'static str, BlockFn)> {
    let mut kernels: Vec<(&'static str, BlockFn)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx512dq") && has!("fma") {
            // SAFETY: the features `block_avx512` is compiled for were just detected.
            kernels.push(("avx512", |x, y, p, l, g| unsafe {
                block_avx512(x, y, p, l, g)
            }));
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the features `block_avx2` is compiled for were just detected.
            kernels.push(("avx2", |x, y, p, l, g| unsafe { block_avx2(x, y, p, l, g) }));
        }
    }
    kernels.push(("baseline", block_baseline));
    kernels
}

/// The block kernel for this CPU, chosen once: the widest available, or the widest not above
/// `ASL_SIMD` (`avx512`, `avx2` or `baseline`) when that is set (for benchmarks and
/// troubleshooting).
pub(crate) fn block_kernel() -> BlockFn {
    static CHOSEN: OnceLock<BlockFn> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let kernels = available_kernels();
        let cap = std::env::var("ASL_SIMD").ok();
        let order = ["avx512", "avx2", "baseline"];
        let allowed = |name: &str| match cap
            .as_deref()
            .and_then(|c| order.iter().position(|o| *o == c))
        {
            Some(max) => order
                .iter()
                .position(|o| *o == name)
                .is_some_and(|i| i >= max),
            None => true,
        };
        kernels
            .iter()
            .find(|(name, _)| allowed(name))
            .map_or(block_baseline as BlockFn, |(_, f)| *f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AslConfig;
    use crate::math::asl_element;

    #[test]
    fn every_block_kernel_matches_the_scalar_f64_kernel() {
        let mut s = 0x1234_5678u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let kernels = available_kernels();
        assert!(kernels.iter().any(|(n, _)| *n == "baseline"));
        for (gn, gp, clip) in [
            (4.0, 1.0, 0.05),
            (4.0, 0.0, 0.05),
            (0.0, 0.0, 0.0),
            (2.0, 2.0, 0.0),
            (3.0, 1.0, 0.2),
        ] {
            for detach in [true, false] {
                let cfg = AslConfig {
                    gamma_neg: gn,
                    gamma_pos: gp,
                    clip,
                    detach_focal_weight: detach,
                    ..AslConfig::default()
                };
                let prm32 = AslParams::<f32>::new(&cfg);
                let prm64 = AslParams::<f64>::new(&cfg);
                let fast = FastParams::new(&prm32).expect("integer exponents take the fast path");
                for _ in 0..50 {
                    let mut x = [0f32; BLOCK];
                    let mut y = [0f32; BLOCK];
                    for i in 0..BLOCK {
                        let scale = [3.0, 12.0, 60.0, 200.0][i % 4];
                        x[i] = ((next() - 0.5) * scale) as f32;
                        y[i] = (next() < 0.3) as u8 as f32;
                    }
                    for (name, kernel) in &kernels {
                        let (mut l, mut g) = ([0f32; BLOCK], [0f32; BLOCK]);
                        kernel(&x, &y, &fast, &mut l, &mut g);
                        for i in 0..BLOCK {
                            let (lw, gw) = asl_element(x[i] as f64, y[i] as f64, &prm64);
                            assert!(
                                (l[i] as f64 - lw).abs() <= 2e-6 * lw.abs() + 1e-8,
                                "{name} {cfg:?} x={} y={}: loss {} vs {lw}",
                                x[i],
                                y[i],
                                l[i]
                            );
                            assert!(
                                (g[i] as f64 - gw).abs() <= 1e-5 * gw.abs() + 1e-8,
                                "{name} {cfg:?} x={} y={}: grad {} vs {gw}",
                                x[i],
                                y[i],
                                g[i]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn exp_and_log_are_accurate() {
        let mut worst: f64 = 0.0;
        for i in 0..200_000 {
            let a = i as f32 * 5e-4; // [0, 100)
            let got = exp_neg(a) as f64;
            let want = (-(a as f64)).exp();
            if want >= f32::MIN_POSITIVE as f64 {
                worst = worst.max(((got - want) / want).abs());
            } else {
                assert!(
                    (got - want).abs() < 3e-45,
                    "exp(-{a}) = {got:e}, want {want:e}"
                );
            }
        }
        assert!(worst < 3e-7, "exp_neg relative error {worst:e}");
        assert_eq!(exp_neg(f32::INFINITY), 0.0);
        assert_eq!(exp_neg(0.0), 1.0);

        let mut worst: f64 = 0.0;
        for i in 1..200_000 {
            let v = i as f32 * 5e-6; // (0, 1)
                                     // The caller knows both q and p_m = 1 - q accurately; the function uses q below
                                     // 0.75 and log1p(-p_m) above.
            let p_m = (1.0 - v as f64) as f32;
            let want = if v > 0.75 {
                (-(p_m as f64)).ln_1p()
            } else {
                (v as f64).ln()
            };
            let got = ln_one_minus(v, p_m) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-3));
            let e = v;
            let (got, want) = (log1p_unit(e) as f64, (e as f64).ln_1p());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "log relative error {worst:e}");
        assert_eq!(ln_one_minus(1.0, 0.0), 0.0);
        assert_eq!(log1p_unit(1e-30), 1e-30);
    }
}
