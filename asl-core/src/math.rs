//! Scalar math shared by the fused kernels: the per-element multi-label ASL value and gradient,
//! the helpers the single-label row kernel shares with it, and the types the kernels read and
//! compute in. Nothing here knows about candle's tensors, storages or devices.
//!
//! The per-element functions here are the single source of truth for the fused CPU kernel; a
//! CUDA kernel (`kernels/asl_math.cuh`) mirrors them line by line and is tested against them.

use half::{bf16, f16};
use num_traits::Float;

use crate::config::AslConfig;

/// Elements per work item of the parallel kernels. Fixed (not derived from the thread count) so
/// that partial sums are combined in the same order on every machine: the loss is bit-for-bit
/// reproducible whatever `RAYON_NUM_THREADS` is.
pub(crate) const CHUNK: usize = 2048;

/// A value stored in an input tensor that the kernels read.
pub(crate) trait Elem: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
}

macro_rules! elem_via_as {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)]
            fn to_f32(self) -> f32 { self as f32 }
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
elem_via_as!(f32, f64, u8, u32, i64);

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}

/// The float type a kernel computes in: f32 for f16/bf16/f32 inputs, f64 for f64 inputs.
pub(crate) trait Compute: Float + Send + Sync + std::fmt::Debug + 'static {
    fn of<E: Elem>(e: E) -> Self;
    fn from_f64(v: f64) -> Self;
    fn as_f64(self) -> f64;
    fn from_f32(v: f32) -> Self;
    /// `prm` itself when this compute type is f32, else `None`: the multi-label kernel's
    /// vectorised path computes in f32 only.
    fn as_f32(prm: &AslParams<Self>) -> Option<&AslParams<f32>>;
}

