//! The one candle custom op behind both fused losses.
//!
//! A loss implements [`FusedLoss`] (its name, its reduction, its CPU pass, and with the `cuda`
//! feature its kernel launch plan); [`Fused`] wraps it into a `candle_core::CustomOp2` with a
//! single `cpu_fwd`, `cuda_fwd` and `bwd` for every loss. [`apply`] evaluates a loss as that op.
//!
//! The forward pass computes the gradient in the same sweep as the loss (only when the logits are
//! part of an autograd graph) and keeps it in the op's [`GradCache`]; `bwd` then only chains the
//! upstream gradient into it ([`chain_upstream`]). A second backward over the same graph finds
//! the cache empty and runs the pass again.
//!
//! Everything is generic over the loss and monomorphised: no dynamic dispatch in the passes.
//! Which code runs on which device is [`crate::dispatch`]'s job.

use std::sync::Mutex;

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::dispatch::{self, Logit, Slice};
use crate::math::Compute;
use crate::Reduction;

/// A loss the fused op can evaluate. Implemented by each loss's configuration.
pub(crate) trait FusedLoss: Copy + Send + Sync + 'static {
    /// The op's name in candle's graph.
    const NAME: &'static str;
    /// How errors name the logits and the targets.
    const LOGITS: &'static str;
    const TARGETS: &'static str;

    /// How the loss is reduced (decides how the upstream gradient is chained).
    fn reduction(&self) -> Reduction;

    /// The factor applied to the summed loss and to the gradient, for `[rows, cols]` logits.
    fn reduction_scale(&self, rows: usize, cols: usize) -> f64;

    /// The shape of the op's output for `[rows, cols]` logits: `[]` for a reduced loss.
    fn output_shape(&self, rows: usize, cols: usize) -> Shape;

    /// The CPU pass over contiguous logits `x` and targets `t` (of a dtype the loss's input
    /// checks accepted), in the compute type of the logits.
    fn cpu_pass<X: Logit>(&self, x: &[X], t: Slice, job: Job) -> Result<HostPass<X::Compute>>;

    /// The CUDA kernel launch of the pass (see [`crate::cuda_launch::LossPlan`]).
    #[cfg(feature = "cuda")]
    fn plan(
        &self,
        logits: DType,
        targets: DType,
        rows: usize,
        cols: usize,
    ) -> Result<crate::cuda_launch::LossPlan>;

    /// The error for the bad target at flat index `i` that the CUDA kernel reported, read from
    /// the targets copied to the host.
    #[cfg(feature = "cuda")]
    fn target_error(&self, targets: Slice, i: usize, cols: usize) -> Result<crate::AslError>;
}

/// What a pass is asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    pub rows: usize,
    pub cols: usize,
    /// [`FusedLoss::reduction_scale`].
    pub scale: f64,
    /// Whether the pass also computes the gradient.
    pub want_grad: bool,
}

/// The losses a CPU pass computed.
pub(crate) enum Losses<F> {
    /// The sum of the losses, accumulated in f64 in a fixed order (not yet scaled).
    Sum(f64),
    /// One loss per item (`Reduction::None`), in the shape [`FusedLoss::output_shape`] gives.
    PerItem(Vec<F>),
}

/// What a CPU pass produced.
pub(crate) struct HostPass<F> {
    pub losses: Losses<F>,
    /// `d reduced loss / d logits`, already scaled by [`Job::scale`] (empty unless asked).
    pub grad: Vec<F>,
}

/// The compute types' buffers as candle storage and as a cached gradient (f32 and f64).
pub(crate) trait Store: Compute {
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    fn into_cache(v: Vec<Self>) -> CachedGrad;
}

impl Store for f32 {
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn into_cache(v: Vec<Self>) -> CachedGrad {
        CachedGrad::F32(v)
    }
}

impl Store for f64 {
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    fn into_cache(v: Vec<Self>) -> CachedGrad {
        CachedGrad::F64(v)
    }
}

/// The fused loss `L` as a candle custom op. Inputs: logits, targets (contiguous).
pub(crate) struct Fused<L> {
    loss: L,
    /// Whether the forward pass also computes the gradient (only when the logits are in a graph).
    want_grad: bool,
    grad: GradCache,
}

impl<L: FusedLoss> Fused<L> {
    fn new(loss: L, want_grad: bool) -> Self {
        Fused {
            loss,
            want_grad,
            grad: GradCache::default(),
        }
    }

