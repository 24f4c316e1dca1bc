//! # asl-core
//!
//! The Asymmetric Loss (ASL) family for [candle](https://github.com/huggingface/candle), and the
//! evaluation metrics of multi-label classification.
//!
//! - [`AsymmetricLoss`]: multi-label sigmoid ASL (Ben-Baruch, Ridnik et al., ICCV 2021) with both
//!   gradient modes and every reduction, as a fused CPU kernel with a hand-written backward
//!   ([`AsymmetricLoss::forward`]) and as a composition of candle ops
//!   ([`AsymmetricLoss::forward_composed`]).
//! - [`AslSingleLabel`]: the single-label softmax ASL with label smoothing.
//! - [`adaptive`]: adaptive asymmetry (paper section 2.7), steering `gamma_neg` toward a target
//!   gap between the mean confidence on positives and on negatives.
//! - [`metrics`]: mAP exactly as the paper computes it, macro mAP over classes with positives,
//!   per-class AP, and CP/CR/CF1/OP/OR/OF1 at a threshold, with a batch accumulator.
//!
//! What this crate is not for: images, files, models. It depends on candle only, so any candle
//! project can use the loss.
//!
//! ## Modules
//!
//! From the bottom up; each module uses only those listed before it.
//!
//! - `error.rs`: [`AslError`]. `config.rs`: the losses' configurations ([`AslConfig`],
//!   [`SingleLabelConfig`], [`Reduction`]), plain data with its validation.
//! - `math.rs`: the scalar math the fused kernels share (the per-element multi-label value and
//!   gradient, the types the kernels read and compute in); `fast.rs`: its vectorised f32 path.
//!   Neither knows about candle.
//! - `dtype.rs`: the candle side of those types: CPU storages as typed slices, and the compute
//!   type for the logits' dtype.
//! - `cuda_launch.rs`: the CUDA kernel launches, planned without CUDA.
//! - `op.rs`: the one candle custom op both losses run as: the `FusedLoss` trait each loss
//!   implements, `Fused` (the op), and the gradient it keeps from the forward pass for the
//!   backward.
//! - `cuda.rs` (feature `cuda`): makes the launches that `cuda_launch.rs` plans; the kernels are
//!   in `kernels/`.
//! - `dispatch.rs`: the op's `CustomOp2` implementation: device and dtype dispatch of the forward
//!   pass to the loss's CPU pass or to the CUDA path, and the chaining of the upstream gradient.
//! - The losses, one file each: `multilabel.rs` ([`AsymmetricLoss`]) and `single_label.rs`
//!   ([`AslSingleLabel`]). Each holds the loss, its composed reference, and its branch of the
//!   fused op: the CPU pass and, for CUDA, the launch plan it picks.
//! - [`metrics`]: the evaluation metrics; [`adaptive`]: adaptive asymmetry. Both stand alone.

pub mod adaptive;
mod config;
mod dispatch;
mod dtype;
mod error;
mod fast;
mod math;
pub mod metrics;
mod multilabel;
mod op;
mod single_label;

#[cfg(feature = "cuda")]
mod cuda;
/// Public only for the crate's own tests (feature `launch-plans`); not a stable API.
#[cfg(feature = "launch-plans")]
#[doc(hidden)]
pub mod cuda_launch;
// Private otherwise: used by `cuda` (feature `cuda`), and compiled (and unit-tested) without it.
#[cfg(not(feature = "launch-plans"))]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod cuda_launch;

pub use config::{AslConfig, Reduction, SingleLabelConfig};
pub use error::AslError;
pub use metrics::{MetricAccumulator, MetricsReport};
pub use multilabel::AsymmetricLoss;
pub use single_label::AslSingleLabel;