impl Compute for f32 {
    #[inline(always)]
    fn of<E: Elem>(e: E) -> Self {
        e.to_f32()
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn as_f32(prm: &AslParams<Self>) -> Option<&AslParams<f32>> {
        Some(prm)
    }
}

impl Compute for f64 {
    #[inline(always)]
    fn of<E: Elem>(e: E) -> Self {
        e.to_f64()
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    #[inline(always)]
    fn as_f32(_: &AslParams<Self>) -> Option<&AslParams<f32>> {
        None
    }
}

/// The multi-label ASL parameters in the compute type, with the decisions that do not depend on
/// the element taken once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AslParams<F> {
    pub gamma_pos: F,
    pub gamma_neg: F,
    pub clip: F,
    /// `ln(eps)`: the eps clamp `max(p, eps)` is applied in log space, `max(log p, ln eps)`.
    pub ln_eps: F,
    /// Whether the focal weight exists at all (`gamma_pos > 0 || gamma_neg > 0`).
    pub focal: bool,
    /// Whether the focal weight is a constant for the gradient.
    pub detach: bool,
    /// `gamma_pos` / `gamma_neg` as small integers when they are, so `powi` replaces `powf`.
    pub gamma_pos_int: Option<i32>,
    pub gamma_neg_int: Option<i32>,
}

/// `g` as a small non-negative integer when it is one, so `powi` can replace `powf`.
pub(crate) fn small_int(g: f64) -> Option<i32> {
    (g.fract() == 0.0 && (0.0..=64.0).contains(&g)).then_some(g as i32)
}

impl<F: Compute> AslParams<F> {
    pub(crate) fn new(cfg: &AslConfig) -> Self {
        let gamma_pos = F::from_f64(cfg.gamma_pos);
        let gamma_neg = F::from_f64(cfg.gamma_neg);
        AslParams {
            gamma_pos,
            gamma_neg,
            clip: F::from_f64(cfg.clip),
            ln_eps: F::from_f64(cfg.eps).ln(),
            focal: cfg.gamma_pos > 0.0 || cfg.gamma_neg > 0.0,
            detach: cfg.detach_focal_weight,
            gamma_pos_int: small_int(cfg.gamma_pos),
            gamma_neg_int: small_int(cfg.gamma_neg),
        }
    }
}

/// `b^g` through `powi` when `g` is a small integer (`gi`). Both give `0^0 = 1`, `0^g = 0`.
#[inline(always)]
pub(crate) fn pow_known<F: Float>(b: F, g: F, gi: Option<i32>) -> F {
    match gi {
        Some(i) => b.powi(i),
        None => b.powf(g),
    }
}

/// `log(q)` for `q = 1 - p_m` (the clipped `p_neg`): near 1, `log1p(-p_m)` from the accurately
/// known `p_m`, because `q = (1 - p) + clip` has already rounded away the digits that
/// `log(q) ~ q - 1` needs.
#[inline(always)]
fn log_one_minus<F: Float>(q: F, p_m: F) -> F {
    if q > F::from(0.75).unwrap_or_else(F::one) {
        (-p_m).ln_1p()
    } else {
        q.ln()
    }
}

/// Loss and `d loss / d x` of one element of the multi-label ASL (before reduction).
///
/// With `p = sigmoid(x)`, the shifted probability `p_m = max(p - clip, 0)` and
/// `p_neg = min(1 - p + clip, 1)` (`1 - p` without clip), the element loss is
/// `-(y log(max(p, eps)) + (1 - y) log(max(p_neg, eps))) * w` with the focal weight
/// `w = base^gamma`, `base = y (1 - p) + (1 - y) p_m`, `gamma = y gamma_pos + (1 - y) gamma_neg`
/// (`w = 1` without focusing), as in the reference implementation. Where a clamp is active its
/// branch has zero derivative, as autograd computes it.
///
/// `p` and `1 - p` come from one `exp(-|x|)`; `1 - p` is never formed by subtraction (it rounds
/// to 0 in f32 above x ~ 16), and `log p = -softplus(-x)`, `log(1 - p) = -softplus(x)` come from
/// `ln_1p`, computed only on the branches that need them. Hard targets (exactly 0 or 1, nearly
/// every element in practice) take short paths; soft targets take the general formula.
#[inline(always)]
pub(crate) fn asl_element<F: Float>(x: F, y: F, prm: &AslParams<F>) -> (F, F) {
    let zero = F::zero();
    let s = Sigmoid::new(x);
    // The shifted probability p_m = max(p - clip, 0) = 1 - p_neg.
    let p_m = if prm.clip > zero {
        (s.p - prm.clip).max(zero)
    } else {
        s.p
    };
    if y == zero {
        hard_negative(&s, p_m, prm)
    } else if y == F::one() {
        hard_positive(&s, prm)
    } else {
        soft_target(&s, y, p_m, prm)
    }
}

/// `p = sigmoid(x)` and `1 - p` from one `exp(-|x|)`, with their logs on demand.
struct Sigmoid<F> {
    x: F,
    /// `exp(-|x|)`, in (0, 1].
    e: F,
    p: F,
    /// `1 - p`, never formed by subtraction.
    sn: F,
}

impl<F: Float> Sigmoid<F> {
    #[inline(always)]
    fn new(x: F) -> Self {
        let one = F::one();
        let e = (-x.abs()).exp();
        let inv = one / (one + e);
        let (p, sn) = if x >= F::zero() {
            (inv, e * inv)
        } else {
            (e * inv, inv)
        };
        Sigmoid { x, e, p, sn }
    }

    /// `log p = -softplus(-x)`.
    #[inline(always)]
    fn log_p(&self) -> F {
        let l = self.e.ln_1p();
        if self.x >= F::zero() {
            -l
        } else {
            self.x - l
        }
    }

