//! Single-label (softmax) asymmetric loss with label smoothing: the loss, its fused pass (the
//! CPU row kernel, and the CUDA launch plan) for the generic op of [`crate::op`], and the composed
//! reference built from candle tensor ops. Its configuration, [`SingleLabelConfig`], is in
//! [`crate::config`].
//!
//! Reference: Alibaba-MIIL/ASL `src/loss_functions/losses.py`, `ASLSingleLabel`: a softmax over
//! the `K` classes, the label-smoothed target `one_hot * (1 - eps) + eps / K`, and the focal
//! weights `(1 - p_target)^gamma_pos` on the target class and `p_k^gamma_neg` on the others. The
//! focal weights are differentiated, as in the reference.

use candle_core::{DType, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::config::{Reduction, SingleLabelConfig};
use crate::dispatch;
use crate::dtype::{compute_dtype, Logit, Slice};
use crate::error::AslError;
use crate::math::{pow_known, small_int, Compute, Elem, CHUNK};
use crate::multilabel::pow_composed;
use crate::op::{FusedLoss, HostPass, Job, Losses};

/// The single-label asymmetric loss: softmax cross-entropy with asymmetric focusing and label
/// smoothing. With `gamma_pos = gamma_neg = eps = 0` it is exactly cross-entropy.
///
/// ```
/// use asl_core::{AslSingleLabel, SingleLabelConfig};
/// use candle_core::{Device, Tensor};
/// # fn main() -> candle_core::Result<()> {
/// let logits = Tensor::new(&[[2.0f32, -1.0, 0.5], [0.1, 0.2, 0.3]], &Device::Cpu)?;
/// let classes = Tensor::new(&[0u32, 2], &Device::Cpu)?;
/// let loss = AslSingleLabel::new(SingleLabelConfig::default()).forward(&logits, &classes)?;
/// assert!(loss.to_scalar::<f32>()? > 0.0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AslSingleLabel {
    cfg: SingleLabelConfig,
}

impl AslSingleLabel {
    /// A loss with the given configuration (checked when the loss is evaluated).
    pub fn new(cfg: SingleLabelConfig) -> Self {
        AslSingleLabel { cfg }
    }

    /// The configuration.
    pub fn config(&self) -> &SingleLabelConfig {
        &self.cfg
    }

    /// The loss of `logits` `[N, K]` (f16, bf16, f32, f64) against class indices `[N]` (u8, u32
    /// or i64), by the fused kernel. The result is f32 (f64 for f64 logits).
    pub fn forward(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        check_inputs(&self.cfg, logits, targets)?;
        dispatch::apply(self.cfg, logits, targets)
    }

    /// The same loss composed from candle ops (the reference the fused kernel is tested against),
    /// computed in f64 and returned in the same dtype as [`forward`](Self::forward).
    pub fn forward_composed(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        check_inputs(&self.cfg, logits, targets)?;
        let (rows, k) = logits.dims2()?;
        let cdt = DType::F64;
        let classes = targets.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let mut one_hot = vec![0f64; rows * k];
        for (row, &c) in classes.iter().enumerate() {
            let c = check_class(row, c, k)?;
            one_hot[row * k + c] = 1.0;
        }
        let t = Tensor::from_vec(one_hot, (rows, k), logits.device())?.to_dtype(cdt)?;
        let not_t = t.affine(-1.0, 1.0)?;

        let x = logits.to_dtype(cdt)?;
        let log_p = candle_nn::ops::log_softmax(&x, 1)?;
        let p = log_p.exp()?;
        let full = |g: f64| p.ones_like()?.affine(g, 0.0);
        let w_target = pow_composed(&p.affine(-1.0, 1.0)?, &full(self.cfg.gamma_pos)?)?;
        let w_other = pow_composed(&p, &full(self.cfg.gamma_neg)?)?;
        let w = ((&t * w_target)? + (&not_t * w_other)?)?;
        let smoothed = t.affine(1.0 - self.cfg.eps, self.cfg.eps / k as f64)?;
        let per_sample = (smoothed * log_p)?.mul(&w)?.sum(1)?.neg()?;
        let loss = match self.cfg.reduction {
            Reduction::None => per_sample,
            _ => per_sample.sum_all()?.affine(self.cfg.scale(rows), 0.0)?,
        };
        loss.to_dtype(compute_dtype(logits.dtype()))
    }
}

fn check_class(row: usize, c: i64, k: usize) -> std::result::Result<usize, AslError> {
    if c < 0 || c as u64 >= k as u64 {
        Err(AslError::ClassIndexOutOfRange {
            row,
            value: c,
            num_classes: k,
        })
    } else {
        Ok(c as usize)
    }
}

