//! Device and dtype dispatch of the fused op: the `CustomOp2` implementation of
//! [`Fused`], from candle's storages to a loss's passes and back.
//!
//! - CPU: the storages are borrowed as typed slices ([`Slice`]), the compute type is picked from
//!   the logits' dtype ([`Logit`]: f32 for f16/bf16/f32, f64 for f64), and the loss's
//!   [`FusedLoss::cpu_pass`] runs, monomorphised for that pair of dtypes.
//! - CUDA (feature `cuda`): the loss's launch plan runs on the GPU (`cuda.rs`), and the
//!   gradient stays there.
//!
//! The backward pass ([`chain_upstream`]) chains the upstream gradient into the gradient the
//! forward pass cached, on the device that holds it.

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::config::Reduction;
use crate::dtype::{slice, Logit, Slice};
use crate::math::Compute;
use crate::op::{CachedGrad, Fused, FusedLoss, Job, Losses};

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
        let (out, shape, grad) = cpu_forward(&self.loss, self.want_grad, s1, l1, s2, l2)?;
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
        let (out, shape, grad) = cuda_forward(&self.loss, self.want_grad, s1, l1, s2, l2)?;
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

/// The output of a forward pass on one device: the loss, its shape, and the gradient when it was
/// asked for.
type Forward<S> = (S, Shape, Option<CachedGrad>);

/// The compute types' buffers as candle storage and as a cached gradient (f32 and f64).
trait Store: Compute {
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

/// The forward pass of `loss` on the CPU.
fn cpu_forward<L: FusedLoss>(
    loss: &L,
    want_grad: bool,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<Forward<CpuStorage>> {
    let (rows, cols) = l1.shape().dims2()?;
    let job = Job {
        rows,
        cols,
        scale: loss.reduction_scale(rows, cols),
        want_grad,
    };
    let t = slice(s2, l2, L::TARGETS)?;
    match slice(s1, l1, L::LOGITS)? {
        Slice::F16(x) => host_pass(loss, x, t, job),
        Slice::BF16(x) => host_pass(loss, x, t, job),
        Slice::F32(x) => host_pass(loss, x, t, job),
        Slice::F64(x) => host_pass(loss, x, t, job),
        _ => unreachable!("logits dtype checked in forward"),
    }
}

/// [`cpu_forward`] for one logits type: the loss's pass, and its results as candle storage.
fn host_pass<L: FusedLoss, X: Logit>(
    loss: &L,
    x: &[X],
    t: Slice,
    job: Job,
) -> Result<Forward<CpuStorage>>
where
    X::Compute: Store,
{
    let pass = loss.cpu_pass(x, t, job)?;
    let grad = job.want_grad.then(|| Store::into_cache(pass.grad));
    let out = match pass.losses {
        Losses::PerItem(v) => Store::into_storage(v),
        Losses::Sum(sum) => {
            <X::Compute as Store>::into_storage(vec![Compute::from_f64(sum * job.scale)])
        }
    };
    Ok((out, loss.output_shape(job.rows, job.cols), grad))
}

/// The forward pass of `loss` on a CUDA device; the gradient stays on the GPU.
#[cfg(feature = "cuda")]
fn cuda_forward<L: FusedLoss>(
    loss: &L,
    want_grad: bool,
    s1: &candle_core::CudaStorage,
    l1: &Layout,
    s2: &candle_core::CudaStorage,
    l2: &Layout,
) -> Result<Forward<candle_core::CudaStorage>> {
    let (out, shape, grad) = crate::cuda::forward(loss, want_grad, s1, l1, s2, l2)?;
    Ok((out, shape, grad.map(CachedGrad::Cuda)))
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
