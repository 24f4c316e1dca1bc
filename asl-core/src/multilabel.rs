//! Multi-label (sigmoid) asymmetric loss: the loss, its fused pass (the CPU kernel over chunks of
//! elements, and the CUDA launch plan) for the generic op of [`crate::op`], and the composed
//! reference built from candle tensor ops. Its configuration, [`AslConfig`], is in
//! [`crate::config`].
//!
//! Paper: Ben-Baruch, Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021
//! (arXiv 2009.14119), equations (1)-(4). Reference code: Alibaba-MIIL/ASL
//! `src/loss_functions/losses.py` (`AsymmetricLoss`, `AsymmetricLossOptimized`) and timm
//! `timm/loss/asymmetric_loss.py`.

use candle_core::{DType, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::config::{AslConfig, Reduction};
use crate::dispatch;
use crate::dtype::{compute_dtype, Logit, Slice};
use crate::error::AslError;
use crate::fast::{self, FastParams, BLOCK};
use crate::math::{asl_element, AslParams, Compute, Elem, CHUNK};
use crate::op::{FusedLoss, HostPass, Job, Losses};

/// The multi-label asymmetric loss.
///
/// `forward` runs the fused CPU kernel (one pass computes the loss and, when the logits are part
/// of an autograd graph, the gradient); `forward_composed` computes the same math from candle
/// tensor ops and is the readable reference the kernel is tested against.
///
/// ```
/// use asl_core::{AslConfig, AsymmetricLoss};
/// use candle_core::{Device, Tensor, Var};
/// # fn main() -> candle_core::Result<()> {
/// let logits = Var::new(&[[2.0f32, -1.0, 0.5]], &Device::Cpu)?;
/// let targets = Tensor::new(&[[1.0f32, 0.0, 1.0]], &Device::Cpu)?;
/// let loss = AsymmetricLoss::new(AslConfig::default()).forward(logits.as_tensor(), &targets)?;
/// let grads = loss.backward()?;
/// assert_eq!(grads.get(&logits).unwrap().dims(), &[1, 3]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AsymmetricLoss {
    cfg: AslConfig,
}

impl AsymmetricLoss {
    /// A loss with the given configuration (checked when the loss is evaluated).
    pub fn new(cfg: AslConfig) -> Self {
        AsymmetricLoss { cfg }
    }

    /// The configuration.
    pub fn config(&self) -> &AslConfig {
        &self.cfg
    }

    /// The loss of `logits` `[N, C]` (f16, bf16, f32 or f64) against `targets` of the same shape
    /// (0/1 or soft labels in [0, 1]; any float dtype, or u8/u32/i64), computed by the fused kernel.
    ///
    /// The result is f32 (f64 for f64 logits): a scalar, or `[N, C]` for `Reduction::None`.
    /// Targets receive no gradient. When the logits are part of an autograd graph, this pass
    /// also computes their gradient and keeps it (one `N x C` buffer) until `backward`, which
    /// only scales it; otherwise nothing per element is allocated.
    pub fn forward(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        check_inputs(&self.cfg, logits, targets)?;
        dispatch::apply(self.cfg, logits, targets)
    }

