//! The CUDA kernels of the fused ops (feature `cuda`).
//!
//! `kernels/asl.cu` (with the per-element math in `kernels/asl_math.cuh`, a line-by-line mirror
//! of [`crate::math::asl_element`]) is compiled to PTX by `build.rs` and embedded here; the
//! module is JIT-loaded once per device on first use.
//!
//! Which kernel, grid and arguments (in order, with their types) and which buffer sizes each
//! pass needs is planned in [`crate::cuda_launch`], without CUDA (each loss picks its plan in its
//! [`FusedLoss::plan`]); this module allocates, pushes the arguments as planned, and reads back,
//! with one [`forward`] for both losses. `tests/cuda_mirror` runs the same plans against `asl.cu`
//! compiled for the host.
//!
//! - Multi-label: one kernel reads logits and targets once and writes the gradient (in the
//!   logits' dtype, already scaled by the reduction) and, for `Reduction::None`, the element
//!   losses; each block writes the f64 sum of its tile's losses, and one more block sums those
//!   partials in a fixed order: no float atomics, the loss is the same bits on every run.
//! - Single-label: one block per row; row losses summed the same way.
//! - The gradient stays on the GPU in the op's [`GradCache`](crate::op::GradCache);
//!   [`chain_upstream`] scales it in place (nothing to do for the usual upstream gradient 1).
//!
//! Logits f16/bf16/f32 compute in f32, f64 in f64. Targets: every dtype the CPU kernel takes.
//!
//! Targets are checked on the GPU (multi-label: in [0, 1]; single-label: a class in [0, K));
//! the op reads back one flag (a stream synchronisation) and returns the CPU kernel's error
//! ([`FusedLoss::target_error`]).
//! `ASL_CUDA_SKIP_TARGET_CHECK=1` skips the read-back: a bad target then gives a NaN loss and
//! gradient instead of an error (no synchronisation in the forward pass).

use candle_core::backend::BackendStorage;
use candle_core::cuda::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorageSlice, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};
use half::{bf16, f16};

use crate::config::Reduction;
use crate::cuda_launch::LossPlan;
use crate::cuda_launch::{self as plan, Arg, Launch};
use crate::dtype::{compute_dtype, slice};
use crate::error::AslError;
use crate::op::FusedLoss;

/// The kernels, compiled by `build.rs`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/asl.ptx"));
/// The name the module is cached under in candle's `CudaDevice`.
const MODULE: &str = "asl_core_asl";

/// A kernel of the module, loading (JIT-compiling) the module on first use on this device.
fn function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function())
}

/// A buffer passed to a kernel (its device pointer).
trait Push {
    fn push<'s>(&'s mut self, b: &mut LaunchArgs<'s>) -> Result<()>;
}

impl<T: DeviceRepr> Push for CudaSlice<T> {
    fn push<'s>(&'s mut self, b: &mut LaunchArgs<'s>) -> Result<()> {
        b.arg(self);
        Ok(())
    }
}

impl Push for View<'_> {
    fn push<'s>(&'s mut self, b: &mut LaunchArgs<'s>) -> Result<()> {
        match self {
            View::U8(v) => b.arg(&*v),
            View::U32(v) => b.arg(&*v),
            View::I64(v) => b.arg(&*v),
            View::F16(v) => b.arg(&*v),
            View::BF16(v) => b.arg(&*v),
            View::F32(v) => b.arg(&*v),
            View::F64(v) => b.arg(&*v),
        };
        Ok(())
    }
}

/// A float storage (the gradient buffer, in the logits' dtype).
impl Push for CudaStorage {
    fn push<'s>(&'s mut self, b: &mut LaunchArgs<'s>) -> Result<()> {
        match &mut self.slice {
            CudaStorageSlice::F16(v) => b.arg(v),
            CudaStorageSlice::BF16(v) => b.arg(v),
            CudaStorageSlice::F32(v) => b.arg(v),
            CudaStorageSlice::F64(v) => b.arg(v),
            _ => {
                return Err(candle_core::Error::msg(
                    "ASL CUDA: internal error, gradient buffer of a non-float dtype",
                ))
            }
        };
        Ok(())
    }
}

/// The null device pointer.
const NULL: u64 = 0;

