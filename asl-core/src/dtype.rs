//! The dtypes of the fused op, on candle's side: CPU storages borrowed as typed slices
//! ([`Slice`], [`slice`]), and the type the kernels compute in for each logits dtype ([`Logit`],
//! [`compute_dtype`]: f32 for f16/bf16/f32, f64 for f64). Shared by the op's CPU and CUDA
//! paths, the launch plans and the losses.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result};
use half::{bf16, f16};

use crate::error::AslError;
use crate::math::{Compute, Elem};

/// A logits element type, and the float type the kernels compute in for it (see
/// [`compute_dtype`]).
pub(crate) trait Logit: Elem {
    type Compute: Compute;
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