    /// The same loss composed from candle tensor ops, with candle's autograd for the gradient.
    /// Slower and memory-hungry; kept as the readable reference for the fused kernel. It
    /// computes in f64 whatever the logits' dtype (candle has no `log1p`, so in f32 the composed
    /// `log(1 + e)` would lose the small terms the fused kernel keeps) and returns the same dtype
    /// and shape as [`forward`](Self::forward).
    pub fn forward_composed(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        check_inputs(&self.cfg, logits, targets)?;
        check_target_values(targets)?;
        let cfg = &self.cfg;
        let x = logits.to_dtype(DType::F64)?;
        let y = targets.to_dtype(DType::F64)?;
        let not_y = y.affine(-1.0, 1.0)?;
        // log p = -softplus(-x), log(1 - p) = -softplus(x); p and 1 - p as their exponentials
        // (1 - p is never formed by subtraction, not even in the backward of a sigmoid op).
        let log_p = softplus(&x.neg()?)?.neg()?;
        let log_sn = softplus(&x)?.neg()?;
        let p = log_p.exp()?;
        let sn = log_sn.exp()?;
        let ln_eps = cfg.eps.ln();

        // log(max(p, eps)) and log(max(p_neg, eps)), p_neg = min(1 - p + clip, 1).
        let log_p = log_p.maximum(ln_eps)?;
        let log_p_neg = if cfg.clip > 0.0 {
            sn.affine(1.0, cfg.clip)?
                .minimum(1.0)?
                .maximum(cfg.eps)?
                .log()?
        } else {
            log_sn.maximum(ln_eps)?
        };
        let a = ((&y * log_p)? + (&not_y * log_p_neg)?)?;

        let loss = if cfg.gamma_pos > 0.0 || cfg.gamma_neg > 0.0 {
            // 1 - pt: 1 - p for positives, the shifted probability max(p - clip, 0) for negatives.
            let p_m = if cfg.clip > 0.0 {
                p.affine(1.0, -cfg.clip)?.relu()?
            } else {
                p.clone()
            };
            let base = ((&y * &sn)? + (&not_y * p_m)?)?;
            let gamma = y.affine(cfg.gamma_pos - cfg.gamma_neg, cfg.gamma_neg)?;
            let w = pow_composed(&base, &gamma)?;
            let w = if cfg.detach_focal_weight {
                w.detach()
            } else {
                w
            };
            (a * w)?.neg()?
        } else {
            a.neg()?
        };
        let (rows, _) = loss.dims2()?;
        let loss = match cfg.reduction {
            Reduction::None => loss,
            r => loss
                .sum_all()?
                .affine(r.scale(rows, loss.elem_count()), 0.0)?,
        };
        loss.to_dtype(compute_dtype(logits.dtype()))
    }
}

/// `softplus(z) = max(z, 0) + log1p(exp(-|z|))`, composed.
pub(crate) fn softplus(z: &Tensor) -> Result<Tensor> {
    z.relu()? + log1p_small(&z.abs()?.neg()?.exp()?)?
}

/// `log(1 + e)` for `e` in [0, 1] without losing small `e` (candle has no `log1p`): the series
/// `e - e^2/2 + e^3/3` below 1e-4 (error below e^4/4), `log(1 + e)` above (relative error about
/// 1e-12 in f64). Both branches are finite, so the gradient has no NaN.
fn log1p_small(e: &Tensor) -> Result<Tensor> {
    let e2 = e.sqr()?;
    let series = ((e - e2.affine(0.5, 0.0)?)? + (&e2 * e)?.affine(1.0 / 3.0, 0.0)?)?;
    e.lt(1e-4)?.where_cond(&series, &e.affine(1.0, 1.0)?.log()?)
}

/// `b^g` for `b >= 0` with `0^0 = 1`, `0^g = 0` and no NaN in the gradient (candle's `pow` is
/// `exp(g log b)`, which is NaN at 0).
pub(crate) fn pow_composed(b: &Tensor, g: &Tensor) -> Result<Tensor> {
    let positive = b.gt(0.0)?;
    let safe_b = positive.where_cond(b, &b.ones_like()?)?;
    let pow = (g * safe_b.log()?)?.exp()?;
    let at_zero = g.eq(0.0)?.to_dtype(b.dtype())?;
    positive.where_cond(&pow, &at_zero)
}

const LOGITS_DTYPES: &str = "f16, bf16, f32, f64";
const TARGET_DTYPES: &str = "u8, u32, i64, f16, bf16, f32, f64";

/// Shape, dtype, device and configuration checks shared by both paths.
fn check_inputs(cfg: &AslConfig, logits: &Tensor, targets: &Tensor) -> Result<()> {
    cfg.validate()?;
    if logits.rank() != 2 || logits.elem_count() == 0 {
        return Err(AslError::Shape {
            what: "ASL logits",
            expected: "a non-empty [N, C] tensor".into(),
            got: logits.shape().clone(),
        }
        .into());
    }
    if targets.shape() != logits.shape() {
        return Err(AslError::Shape {
            what: "ASL targets",
            expected: format!("the logits' shape {:?}", logits.dims()),
            got: targets.shape().clone(),
        }
        .into());
    }
    if !matches!(
        logits.dtype(),
        DType::F16 | DType::BF16 | DType::F32 | DType::F64
    ) {
        return Err(AslError::DType {
            what: "ASL logits",
            dtype: logits.dtype(),
            accepted: LOGITS_DTYPES,
        }
        .into());
    }
    if !matches!(
        targets.dtype(),
        DType::U8 | DType::U32 | DType::I64 | DType::F16 | DType::BF16 | DType::F32 | DType::F64
    ) {
        return Err(AslError::DType {
            what: "ASL targets",
            dtype: targets.dtype(),
            accepted: TARGET_DTYPES,
        }
        .into());
    }
    if !logits.device().same_device(targets.device()) {
        return Err(candle_core::Error::msg(format!(
            "ASL logits are on {:?} but targets on {:?}",
            logits.device().location(),
            targets.device().location()
        )));
    }
    Ok(())
}

