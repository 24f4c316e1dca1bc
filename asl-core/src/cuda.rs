//! The CUDA kernels of the fused ops (feature `cuda`).
//!
//! `kernels/asl.cu` (with the per-element math in `kernels/asl_math.cuh`, a line-by-line mirror
//! of [`crate::kernel::asl_element`]) is compiled to PTX by `build.rs` and embedded here; the
//! module is JIT-loaded once per device on first use.
//!
//! - Multi-label: one kernel reads logits and targets once and writes the gradient (in the
//!   logits' dtype, already scaled by the reduction) and, for `Reduction::None`, the element
//!   losses; each block writes the f64 sum of its tile's losses, and one more block sums those
//!   partials in a fixed order: no float atomics, the loss is the same bits on every run.
//! - Single-label: one block per row; row losses summed the same way.
//! - The gradient stays on the GPU in the op's [`GradCache`](crate::kernel::GradCache);
//!   [`chain_upstream`] scales it in place (nothing to do for the usual upstream gradient 1).
//!
//! Logits f16/bf16/f32 compute in f32, f64 in f64. Targets: every dtype the CPU kernel takes.
//!
//! Targets are checked on the GPU (multi-label: in [0, 1]; single-label: a class in [0, K));
//! the op reads back one flag (a stream synchronisation) and returns the CPU kernel's error.
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

use crate::error::AslError;
use crate::kernel::{self, AslParams, Compute, Elem, Slice};
use crate::{AslConfig, Reduction, SingleLabelConfig};

/// The kernels, compiled by `build.rs`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/asl.ptx"));
/// The name the module is cached under in candle's `CudaDevice`.
const MODULE: &str = "asl_core_asl";

/// `ASL_ML_THREADS` and `ASL_ML_ELEMS` in `asl.cu` (checked by a test): a block of the
/// multi-label kernel covers `ML_THREADS * ML_ELEMS` consecutive elements.
const ML_THREADS: u32 = 256;
const ML_ELEMS: usize = 8;
const ML_TILE: usize = ML_THREADS as usize * ML_ELEMS;
/// `ASL_RED_THREADS`: the one block that sums the partials.
const RED_THREADS: u32 = 1024;
/// `ASL_SL_THREADS`: one block per row of the single-label kernel.
const SL_THREADS: u32 = 256;
/// `ASL_CHAIN_THREADS`, and the most blocks a grid-stride chaining kernel gets.
const CHAIN_THREADS: u32 = 256;
const CHAIN_MAX_BLOCKS: usize = 1 << 16;

/// A kernel of the module, loading (JIT-compiling) the module on first use on this device.
fn function(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function())
}

fn launch_config(blocks: usize, threads: u32) -> Result<LaunchConfig> {
    let grid = u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            candle_core::Error::msg(format!("ASL CUDA: {blocks} blocks exceed the grid limit"))
        })?;
    Ok(LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// The compute types (f32, f64) on the GPU side.
trait Real: Compute + DeviceRepr + CudaDType {
    /// The kernels' name suffix.
    const NAME: &'static str;
}
impl Real for f32 {
    const NAME: &'static str = "f32";
}
impl Real for f64 {
    const NAME: &'static str = "f64";
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
    /// The elements of a contiguous tensor's storage, of one of the `accepted` dtypes (those
    /// the caller has kernels for).
    fn new(s: &'a CudaStorage, l: &Layout, what: &'static str, accepted: Accepted) -> Result<Self> {
        let (dtypes, names) = accepted;
        let dtype_error = || -> candle_core::Error {
            AslError::DType {
                what,
                dtype: s.dtype(),
                accepted: names,
            }
            .into()
        };
        if !dtypes.contains(&s.dtype()) {
            return Err(dtype_error());
        }
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
            _ => return Err(dtype_error()),
        })
    }

    /// The dtype's suffix in the kernel names.
    fn name(&self) -> &'static str {
        match self {
            View::U8(_) => "u8",
            View::U32(_) => "u32",
            View::I64(_) => "i64",
            View::F16(_) => "f16",
            View::BF16(_) => "bf16",
            View::F32(_) => "f32",
            View::F64(_) => "f64",
        }
    }

    fn push<'s>(&'s self, b: &mut LaunchArgs<'s>) {
        match self {
            View::U8(v) => b.arg(v),
            View::U32(v) => b.arg(v),
            View::I64(v) => b.arg(v),
            View::F16(v) => b.arg(v),
            View::BF16(v) => b.arg(v),
            View::F32(v) => b.arg(v),
            View::F64(v) => b.arg(v),
        };
    }
}

/// Dtypes a kernel has an instance for, and how an error names them.
type Accepted = (&'static [DType], &'static str);

