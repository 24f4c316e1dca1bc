//! Device and dtype dispatch of the fused op: from candle's storages to a loss's passes.
//!
//! - CPU: the storages are borrowed as typed slices ([`Slice`]), the compute type is picked from
//!   the logits' dtype ([`Logit`]: f32 for f16/bf16/f32, f64 for f64), and the loss's
//!   [`FusedLoss::cpu_pass`] runs, monomorphised for that pair of dtypes.
//! - CUDA (feature `cuda`): the loss's launch plan runs on the GPU (`cuda.rs`), and the
//!   gradient stays there.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};

use crate::error::AslError;
use crate::math::{Compute, Elem};
use crate::op::{CachedGrad, FusedLoss, Job, Losses, Store};

/// A logits element type, and the float type the kernels compute in for it (see
/// [`compute_dtype`]).
pub(crate) trait Logit: Elem {
    type Compute: Store;
}

impl Logit for f16 {
    type Compute = f32;
}
impl Logit for bf16 {
    type Compute = f32;
}
impl Logit for f32 {
    type Compute = f32;
}
impl Logit for f64 {
    type Compute = f64;
}

/// The compute dtype for a logits dtype: f32 for f16/bf16/f32 logits, f64 for f64 logits.
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

/// The output of a forward pass on one device: the loss, its shape, and the gradient when it was
/// asked for.
pub(crate) type Forward<S> = (S, Shape, Option<CachedGrad>);

/// The forward pass of `loss` on the CPU.
pub(crate) fn cpu_forward<L: FusedLoss>(
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
) -> Result<Forward<CpuStorage>> {
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
pub(crate) fn cuda_forward<L: FusedLoss>(
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