/// The composed path's target check (the fused kernel checks while it computes).
fn check_target_values(targets: &Tensor) -> Result<()> {
    let cols = targets.dim(1)?;
    let values = targets
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    match values.iter().position(|v| !(0.0..=1.0).contains(v)) {
        None => Ok(()),
        Some(i) => Err(AslError::TargetOutOfRange {
            row: i / cols,
            col: i % cols,
            value: values[i],
        }
        .into()),
    }
}

/// One pass over the data: loss, per-element losses and gradient, rayon-parallel over fixed chunks.
fn multilabel_pass<F: Compute, L: Elem, T: Elem>(
    x: &[L],
    y: &[T],
    cols: usize,
    prm: &AslParams<F>,
    per_element: bool,
    want_grad: bool,
    grad_scale: F,
) -> std::result::Result<HostPass<F>, AslError> {
    let n = x.len();
    let mut grad = if want_grad {
        vec![F::zero(); n]
    } else {
        Vec::new()
    };
    let mut per_el = if per_element {
        vec![F::zero(); n]
    } else {
        Vec::new()
    };
    let mut grad_chunks = grad.chunks_mut(CHUNK);
    let mut loss_chunks = per_el.chunks_mut(CHUNK);
    let jobs: Vec<_> = (0..n.div_ceil(CHUNK))
        .map(|c| (c * CHUNK, grad_chunks.next(), loss_chunks.next()))
        .collect();
    let partial_sums = jobs
        .into_par_iter()
        .map(|(start, grad, loss)| {
            let end = (start + CHUNK).min(n);
            multilabel_chunk(
                &x[start..end],
                &y[start..end],
                start,
                cols,
                prm,
                grad,
                loss,
                grad_scale,
            )
        })
        .collect::<std::result::Result<Vec<f64>, AslError>>()?;
    let sum = partial_sums.iter().sum();
    Ok(HostPass {
        losses: if per_element {
            Losses::PerItem(per_el)
        } else {
            Losses::Sum(sum)
        },
        grad,
    })
}

/// One chunk, element by element (the scalar kernel).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn scalar_elements<F: Compute, L: Elem, T: Elem>(
    x: &[L],
    y: &[T],
    start: usize,
    cols: usize,
    prm: &AslParams<F>,
    mut grad: Option<&mut [F]>,
    mut loss: Option<&mut [F]>,
    grad_scale: F,
) -> std::result::Result<f64, AslError> {
    let mut acc = 0f64;
    for (i, (&xi, &yi)) in x.iter().zip(y).enumerate() {
        let t = F::of(yi);
        if !(t >= F::zero() && t <= F::one()) {
            return Err(AslError::TargetOutOfRange {
                row: (start + i) / cols,
                col: (start + i) % cols,
                value: yi.to_f64(),
            });
        }
        let (l, d) = asl_element(F::of(xi), t, prm);
        acc += l.as_f64();
        if let Some(g) = grad.as_deref_mut() {
            g[i] = d * grad_scale;
        }
        if let Some(o) = loss.as_deref_mut() {
            o[i] = l;
        }
    }
    Ok(acc)
}