const LOGITS: Accepted = (
    &[DType::F16, DType::BF16, DType::F32, DType::F64],
    "f16, bf16, f32, f64",
);
const TARGETS: Accepted = (
    &[
        DType::U8,
        DType::U32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ],
    "u8, u32, i64, f16, bf16, f32, f64",
);
const CLASSES: Accepted = (&[DType::U8, DType::U32, DType::I64], "u8, u32, i64");
const UPSTREAM: Accepted = (&[DType::F32, DType::F64], "f32, f64");

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
                    accepted: "f16, bf16, f32, f64",
                }
                .into())
            }
        })
    }
}

/// Pushes a float buffer as a kernel's output argument.
fn push_out<'s>(s: &'s mut CudaStorage, b: &mut LaunchArgs<'s>) -> Result<()> {
    match &mut s.slice {
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

/// Whether the forward passes skip reading back the target check (see the module docs).
fn skip_target_check() -> bool {
    std::env::var_os("ASL_CUDA_SKIP_TARGET_CHECK").is_some_and(|v| v == "1")
}

/// The smallest index the kernel recorded as bad (the buffer holds `!index`, 0 for none).
fn first_bad(dev: &CudaDevice, bad: &CudaSlice<u64>) -> Result<Option<usize>> {
    if skip_target_check() {
        return Ok(None);
    }
    let v = dev.clone_dtoh(bad)?;
    Ok(match v.first() {
        Some(&b) if b != 0 => Some(!b as usize),
        _ => None,
    })
}

/// Element `i` of a target tensor, read on the host (only to report an error).
fn target_value(s: &CudaStorage, l: &Layout, i: usize) -> Result<f64> {
    let host = s.to_cpu_storage()?;
    Ok(match kernel::slice(&host, l, "ASL targets")? {
        Slice::U8(v) => v[i].to_f64(),
        Slice::U32(v) => v[i].to_f64(),
        Slice::I64(v) => v[i].to_f64(),
        Slice::F16(v) => v[i].to_f64(),
        Slice::BF16(v) => v[i].to_f64(),
        Slice::F32(v) => v[i].to_f64(),
        Slice::F64(v) => v[i].to_f64(),
    })
}

/// Class index `i` of a single-label target tensor, read on the host (only to report an error).
fn class_value(s: &CudaStorage, l: &Layout, i: usize) -> Result<i64> {
    let host = s.to_cpu_storage()?;
    Ok(match kernel::slice(&host, l, "single-label ASL targets")? {
        Slice::U8(v) => v[i] as i64,
        Slice::U32(v) => v[i] as i64,
        Slice::I64(v) => v[i],
        _ => {
            return Err(candle_core::Error::msg(
                "single-label ASL: non-integer class indices",
            ))
        }
    })
}

/// The multi-label forward pass: the loss (scalar, or `[N, C]` for `Reduction::None`) in the
/// compute dtype, and the gradient when `want_grad` (`[N, C]`, logits dtype, scaled by the
/// reduction).
pub(crate) fn multilabel(
    cfg: &AslConfig,
    want_grad: bool,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape, Option<CudaStorage>)> {
    match s1.dtype() {
        DType::F64 => multilabel_in::<f64>(cfg, want_grad, s1, l1, s2, l2),
        _ => multilabel_in::<f32>(cfg, want_grad, s1, l1, s2, l2),
    }
}

fn multilabel_in<F: Real>(
    cfg: &AslConfig,
    want_grad: bool,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape, Option<CudaStorage>)> {
    let (rows, cols) = l1.shape().dims2()?;
    let n = rows * cols;
    let dev = s1.device().clone();
    let x = View::new(s1, l1, "ASL logits", LOGITS)?;
    let y = View::new(s2, l2, "ASL targets", TARGETS)?;
    let prm = AslParams::<F>::new(cfg);
    let scale = cfg.reduction.scale(rows, n);
    let per_element = cfg.reduction == Reduction::None;
    let blocks = n.div_ceil(ML_TILE);

    let mut grad = if want_grad {
        Some(alloc_like_logits(&dev, s1.dtype(), n)?)
    } else {
        None
    };
    // SAFETY (both): every element is written by the kernel below before anything reads it.
    let mut per_el = if per_element {
        Some(unsafe { dev.alloc::<F>(n)? })
    } else {
        None
    };
    let mut partials = if per_element {
        None
    } else {
        Some(unsafe { dev.alloc::<f64>(blocks)? })
    };
    let mut bad = dev.alloc_zeros::<u64>(1)?;

    let func = function(&dev, &format!("asl_ml_{}_{}", x.name(), y.name()))?;
    let stream = dev.cuda_stream();
    {
        let n64 = n as u64;
        let (focal, detach) = (prm.focal as i32, prm.detach as i32);
        let gpi = prm.gamma_pos_int.unwrap_or(-1);
        let gni = prm.gamma_neg_int.unwrap_or(-1);
        let grad_scale = F::from_f64(scale);
        let null = 0u64;
        let mut b = stream.launch_builder(&func);
        x.push(&mut b);
        y.push(&mut b);
        b.arg(&n64)
            .arg(&prm.gamma_pos)
            .arg(&prm.gamma_neg)
            .arg(&prm.clip)
            .arg(&prm.ln_eps)
            .arg(&focal)
            .arg(&detach)
            .arg(&gpi)
            .arg(&gni)
            .arg(&grad_scale);
        match grad.as_mut() {
            Some(g) => push_out(g, &mut b)?,
            None => {
                b.arg(&null);
            }
        }
        match per_el.as_mut() {
            Some(p) => b.arg(p),
            None => b.arg(&null),
        };
        match partials.as_mut() {
            Some(p) => b.arg(p),
            None => b.arg(&null),
        };
        b.arg(&mut bad);
        // SAFETY: the arguments match asl_ml_* in asl.cu: the views hold n elements, the
        // outputs n (grad, per_el) and `blocks` (partials), and the grid covers n elements.
        unsafe { b.launch(launch_config(blocks, ML_THREADS)?) }.w()?;
    }

    let (out, shape) = match (per_el, partials) {
        (Some(per_el), _) => (per_el, Shape::from((rows, cols))),
        (None, Some(partials)) => (
            sum_partials::<F>(&dev, &partials, blocks, scale)?,
            Shape::from(()),
        ),
        (None, None) => unreachable!("one of the two is allocated"),
    };
    if let Some(i) = first_bad(&dev, &bad)? {
        return Err(AslError::TargetOutOfRange {
            row: i / cols,
            col: i % cols,
            value: target_value(s2, l2, i)?,
        }
        .into());
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), shape, grad))
}