/// Makes a launch planned by [`crate::cuda_launch`], its arguments pushed in the plan's order.
fn run(dev: &CudaDevice, mut l: Launch<&mut dyn Push>) -> Result<()> {
    if l.blocks == 0 {
        return Ok(());
    }
    let func = function(dev, &l.kernel)?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&func);
    for a in l.args.iter_mut() {
        match a {
            Arg::Buf(p) => p.push(&mut b)?,
            Arg::Null => {
                b.arg(&NULL);
            }
            Arg::U64(v) => {
                b.arg(&*v);
            }
            Arg::I32(v) => {
                b.arg(&*v);
            }
            Arg::F32(v) => {
                b.arg(&*v);
            }
            Arg::F64(v) => {
                b.arg(&*v);
            }
        }
    }
    let cfg = LaunchConfig {
        grid_dim: (l.blocks, 1, 1),
        block_dim: (l.threads, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the plans in cuda_launch.rs give each kernel of asl.cu its parameters in order,
    // of the parameters' types, with buffers of the sizes the plans state (the callers below
    // allocate those); tests/cuda_mirror runs the same plans against asl.cu compiled for the
    // host, checking argument count and sizes and every buffer's bounds.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// A contiguous input of one of the dtypes the kernels read.
enum View<'a> {
    U8(CudaView<'a, u8>),
    U32(CudaView<'a, u32>),
    I64(CudaView<'a, i64>),
    F16(CudaView<'a, f16>),
    BF16(CudaView<'a, bf16>),
    F32(CudaView<'a, f32>),
    F64(CudaView<'a, f64>),
}

impl<'a> View<'a> {
    /// The elements of a contiguous tensor's storage (of a dtype the caller's plan checked).
    fn new(s: &'a CudaStorage, l: &Layout, what: &'static str) -> Result<Self> {
        let (start, end) = l.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::msg(format!(
                "{what}: internal error, expected a contiguous layout"
            ))
        })?;
        Ok(match &s.slice {
            CudaStorageSlice::U8(v) => View::U8(v.slice(start..end)),
            CudaStorageSlice::U32(v) => View::U32(v.slice(start..end)),
            CudaStorageSlice::I64(v) => View::I64(v.slice(start..end)),
            CudaStorageSlice::F16(v) => View::F16(v.slice(start..end)),
            CudaStorageSlice::BF16(v) => View::BF16(v.slice(start..end)),
            CudaStorageSlice::F32(v) => View::F32(v.slice(start..end)),
            CudaStorageSlice::F64(v) => View::F64(v.slice(start..end)),
            _ => {
                return Err(candle_core::Error::msg(format!(
                    "{what}: internal error, unsupported dtype {:?}",
                    s.dtype()
                )))
            }
        })
    }
}

/// An uninitialised buffer of `n` elements in the logits' dtype (the kernels write every one).
fn alloc_like_logits(dev: &CudaDevice, dtype: DType, n: usize) -> Result<CudaStorage> {
    // SAFETY: every element is written by the kernel the buffer is passed to before anything
    // reads it.
    unsafe {
        Ok(match dtype {
            DType::F16 => CudaStorage::wrap_cuda_slice(dev.alloc::<f16>(n)?, dev.clone()),
            DType::BF16 => CudaStorage::wrap_cuda_slice(dev.alloc::<bf16>(n)?, dev.clone()),
            DType::F32 => CudaStorage::wrap_cuda_slice(dev.alloc::<f32>(n)?, dev.clone()),
            DType::F64 => CudaStorage::wrap_cuda_slice(dev.alloc::<f64>(n)?, dev.clone()),
            other => {
                return Err(AslError::DType {
                    what: "ASL logits",
                    dtype: other,
                    accepted: plan::LOGITS.1,
                }
                .into())
            }
        })
    }
}

/// Whether the forward passes skip reading back the target check (see the module docs).
fn skip_target_check() -> bool {
    std::env::var_os("ASL_CUDA_SKIP_TARGET_CHECK").is_some_and(|v| v == "1")
}

/// The smallest index the kernel recorded as bad.
fn first_bad(dev: &CudaDevice, bad: &CudaSlice<u64>) -> Result<Option<usize>> {
    if skip_target_check() {
        return Ok(None);
    }
    let v = dev.clone_dtoh(bad)?;
    Ok(v.first().and_then(|&b| plan::first_bad(b)))
}

/// A loss kernel's launch and what follows it (see [`LossPlan`]), with the losses in `F`,
/// the plan's compute dtype: the loss (the per-item losses, or the partials summed into one
/// value), the gradient when `want_grad`, and the first bad target's index.
#[allow(clippy::type_complexity)]
fn forward_in<F: DeviceRepr + CudaDType>(
    p: &LossPlan,
    want_grad: bool,
    (s1, l1, what1): (&CudaStorage, &Layout, &'static str),
    (s2, l2, what2): (&CudaStorage, &Layout, &'static str),
) -> Result<(CudaSlice<F>, Option<CudaStorage>, Option<usize>)> {
    let dev = s1.device().clone();
    let mut x = View::new(s1, l1, what1)?;
    let mut t = View::new(s2, l2, what2)?;
    let mut grad = if want_grad {
        Some(alloc_like_logits(&dev, s1.dtype(), p.grad_len())?)
    } else {
        None
    };
    let (per_item, len) = p.losses();
    let mut bad = dev.alloc_zeros::<u64>(1)?;
    // SAFETY (all three): every element is written by the kernel before anything reads it.
    let out = if per_item {
        let mut losses = unsafe { dev.alloc::<F>(len)? };
        let g = grad.as_mut().map(|g| g as &mut dyn Push);
        run(
            &dev,
            p.launch::<&mut dyn Push>(&mut x, &mut t, g, &mut losses, &mut bad)?,
        )?;
        losses
    } else {
        let mut partials = unsafe { dev.alloc::<f64>(len)? };
        let g = grad.as_mut().map(|g| g as &mut dyn Push);
        run(
            &dev,
            p.launch::<&mut dyn Push>(&mut x, &mut t, g, &mut partials, &mut bad)?,
        )?;
        let mut loss = unsafe { dev.alloc::<F>(1)? };
        run(&dev, p.sum::<&mut dyn Push>(&mut partials, &mut loss))?;
        loss
    };
    Ok((out, grad, first_bad(&dev, &bad)?))
}

/// [`forward_in`] in the plan's compute dtype; the loss as a storage.
#[allow(clippy::type_complexity)]
fn launch_loss(
    p: &LossPlan,
    want_grad: bool,
    x: (&CudaStorage, &Layout, &'static str),
    t: (&CudaStorage, &Layout, &'static str),
) -> Result<(CudaStorage, Option<CudaStorage>, Option<usize>)> {
    let dev = x.0.device().clone();
    Ok(match p.compute() {
        DType::F64 => {
            let (o, g, b) = forward_in::<f64>(p, want_grad, x, t)?;
            (CudaStorage::wrap_cuda_slice(o, dev), g, b)
        }
        _ => {
            let (o, g, b) = forward_in::<f32>(p, want_grad, x, t)?;
            (CudaStorage::wrap_cuda_slice(o, dev), g, b)
        }
    })
}

/// The forward pass of `loss` (its [`FusedLoss::plan`]): the loss in the compute dtype (a scalar,
/// or per item for `Reduction::None`, in [`FusedLoss::output_shape`]), and the gradient when
/// `want_grad` (the logits' shape and dtype, scaled by the reduction).
pub(crate) fn forward<L: FusedLoss>(
    loss: &L,
    want_grad: bool,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape, Option<CudaStorage>)> {
    let (rows, cols) = l1.shape().dims2()?;
    let p = loss.plan(s1.dtype(), s2.dtype(), rows, cols)?;
    let x = (s1, l1, L::LOGITS);
    let t = (s2, l2, L::TARGETS);
    let (out, grad, bad) = launch_loss(&p, want_grad, x, t)?;
    if let Some(i) = bad {
        // Only to report the error: the targets on the host.
        let host = s2.to_cpu_storage()?;
        let targets = slice(&host, l2, L::TARGETS)?;
        return Err(loss.target_error(targets, i, cols)?.into());
    }
    Ok((out, loss.output_shape(rows, cols), grad))
}

/// Chains the upstream gradient `grad_res` into the cached gradient `g` (on the GPU, logits
/// dtype, `logits`' shape) in place, and returns it as a tensor: `g * s` for a scalar loss
/// (no work when `s` is 1), `g * up` broadcast over the trailing dimensions for an unreduced one
/// (`up` of shape `[N, C]`, or `[N]` for the single-label loss).
pub(crate) fn chain_upstream(
    mut g: CudaStorage,
    reduction: Reduction,
    grad_res: &Tensor,
    logits: &Tensor,
) -> Result<Tensor> {
    let up = grad_res
        .to_dtype(compute_dtype(logits.dtype()))?
        .contiguous()?;
    let p = plan::Chain::new(reduction, g.dtype(), logits.dims(), up.dtype(), up.dims())?;
    let dev = g.device.clone();
    {
        let (st, layout) = up.storage_and_layout();
        let Storage::Cuda(us) = &*st else {
            return Err(candle_core::Error::msg(
                "ASL backward: the upstream gradient is not on the GPU",
            ));
        };
        let mut upv = View::new(us, layout, "ASL upstream gradient")?;
        run(&dev, p.launch::<&mut dyn Push>(&mut g, &mut upv)?)?;
    }
    Ok(Tensor::from_storage(
        Storage::Cuda(g),
        logits.shape().clone(),
        BackpropOp::none(),
        false,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ptx_has_every_kernel() {
        for l in ["f16", "bf16", "f32", "f64"] {
            for t in ["u8", "u32", "i64", "f16", "bf16", "f32", "f64"] {
                assert!(super::PTX.contains(&format!(".entry asl_ml_{l}_{t}(")));
            }
            for t in ["u8", "u32", "i64"] {
                assert!(super::PTX.contains(&format!(".entry asl_sl_{l}_{t}(")));
            }
            assert!(super::PTX.contains(&format!(".entry asl_scale_scalar_{l}(")));
            assert!(super::PTX.contains(&format!(".entry asl_scale_rows_{l}(")));
        }
        assert!(super::PTX.contains(".entry asl_sum_partials_f32("));
        assert!(super::PTX.contains(".entry asl_sum_partials_f64("));
    }
}