/// One chunk: full blocks of hard targets through the vectorised kernel when the configuration
/// allows it, everything else through the scalar kernel. The sum is accumulated in f64 in a fixed
/// order.
#[allow(clippy::too_many_arguments)]
fn multilabel_chunk<F: Compute, L: Elem, T: Elem>(
    x: &[L],
    y: &[T],
    start: usize,
    cols: usize,
    prm: &AslParams<F>,
    mut grad: Option<&mut [F]>,
    mut loss: Option<&mut [F]>,
    grad_scale: F,
) -> std::result::Result<f64, AslError> {
    let Some(fast) = F::as_f32(prm).and_then(FastParams::new) else {
        return scalar_elements(x, y, start, cols, prm, grad, loss, grad_scale);
    };
    let kernel = fast::block_kernel();
    let mut acc = 0f64;
    let (mut xb, mut yb) = ([0f32; BLOCK], [0f32; BLOCK]);
    let (mut lb, mut gb) = ([0f32; BLOCK], [0f32; BLOCK]);
    for b in (0..x.len()).step_by(BLOCK) {
        let end = (b + BLOCK).min(x.len());
        let (xs, ys) = (&x[b..end], &y[b..end]);
        let full = xs.len() == BLOCK;
        if full {
            for i in 0..BLOCK {
                xb[i] = xs[i].to_f32();
                yb[i] = ys[i].to_f32();
            }
        }
        // A fold, not `all`: no early exit, so the check vectorises.
        let hard = |yb: &[f32; BLOCK]| {
            yb.iter()
                .fold(true, |ok, &t| ok & ((t == 0.0) | (t == 1.0)))
        };
        if !full || !hard(&yb) {
            acc += scalar_elements(
                xs,
                ys,
                start + b,
                cols,
                prm,
                grad.as_deref_mut().map(|g| &mut g[b..end]),
                loss.as_deref_mut().map(|o| &mut o[b..end]),
                grad_scale,
            )?;
            continue;
        }
        kernel(&xb, &yb, &fast, &mut lb, &mut gb);
        let mut lanes = [0f64; 8];
        for c in lb.chunks_exact(8) {
            for (lane, &v) in lanes.iter_mut().zip(c) {
                *lane += v as f64;
            }
        }
        acc += lanes.iter().sum::<f64>();
        if let Some(g) = grad.as_deref_mut() {
            for (o, &v) in g[b..end].iter_mut().zip(&gb) {
                *o = F::from_f32(v) * grad_scale;
            }
        }
        if let Some(o) = loss.as_deref_mut() {
            for (o, &v) in o[b..end].iter_mut().zip(&lb) {
                *o = F::from_f32(v);
            }
        }
    }
    Ok(acc)
}

/// The multi-label loss in the fused op.
impl FusedLoss for AslConfig {
    const NAME: &'static str = "asymmetric-loss";
    const LOGITS: &'static str = "ASL logits";
    const TARGETS: &'static str = "ASL targets";

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn reduction_scale(&self, rows: usize, cols: usize) -> f64 {
        self.reduction.scale(rows, rows * cols)
    }

    fn output_shape(&self, rows: usize, cols: usize) -> Shape {
        if self.reduction == Reduction::None {
            Shape::from((rows, cols))
        } else {
            Shape::from(())
        }
    }

    fn cpu_pass<X: Logit>(&self, x: &[X], t: Slice, job: Job) -> Result<HostPass<X::Compute>> {
        let prm = AslParams::new(self);
        let per_element = self.reduction == Reduction::None;
        let gs = Compute::from_f64(job.scale);
        macro_rules! pass {
            ($y:expr) => {
                multilabel_pass(x, $y, job.cols, &prm, per_element, job.want_grad, gs)
            };
        }
        Ok(match t {
            Slice::U8(y) => pass!(y),
            Slice::U32(y) => pass!(y),
            Slice::I64(y) => pass!(y),
            Slice::F16(y) => pass!(y),
            Slice::BF16(y) => pass!(y),
            Slice::F32(y) => pass!(y),
            Slice::F64(y) => pass!(y),
        }?)
    }

    #[cfg(feature = "cuda")]
    fn plan(
        &self,
        logits: DType,
        targets: DType,
        rows: usize,
        cols: usize,
    ) -> Result<crate::cuda_launch::LossPlan> {
        crate::cuda_launch::LossPlan::multilabel(self, logits, targets, rows, cols)
    }

    #[cfg(feature = "cuda")]
    fn target_error(&self, targets: Slice, i: usize, cols: usize) -> Result<AslError> {
        let value = match targets {
            Slice::U8(v) => v[i].to_f64(),
            Slice::U32(v) => v[i].to_f64(),
            Slice::I64(v) => v[i].to_f64(),
            Slice::F16(v) => v[i].to_f64(),
            Slice::BF16(v) => v[i].to_f64(),
            Slice::F32(v) => v[i].to_f64(),
            Slice::F64(v) => v[i].to_f64(),
        };
        Ok(AslError::TargetOutOfRange {
            row: i / cols,
            col: i % cols,
            value,
        })
    }
}