/// The second level of the reduction: `(F)(sum of count partials * scale)`, one block, fixed
/// order.
fn sum_partials<F: Real>(
    dev: &CudaDevice,
    partials: &CudaSlice<f64>,
    count: usize,
    scale: f64,
) -> Result<CudaSlice<F>> {
    // SAFETY: written by the kernel below.
    let mut out = unsafe { dev.alloc::<F>(1)? };
    let func = function(dev, &format!("asl_sum_partials_{}", F::NAME))?;
    let stream = dev.cuda_stream();
    let count64 = count as u64;
    let mut b = stream.launch_builder(&func);
    b.arg(partials).arg(&count64).arg(&scale).arg(&mut out);
    // SAFETY: matches asl_sum_partials_* in asl.cu; `partials` holds `count` values.
    unsafe { b.launch(launch_config(1, RED_THREADS)?) }.w()?;
    Ok(out)
}

/// The single-label forward pass: the loss (scalar, or `[N]` for `Reduction::None`) in the
/// compute dtype, and the gradient when `want_grad` (`[N, K]`, logits dtype, scaled).
pub(crate) fn single_label(
    cfg: &SingleLabelConfig,
    scale: f64,
    want_grad: bool,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape, Option<CudaStorage>)> {
    match s1.dtype() {
        DType::F64 => single_label_in::<f64>(cfg, scale, want_grad, s1, l1, s2, l2),
        _ => single_label_in::<f32>(cfg, scale, want_grad, s1, l1, s2, l2),
    }
}

