//! CUDA support for the fused ops.
//!
//! The dedicated CUDA kernels arrive with issue 7. Until then a fused op given CUDA tensors
//! copies them to the host, runs the CPU kernel (the reference the CUDA kernels will be tested
//! against) and copies the result back: correct, not fast.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CudaStorage, CustomOp2, Layout, Result, Shape};

/// Runs `op`'s CPU forward on the host copies of two CUDA storages.
pub(crate) fn via_cpu2<C: CustomOp2>(
    op: &C,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (h1, h2) = (s1.to_cpu_storage()?, s2.to_cpu_storage()?);
    let (out, shape) = op.cpu_fwd(&h1, l1, &h2, l2)?;
    Ok((s1.device().storage_from_cpu_storage(&out)?, shape))
}