fn check_inputs(cfg: &SingleLabelConfig, logits: &Tensor, targets: &Tensor) -> Result<()> {
    cfg.validate()?;
    if logits.rank() != 2 || logits.elem_count() == 0 {
        return Err(AslError::Shape {
            what: "single-label ASL logits",
            expected: "a non-empty [N, K] tensor".into(),
            got: logits.shape().clone(),
        }
        .into());
    }
    if targets.dims() != [logits.dim(0)?] {
        return Err(AslError::Shape {
            what: "single-label ASL targets",
            expected: format!("class indices of shape [{}]", logits.dim(0)?),
            got: targets.shape().clone(),
        }
        .into());
    }
    if !matches!(
        logits.dtype(),
        DType::F16 | DType::BF16 | DType::F32 | DType::F64
    ) {
        return Err(AslError::DType {
            what: "single-label ASL logits",
            dtype: logits.dtype(),
            accepted: "f16, bf16, f32, f64",
        }
        .into());
    }
    if !matches!(targets.dtype(), DType::U8 | DType::U32 | DType::I64) {
        return Err(AslError::DType {
            what: "single-label ASL targets (class indices)",
            dtype: targets.dtype(),
            accepted: "u8, u32, i64",
        }
        .into());
    }
    if !logits.device().same_device(targets.device()) {
        return Err(candle_core::Error::msg(
            "single-label ASL: logits and targets are on different devices",
        ));
    }
    Ok(())
}

/// A class index read from any integer target dtype.
trait ClassIndex: Elem {
    fn index(self) -> i64;
}
impl ClassIndex for u8 {
    fn index(self) -> i64 {
        self as i64
    }
}
impl ClassIndex for u32 {
    fn index(self) -> i64 {
        self as i64
    }
}
impl ClassIndex for i64 {
    fn index(self) -> i64 {
        self
    }
}

/// Loss and gradient of one row. `grad` (when given) receives `d loss_row / d x * scale`.
///
/// With `l = log_softmax(x)`, `p = exp(l)`, smoothed target `s` and weights `w`:
/// `loss = -sum_k s_k l_k w_k`, and since `dl_k/dx_j = d_kj - p_j` and `dp_k/dx_j = p_k (d_kj - p_j)`,
/// `dloss/dx_j = -(c_j - p_j sum_k c_k)` with `c_k = s_k (w_k + l_k p_k dw_k/dp_k)`.
#[inline(always)]
fn single_label_row<F: Compute, L: Elem>(
    x: &[L],
    target: usize,
    cfg: &SingleLabelConfig,
    grad: Option<&mut [F]>,
    scale: F,
) -> F {
    let k = x.len();
    let zero = F::zero();
    let one = F::one();
    let gp = F::from_f64(cfg.gamma_pos);
    let gn = F::from_f64(cfg.gamma_neg);
    let (gpi, gni) = (small_int(cfg.gamma_pos), small_int(cfg.gamma_neg));
    let s_other = F::from_f64(cfg.eps / k as f64);
    let s_target = F::from_f64(1.0 - cfg.eps + cfg.eps / k as f64);

    let max = x.iter().fold(F::neg_infinity(), |m, &v| m.max(F::of(v)));
    let sum_exp = x.iter().fold(zero, |s, &v| s + (F::of(v) - max).exp());
    let lse = max + sum_exp.ln();

    // (w_k, l_k p_k dw_k/dp_k) for one class.
    let terms = |kk: usize, l: F, p: F| -> (F, F) {
        if kk == target {
            if gp == zero {
                return (one, zero);
            }
            // q = 1 - p_t = -expm1(l_t): no cancellation when p_t is close to 1.
            // l p dw/dp = -gp p q^(gp-1) l = -gp p w (l / q): q^(gp-1) alone overflows for a
            // confident row and gp < 1; l / q is bounded (it tends to -1 as q -> 0).
            let q = -l.exp_m1();
            let w = pow_known(q, gp, gpi);
            let l_over_q = if q == zero { -one } else { l / q };
            (w, -gp * p * w * l_over_q)
        } else {
            let w = pow_known(p, gn, gni);
            (w, l * gn * w)
        }
    };

    let mut loss = zero;
    let mut c_sum = zero;
    match grad {
        None => {
            for (kk, &v) in x.iter().enumerate() {
                let l = F::of(v) - lse;
                let s = if kk == target { s_target } else { s_other };
                let (w, _) = terms(kk, l, l.exp());
                if s != zero && w != zero {
                    loss = loss - s * l * w;
                }
            }
        }
        Some(g) => {
            for (kk, &v) in x.iter().enumerate() {
                let l = F::of(v) - lse;
                let p = l.exp();
                let s = if kk == target { s_target } else { s_other };
                let (w, l_pdw) = terms(kk, l, p);
                let (lw, c) = if s == zero {
                    (zero, zero)
                } else {
                    (s * l * w, s * (w + l_pdw))
                };
                loss = loss - lw;
                c_sum = c_sum + c;
                g[kk] = c;
            }
            for (kk, &v) in x.iter().enumerate() {
                let p = (F::of(v) - lse).exp();
                g[kk] = -(g[kk] - p * c_sum) * scale;
            }
        }
    }
    loss
}

