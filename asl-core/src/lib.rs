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
//! - The losses, one file each: `multilabel.rs` ([`AsymmetricLoss`], [`AslConfig`],
//!   [`Reduction`]) and `single_label.rs` ([`AslSingleLabel`], [`SingleLabelConfig`]). Each holds
//!   the loss's configuration, its composed reference, and its branch of the fused op: the CPU
//!   pass and, for CUDA, the launch plan it picks.
//! - `math.rs`: the scalar math the fused kernels share (the per-element multi-label value and
//!   gradient, the types the kernels read and compute in); `fast.rs`: its vectorised f32 path.
//!   Neither knows about candle.
//! - `op.rs`: the one candle custom op both losses run as (the `FusedLoss` trait each loss
//!   implements, and `Fused`, its `CustomOp2`), the gradient kept from the forward pass for the
//!   backward, and the chaining of the upstream gradient.
//! - `dispatch.rs`: device and dtype dispatch: CPU storages as typed slices and the compute type
//!   for the logits' dtype, or the CUDA path. `cuda.rs` (feature `cuda`) makes the CUDA launches
//!   that `cuda_launch.rs` plans without CUDA; the kernels are in `kernels/`.
//! - [`metrics`]: the evaluation metrics; [`adaptive`]: adaptive asymmetry; `error.rs`:
//!   [`AslError`].

pub mod adaptive;
mod dispatch;
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

pub use error::AslError;
pub use metrics::{MetricAccumulator, MetricsReport};
pub use multilabel::{AslConfig, AsymmetricLoss, Reduction};
pub use single_label::{AslSingleLabel, SingleLabelConfig};