    /// `log(1 - p) = -softplus(x)`.
    #[inline(always)]
    fn log_sn(&self) -> F {
        let l = self.e.ln_1p();
        if self.x >= F::zero() {
            -self.x - l
        } else {
            -l
        }
    }
}

/// The eps clamp in log space: `max(log v, ln eps)` of a (log, derivative) pair, with zero
/// derivative where it is active. Written so that a NaN passes through (a NaN logit must give a
/// NaN loss).
#[inline(always)]
fn clamp_log<F: Float>((v, d): (F, F), prm: &AslParams<F>) -> (F, F) {
    if v < prm.ln_eps {
        (prm.ln_eps, F::zero())
    } else {
        (v, d)
    }
}

/// The clipped negative term `log(p_neg)`, `p_neg = min(1 - p + clip, 1)` (or `1 - p` without
/// clip), and its derivative; `None` where `p <= clip` (`p_neg = 1`: no loss, no gradient).
#[inline(always)]
fn negative_log<F: Float>(s: &Sigmoid<F>, p_m: F, prm: &AslParams<F>) -> Option<(F, F)> {
    if prm.clip > F::zero() {
        let q = s.sn + prm.clip;
        if q > F::one() {
            None
        } else {
            Some(clamp_log((log_one_minus(q, p_m), -s.p * s.sn / q), prm))
        }
    } else {
        Some(clamp_log((s.log_sn(), -s.p), prm))
    }
}

/// Loss and derivative of the log term `a` (derivative `da`) weighted by the focal weight `w`
/// (derivative `dw`, ignored when the weight is detached).
#[inline(always)]
fn weighted<F: Float>(a: F, da: F, w: F, dw: F, prm: &AslParams<F>) -> (F, F) {
    let dw = if prm.detach { F::zero() } else { dw };
    (-a * w, -(da * w + a * dw))
}

/// [`asl_element`] for `y = 0`.
#[inline(always)]
fn hard_negative<F: Float>(s: &Sigmoid<F>, p_m: F, prm: &AslParams<F>) -> (F, F) {
    let zero = F::zero();
    let Some((a, da)) = negative_log(s, p_m, prm) else {
        return (zero, zero);
    };
    if !prm.focal {
        return (-a, -da);
    }
    let (w, dw) = if prm.gamma_neg == zero {
        (F::one(), zero)
    } else if p_m == zero {
        (zero, zero)
    } else {
        // dw/dx = gamma_neg p_m^(gamma_neg-1) p (1-p), written as gamma_neg w (p / p_m) (1-p):
        // p_m^(gamma_neg-1) alone overflows f32 for a tiny p and gamma_neg < 1, the product
        // does not (p / p_m is exactly 1 without clip).
        let w = pow_known(p_m, prm.gamma_neg, prm.gamma_neg_int);
        (w, prm.gamma_neg * w * (s.p / p_m) * s.sn)
    };
    weighted(a, da, w, dw, prm)
}

/// [`asl_element`] for `y = 1`.
#[inline(always)]
fn hard_positive<F: Float>(s: &Sigmoid<F>, prm: &AslParams<F>) -> (F, F) {
    let (a, da) = clamp_log((s.log_p(), s.sn), prm);
    if !prm.focal {
        return (-a, -da);
    }
    // w = (1-p)^gamma_pos; dw/dx = gamma_pos (1-p)^(gamma_pos-1) (-p (1-p)) = -gamma_pos p w
    let w = pow_known(s.sn, prm.gamma_pos, prm.gamma_pos_int);
    weighted(a, da, w, -prm.gamma_pos * s.p * w, prm)
}

/// [`asl_element`] for a soft target `y` in (0, 1): both log terms, and a focal weight whose
/// base and exponent are mixtures.
#[inline(always)]
fn soft_target<F: Float>(s: &Sigmoid<F>, y: F, p_m: F, prm: &AslParams<F>) -> (F, F) {
    let (zero, one) = (F::zero(), F::one());
    let (p, sn) = (s.p, s.sn);
    let (l_pos, d_pos) = clamp_log((s.log_p(), sn), prm);
    let (l_neg, d_neg) = negative_log(s, p_m, prm).unwrap_or((zero, zero));
    let a = y * l_pos + (one - y) * l_neg;
    let da = y * d_pos + (one - y) * d_neg;
    if !prm.focal {
        return (-a, -da);
    }
    let above_clip = prm.clip <= zero || p > prm.clip;
    let base = y * sn + (one - y) * p_m;
    let gamma = y * prm.gamma_pos + (one - y) * prm.gamma_neg;
    let dbase = -y * p * sn + if above_clip { (one - y) * p * sn } else { zero };
    // base >= 0; powf gives 0^0 = 1 and 0^g = 0.
    let w = base.powf(gamma);
    // gamma base^(gamma-1) dbase as gamma w (dbase / base): the ratio stays bounded for a soft
    // target, base^(gamma-1) alone can overflow.
    let dw = if gamma == zero || dbase == zero || base == zero {
        zero
    } else {
        gamma * w * (dbase / base)
    };
    weighted(a, da, w, dw, prm)
}
