//! The CPU engines: TResNet run on plain `f32` buffers instead of candle ops, where candle
//! would make a pass over fresh memory for every op.
//!
//! - [`infer`]: the folded network (inference), each 1x1 convolution one matrix product over the
//!   whole batch in L2-sized column tiles, every 3x3 convolution Winograd F(2x2, 3x3), bias,
//!   activation and residual fused into the product's epilogue;
//! - [`train`]: one training step (BatchNorm on batch statistics, running statistics updated)
//!   with hand-written backward passes;
//! - [`primitives`], [`winograd`], [`buffers`]: what both are built of.
//!
//! Activations are channel-major, `[C, N, H, W]`, for a whole pass. Nothing here knows candle
//! modules: the model hands each engine its weights as tensors, and the
//! engines return tensors. The model chooses an engine for f32 weights on the CPU and uses
//! candle's ops otherwise; the parity tests compare the two.

pub(crate) mod buffers;
pub(crate) mod infer;
pub(crate) mod primitives;
pub(crate) mod train;
pub(crate) mod winograd;

use std::time::Duration;

use candle_core::{DType, Result, Tensor};

/// Time spent per kind of work (a profile), in the order first met.
pub type KindTimes = Vec<(&'static str, Duration)>;

/// A tensor's values as a flat `f32` vector.
pub(crate) fn tensor_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// Adds `spent` to `kind` in a profile.
pub(crate) fn add_time(profile: &mut KindTimes, kind: &'static str, spent: Duration) {
    match profile.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, t)) => *t += spent,
        None => profile.push((kind, spent)),
    }
}