    /// Keeps the gradient a forward pass produced for `bwd`.
    fn keep(&self, grad: Option<CachedGrad>) -> Result<()> {
        match grad {
            Some(g) => self.grad.put(g),
            None => Ok(()),
        }
    }
}

/// The loss of checked `logits` and `targets` by the fused op, with a backward when the logits
/// are part of an autograd graph.
pub(crate) fn apply<L: FusedLoss>(loss: L, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.contiguous()?;
    let targets = targets.contiguous()?;
    let op = Fused::new(loss, logits.track_op());
    if op.want_grad {
        logits.apply_op2(&targets, op)
    } else {
        logits.apply_op2_no_bwd(&targets, &op)
    }
}

impl<L: FusedLoss> candle_core::CustomOp2 for Fused<L> {
    fn name(&self) -> &'static str {
        L::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out, shape, grad) = dispatch::cpu_forward(&self.loss, self.want_grad, s1, l1, s2, l2)?;
        self.keep(grad)?;
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (out, shape, grad) =
            dispatch::cuda_forward(&self.loss, self.want_grad, s1, l1, s2, l2)?;
        self.keep(grad)?;
        Ok((out, shape))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let cached = match self.grad.take()? {
            Some(g) => g,
            None => {
                // A second backward over the same graph: run the pass again, on the logits'
                // device.
                let again = Fused::new(self.loss, true);
                logits.apply_op2_no_bwd(targets, &again)?;
                again.grad.take_required()?
            }
        };
        let grad = chain_upstream(cached, self.loss.reduction(), grad_res, logits)?;
        Ok((Some(grad), None))
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
    fn put(&self, g: CachedGrad) -> Result<()> {
        *self.0.lock().map_err(|_| poisoned())? = Some(g);
        Ok(())
    }

    /// The cached gradient, if the forward pass left one (a second backward over the same graph
    /// finds none and must recompute).
    fn take(&self) -> Result<Option<CachedGrad>> {
        Ok(self.0.lock().map_err(|_| poisoned())?.take())
    }

    fn take_required(&self) -> Result<CachedGrad> {
        self.take()?
            .ok_or_else(|| candle_core::Error::msg("fused loss: gradient pass produced nothing"))
    }
}

/// Chains the upstream gradient of the op's output into the cached `d output / d logits` and
/// returns it in the logits' dtype and device. For a reduced (scalar) loss this scales in place;
/// for `Reduction::None` the upstream gradient has the output's shape (`[N, C]`, or `[N]` for a
/// per-sample loss, broadcast over the classes). A gradient cached on the GPU stays there.
fn chain_upstream(
    cached: CachedGrad,
    reduction: Reduction,
    grad_res: &Tensor,
    logits: &Tensor,
) -> Result<Tensor> {
    let grad = match cached {
        CachedGrad::F32(v) => chain_host(v, reduction, grad_res, logits)?,
        CachedGrad::F64(v) => chain_host(v, reduction, grad_res, logits)?,
        #[cfg(feature = "cuda")]
        CachedGrad::Cuda(g) => return crate::cuda::chain_upstream(g, reduction, grad_res, logits),
    };
    grad.to_dtype(logits.dtype())?.to_device(logits.device())
}

/// [`chain_upstream`] for a gradient cached on the host, in its compute type.
fn chain_host<F: Compute + candle_core::WithDType>(
    v: Vec<F>,
    reduction: Reduction,
    grad_res: &Tensor,
    logits: &Tensor,
) -> Result<Tensor> {
    let shape = logits.shape().clone();
    if reduction == Reduction::None {
        let g = Tensor::from_vec(v, shape, &Device::Cpu)?;
        let mut up = grad_res.to_device(&Device::Cpu)?.to_dtype(g.dtype())?;
        while up.rank() < g.rank() {
            up = up.unsqueeze(up.rank())?;
        }
        g.broadcast_mul(&up)
    } else {
        let s = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Tensor::from_vec(scaled(v, <F as Compute>::from_f64(s)), shape, &Device::Cpu)
    }
}

/// Multiplies in place (the usual upstream gradient of a scalar loss is exactly 1: no work).
fn scaled<F: Compute>(mut v: Vec<F>, s: F) -> Vec<F> {
    if s != F::one() {
        v.par_iter_mut().for_each(|g| *g = *g * s);
    }
    v
}
