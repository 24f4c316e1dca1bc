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

pub mod adaptive;
mod error;
mod fast;
mod kernel;
pub mod metrics;
mod multilabel;
mod single_label;

#[cfg(feature = "cuda")]
mod cuda;
#[doc(hidden)]
pub mod cuda_launch;

pub use error::AslError;
pub use metrics::{MetricAccumulator, MetricsReport};
pub use multilabel::{AslConfig, AsymmetricLoss, Reduction};
pub use single_label::{AslSingleLabel, SingleLabelConfig};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
