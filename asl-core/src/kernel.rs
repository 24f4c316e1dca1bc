//! Scalar math shared by the fused kernels: the per-element ASL value and gradient, the types the
//! kernels compute in, and access to candle's CPU storage.
//!
//! The per-element functions here are the single source of truth for the fused CPU kernel; a
//! CUDA kernel (`kernels/asl_math.cuh`) mirrors them line by line and is tested against them.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};
use half::{bf16, f16};
use num_traits::Float;
use rayon::prelude::*;

use crate::error::AslError;

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
    /// The vectorised block kernel's parameters, where this compute type has one (f32).
    fn fast_params(prm: &AslParams<Self>) -> Option<crate::fast::FastParams>;
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    fn into_cache(v: Vec<Self>) -> CachedGrad;
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
    fn fast_params(prm: &AslParams<Self>) -> Option<crate::fast::FastParams> {
        crate::fast::FastParams::new(prm)
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn into_cache(v: Vec<Self>) -> CachedGrad {
        CachedGrad::F32(v)
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
    fn fast_params(_: &AslParams<Self>) -> Option<crate::fast::FastParams> {
        None
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    fn into_cache(v: Vec<Self>) -> CachedGrad {
        CachedGrad::F64(v)
    }
}

/// A gradient computed by a fused forward pass (already scaled by the reduction), waiting for
/// the op's `bwd`.
pub(crate) enum CachedGrad {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// On the GPU, in the logits' dtype (the CUDA kernels write it there directly).
    #[cfg(feature = "cuda")]
    Cuda(candle_core::CudaStorage),
}

/// Where a fused op keeps the gradient between its forward and its backward. The forward pass
/// computes the gradient in the same sweep as the loss, so `bwd` only has to scale it.
#[derive(Default)]
pub(crate) struct GradCache(Mutex<Option<CachedGrad>>);

fn poisoned() -> candle_core::Error {
    candle_core::Error::msg("fused loss: gradient cache lock poisoned by a panic in another thread")
}

impl GradCache {
    pub(crate) fn put<F: Compute>(&self, g: Vec<F>) -> Result<()> {
        *self.0.lock().map_err(|_| poisoned())? = Some(F::into_cache(g));
        Ok(())
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn put_cuda(&self, g: candle_core::CudaStorage) -> Result<()> {
        *self.0.lock().map_err(|_| poisoned())? = Some(CachedGrad::Cuda(g));
        Ok(())
    }

    /// The cached gradient, if the forward pass left one (a second backward over the same graph
    /// finds none and must recompute).
    pub(crate) fn take(&self) -> Result<Option<CachedGrad>> {
        Ok(self.0.lock().map_err(|_| poisoned())?.take())
    }

    pub(crate) fn take_required(&self) -> Result<CachedGrad> {
        self.take()?
            .ok_or_else(|| candle_core::Error::msg("fused loss: gradient pass produced nothing"))
    }
}

/// Chains the upstream gradient of the op's output into the cached `d output / d logits` and
/// returns it in the logits' dtype and device. For a reduced (scalar) loss this scales in place;
/// for `Reduction::None` the upstream gradient has the output's shape (`[N, C]`, or `[N]` for a
/// per-sample loss, broadcast over the classes). A gradient cached on the GPU stays there.
pub(crate) fn chain_upstream(
    cached: CachedGrad,
    reduction: crate::Reduction,
    grad_res: &Tensor,
    logits: &Tensor,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    let cached = match cached {
        CachedGrad::Cuda(g) => return crate::cuda::chain_upstream(g, reduction, grad_res, logits),
        host => host,
    };
    let shape = logits.shape().clone();
    let grad = if reduction == crate::Reduction::None {
        let g = match cached {
            CachedGrad::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
            CachedGrad::F64(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
            #[cfg(feature = "cuda")]
            CachedGrad::Cuda(_) => unreachable!("chained on the GPU above"),
        };
        let mut up = grad_res.to_device(&Device::Cpu)?.to_dtype(g.dtype())?;
        while up.rank() < g.rank() {
            up = up.unsqueeze(up.rank())?;
        }
        g.broadcast_mul(&up)?
    } else {
        let s = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        match cached {
            CachedGrad::F32(v) => Tensor::from_vec(scaled(v, s as f32), shape, &Device::Cpu)?,
            CachedGrad::F64(v) => Tensor::from_vec(scaled(v, s), shape, &Device::Cpu)?,
            #[cfg(feature = "cuda")]
            CachedGrad::Cuda(_) => unreachable!("chained on the GPU above"),
        }
    };
    grad.to_dtype(logits.dtype())?.to_device(logits.device())
}

/// Multiplies in place (the usual upstream gradient of a scalar loss is exactly 1: no work).
fn scaled<F: Compute>(mut v: Vec<F>, s: F) -> Vec<F> {
    if s != F::one() {
        v.par_iter_mut().for_each(|g| *g = *g * s);
    }
    v
}

/// The compute dtype for a logits dtype.
pub(crate) fn compute_dtype(logits: DType) -> DType {
    if logits == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// A contiguous view of a CPU storage, typed.
pub(crate) enum Slice<'a> {
    U8(&'a [u8]),
    U32(&'a [u32]),
    I64(&'a [i64]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// Borrows the elements of a contiguous tensor's storage (callers make inputs contiguous first).
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &'static str) -> Result<Slice<'a>> {
    let (start, end) = l.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::msg(format!(
            "{what}: internal error, expected a contiguous layout"
        ))
    })?;
    Ok(match s {
        CpuStorage::U8(v) => Slice::U8(&v[start..end]),
        CpuStorage::U32(v) => Slice::U32(&v[start..end]),
        CpuStorage::I64(v) => Slice::I64(&v[start..end]),
        CpuStorage::F16(v) => Slice::F16(&v[start..end]),
        CpuStorage::BF16(v) => Slice::BF16(&v[start..end]),
        CpuStorage::F32(v) => Slice::F32(&v[start..end]),
        CpuStorage::F64(v) => Slice::F64(&v[start..end]),
        other => {
            return Err(AslError::DType {
                what,
                dtype: other.dtype(),
                accepted: "u8, u32, i64, f16, bf16, f32, f64",
            }
            .into())
        }
    })
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
    pub(crate) fn new(cfg: &crate::AslConfig) -> Self {
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
/// Follows `shared/spec/asl-loss.md` section 1 exactly, with the clamps of the reference:
/// `log(max(p, eps))`, `log(max(min(1 - p + clip, 1), eps))`, `w = (1 - pt)^gamma`. Where a clamp
/// is active its branch has zero derivative, as autograd computes it.
///
/// `p` and `1 - p` come from one `exp(-|x|)`; `1 - p` is never formed by subtraction (it rounds
/// to 0 in f32 above x ~ 16), and `log p = -softplus(-x)`, `log(1 - p) = -softplus(x)` come from
/// `ln_1p`, computed only on the branches that need them. Hard targets (exactly 0 or 1, nearly
/// every element in practice) take short paths; soft targets take the general formula.
#[inline(always)]
pub(crate) fn asl_element<F: Float>(x: F, y: F, prm: &AslParams<F>) -> (F, F) {
    let zero = F::zero();
    let one = F::one();
    let e = (-x.abs()).exp(); // in (0, 1]
    let inv = one / (one + e);
    let x_pos = x >= zero;
    let (p, sn) = if x_pos {
        (inv, e * inv)
    } else {
        (e * inv, inv)
    };
    let log_p = || {
        let l = e.ln_1p();
        if x_pos {
            -l
        } else {
            x - l
        }
    };
    let log_sn = || {
        let l = e.ln_1p();
        if x_pos {
            -x - l
        } else {
            -l
        }
    };
    // The eps clamp in log space: max(log v, ln eps), with zero derivative where it is active.
    // Written so that a NaN passes through (a NaN logit must give a NaN loss).
    let clamp = |(v, d): (F, F)| {
        if v < prm.ln_eps {
            (prm.ln_eps, zero)
        } else {
            (v, d)
        }
    };
    // The shifted probability p_m = max(p - clip, 0) = 1 - p_neg.
    let p_m = if prm.clip > zero {
        (p - prm.clip).max(zero)
    } else {
        p
    };
    // The clipped negative term log(p_neg), p_neg = min(1 - p + clip, 1) (or 1 - p without clip),
    // and its derivative; `None` where p <= clip (p_neg = 1: no loss, no gradient).
    let negative_log = || {
        if prm.clip > zero {
            let q = sn + prm.clip;
            if q > one {
                None
            } else {
                Some(clamp((log_one_minus(q, p_m), -p * sn / q)))
            }
        } else {
            Some(clamp((log_sn(), -p)))
        }
    };

    let (a, da, w, dw) = if y == zero {
        let Some((a, da)) = negative_log() else {
            return (zero, zero);
        };
        if !prm.focal {
            return (-a, -da);
        }
        let (w, dw) = if prm.gamma_neg == zero {
            (one, zero)
        } else if p_m == zero {
            (zero, zero)
        } else {
            // dw/dx = gamma_neg p_m^(gamma_neg-1) p (1-p), written as gamma_neg w (p / p_m) (1-p):
            // p_m^(gamma_neg-1) alone overflows f32 for a tiny p and gamma_neg < 1, the product
            // does not (p / p_m is exactly 1 without clip).
            let w = pow_known(p_m, prm.gamma_neg, prm.gamma_neg_int);
            (w, prm.gamma_neg * w * (p / p_m) * sn)
        };
        (a, da, w, dw)
    } else if y == one {
        let (a, da) = clamp((log_p(), sn));
        if !prm.focal {
            return (-a, -da);
        }
        // w = (1-p)^gamma_pos; dw/dx = gamma_pos (1-p)^(gamma_pos-1) (-p (1-p)) = -gamma_pos p w
        let w = pow_known(sn, prm.gamma_pos, prm.gamma_pos_int);
        (a, da, w, -prm.gamma_pos * p * w)
    } else {
        // Soft target: both log terms, and a focal weight whose base and exponent are mixtures.
        let (l_pos, d_pos) = clamp((log_p(), sn));
        let (l_neg, d_neg) = negative_log().unwrap_or((zero, zero));
        let a = y * l_pos + (one - y) * l_neg;
        let da = y * d_pos + (one - y) * d_neg;
        if !prm.focal {
            return (-a, -da);
        }
        let above_clip = prm.clip <= zero || p > prm.clip;
        let base = y * sn + (one - y) * p_m;
        let gamma = y * prm.gamma_pos + (one - y) * prm.gamma_neg;
        let dbase = -y * p * sn + if above_clip { (one - y) * p * sn } else { zero };
        let w = base.powf(gamma); // base >= 0; powf gives 0^0 = 1 and 0^g = 0
                                  // gamma base^(gamma-1) dbase as gamma w (dbase / base): the ratio stays bounded for a
                                  // soft target, base^(gamma-1) alone can overflow.
        let dw = if gamma == zero || dbase == zero || base == zero {
            zero
        } else {
            gamma * w * (dbase / base)
        };
        (a, da, w, dw)
    };

    let dw = if prm.detach { zero } else { dw };
    (-a * w, -(da * w + a * dw))
}