fn single_label_pass<F: Compute, L: Elem, T: ClassIndex>(
    x: &[L],
    t: &[T],
    k: usize,
    cfg: &SingleLabelConfig,
    want_grad: bool,
    scale: F,
) -> std::result::Result<(Vec<F>, Vec<F>), AslError> {
    let rows = t.len();
    let rows_per_job = (CHUNK / k).max(1);
    let mut per_row = vec![F::zero(); rows];
    let mut grad = if want_grad {
        vec![F::zero(); rows * k]
    } else {
        Vec::new()
    };
    let mut grad_chunks = grad.chunks_mut(rows_per_job * k);
    let jobs: Vec<_> = per_row
        .chunks_mut(rows_per_job)
        .enumerate()
        .map(|(j, out)| (j * rows_per_job, out, grad_chunks.next()))
        .collect();
    jobs.into_par_iter().try_for_each(|(first, out, mut g)| {
        for (r, o) in out.iter_mut().enumerate() {
            let row = first + r;
            let class = check_class(row, t[row].index(), k)?;
            let g_row = g.as_deref_mut().map(|g| &mut g[r * k..(r + 1) * k]);
            *o = single_label_row(&x[row * k..(row + 1) * k], class, cfg, g_row, scale);
        }
        Ok::<(), AslError>(())
    })?;
    Ok((per_row, grad))
}

/// The single-label loss in the fused op.
impl FusedLoss for SingleLabelConfig {
    const NAME: &'static str = "asymmetric-loss-single-label";
    const LOGITS: &'static str = "single-label ASL logits";
    const TARGETS: &'static str = "single-label ASL targets";

    fn reduction(&self) -> Reduction {
        self.reduction
    }

    fn reduction_scale(&self, rows: usize, _cols: usize) -> f64 {
        self.scale(rows)
    }

    fn output_shape(&self, rows: usize, _cols: usize) -> Shape {
        if self.reduction == Reduction::None {
            Shape::from(rows)
        } else {
            Shape::from(())
        }
    }

    fn cpu_pass<X: Logit>(&self, x: &[X], t: Slice, job: Job) -> Result<HostPass<X::Compute>> {
        let (k, want_grad) = (job.cols, job.want_grad);
        let gs: X::Compute = Compute::from_f64(job.scale);
        let (per_row, grad) = match t {
            Slice::U8(t) => single_label_pass(x, t, k, self, want_grad, gs),
            Slice::U32(t) => single_label_pass(x, t, k, self, want_grad, gs),
            Slice::I64(t) => single_label_pass(x, t, k, self, want_grad, gs),
            _ => unreachable!("target dtype checked in forward"),
        }?;
        let losses = if self.reduction == Reduction::None {
            Losses::PerItem(per_row)
        } else {
            Losses::Sum(per_row.iter().map(|v| v.as_f64()).sum())
        };
        Ok(HostPass { losses, grad })
    }

    #[cfg(feature = "cuda")]
    fn plan(
        &self,
        logits: DType,
        targets: DType,
        rows: usize,
        cols: usize,
    ) -> Result<crate::cuda_launch::LossPlan> {
        crate::cuda_launch::LossPlan::single_label(self, logits, targets, rows, cols)
    }

    #[cfg(feature = "cuda")]
    fn target_error(&self, targets: Slice, row: usize, cols: usize) -> Result<AslError> {
        let value = match targets {
            Slice::U8(v) => v[row] as i64,
            Slice::U32(v) => v[row] as i64,
            Slice::I64(v) => v[row],
            _ => {
                return Err(candle_core::Error::msg(
                    "single-label ASL: non-integer class indices",
                ))
            }
        };
        Ok(AslError::ClassIndexOutOfRange {
            row,
            value,
            num_classes: cols,
        })
    }
}