fn single_label_in<F: Real>(
    cfg: &SingleLabelConfig,
    scale: f64,
    want_grad: bool,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape, Option<CudaStorage>)> {
    let (rows, k) = l1.shape().dims2()?;
    let dev = s1.device().clone();
    let x = View::new(s1, l1, "single-label ASL logits", LOGITS)?;
    let t = View::new(s2, l2, "single-label ASL targets (class indices)", CLASSES)?;
    let per_row = cfg.reduction == Reduction::None;

    let mut grad = if want_grad {
        Some(alloc_like_logits(&dev, s1.dtype(), rows * k)?)
    } else {
        None
    };
    // SAFETY (both): every element is written by the kernel below before anything reads it.
    let mut losses = if per_row {
        Some(unsafe { dev.alloc::<F>(rows)? })
    } else {
        None
    };
    let mut partials = if per_row {
        None
    } else {
        Some(unsafe { dev.alloc::<f64>(rows)? })
    };
    let mut bad = dev.alloc_zeros::<u64>(1)?;

    let func = function(&dev, &format!("asl_sl_{}_{}", x.name(), t.name()))?;
    let stream = dev.cuda_stream();
    {
        let k64 = k as u64;
        let gp = F::from_f64(cfg.gamma_pos);
        let gn = F::from_f64(cfg.gamma_neg);
        let gpi = kernel::small_int(cfg.gamma_pos).unwrap_or(-1);
        let gni = kernel::small_int(cfg.gamma_neg).unwrap_or(-1);
        // As single_label_row computes them.
        let s_target = F::from_f64(1.0 - cfg.eps + cfg.eps / k as f64);
        let s_other = F::from_f64(cfg.eps / k as f64);
        let grad_scale = F::from_f64(scale);
        let null = 0u64;
        let mut b = stream.launch_builder(&func);
        x.push(&mut b);
        t.push(&mut b);
        b.arg(&k64)
            .arg(&gp)
            .arg(&gn)
            .arg(&gpi)
            .arg(&gni)
            .arg(&s_target)
            .arg(&s_other)
            .arg(&grad_scale);
        match grad.as_mut() {
            Some(g) => push_out(g, &mut b)?,
            None => {
                b.arg(&null);
            }
        }
        match losses.as_mut() {
            Some(p) => b.arg(p),
            None => b.arg(&null),
        };
        match partials.as_mut() {
            Some(p) => b.arg(p),
            None => b.arg(&null),
        };
        b.arg(&mut bad);
        // SAFETY: the arguments match asl_sl_* in asl.cu: x holds rows * k elements, t rows,
        // the outputs rows * k (grad) and rows (losses, partials); one block per row.
        unsafe { b.launch(launch_config(rows, SL_THREADS)?) }.w()?;
    }

    let (out, shape) = match (losses, partials) {
        (Some(losses), _) => (losses, Shape::from(rows)),
        (None, Some(partials)) => (
            sum_partials::<F>(&dev, &partials, rows, scale)?,
            Shape::from(()),
        ),
        (None, None) => unreachable!("one of the two is allocated"),
    };
    if let Some(row) = first_bad(&dev, &bad)? {
        return Err(AslError::ClassIndexOutOfRange {
            row,
            value: class_value(s2, l2, row)?,
            num_classes: k,
        }
        .into());
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), shape, grad))
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
    let n = logits.elem_count();
    let up = grad_res
        .to_dtype(kernel::compute_dtype(logits.dtype()))?
        .contiguous()?;
    let div = if reduction == Reduction::None {
        if !logits.dims().starts_with(up.dims()) {
            return Err(candle_core::Error::msg(format!(
                "ASL backward: upstream gradient of shape {:?} for logits of shape {:?}",
                up.dims(),
                logits.dims()
            )));
        }
        n / up.elem_count()
    } else if up.elem_count() == 1 {
        0
    } else {
        return Err(candle_core::Error::msg(format!(
            "ASL backward: a reduced loss needs a scalar upstream gradient, got shape {:?}",
            up.dims()
        )));
    };
    let dev = g.device.clone();
    let gname = match g.dtype() {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        _ => "f64",
    };
    {
        let (st, layout) = up.storage_and_layout();
        let Storage::Cuda(us) = &*st else {
            return Err(candle_core::Error::msg(
                "ASL backward: the upstream gradient is not on the GPU",
            ));
        };
        let upv = View::new(us, layout, "ASL upstream gradient", UPSTREAM)?;
        let n64 = n as u64;
        let div64 = div as u64;
        let func = if div == 0 {
            function(&dev, &format!("asl_scale_scalar_{gname}"))?
        } else {
            function(&dev, &format!("asl_scale_rows_{gname}"))?
        };
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        push_out(&mut g, &mut b)?;
        b.arg(&n64);
        upv.push(&mut b);
        if div != 0 {
            b.arg(&div64);
        }
        let blocks = n.div_ceil(CHAIN_THREADS as usize).min(CHAIN_MAX_BLOCKS);
        // SAFETY: matches asl_scale_* in asl.cu: g holds n elements, up one (scalar) or n / div.
        unsafe { b.launch(launch_config(blocks, CHAIN_THREADS)?) }.w()?;
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
    /// The launch geometry here is the one `asl.cu` is written for.
    #[test]
    fn launch_geometry_matches_the_kernel_source() {
        let src = include_str!("../kernels/asl.cu");
        for (name, value) in [
            ("ASL_ML_THREADS", super::ML_THREADS as usize),
            ("ASL_ML_ELEMS", super::ML_ELEMS),
            ("ASL_RED_THREADS", super::RED_THREADS as usize),
            ("ASL_SL_THREADS", super::SL_THREADS as usize),
            ("ASL_CHAIN_THREADS", super::CHAIN_THREADS as usize),
        ] {
            let line = format!("#define {name} {value}\n");
            assert!(src.contains(&line), "asl.cu lacks `{}`", line.trim());
        }
    }

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
