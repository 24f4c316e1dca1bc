//! # asl-tresnet
//!
//! TResNet-M/L/XL/v2-L (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture",
//! WACV 2021) in candle, numerically identical to timm's `tresnet.py`, loading timm's
//! safetensors and the ASL paper's original checkpoints, with the pretrained registry and the
//! Hugging Face hub client.
//!
//! **Status:** the training path ([`TResNet`], built from a `VarBuilder` over timm-named
//! weights, BatchNorm in eval or batch-statistics mode) and the folded inference path (with a
//! CPU f32 engine, `infer.rs`) match timm; weight files (timm safetensors, the paper's `.pth`,
//! our metadata format) load and convert; [`registry`] names every pretrained model, [`hub`]
//! fetches from the Hugging Face hub (Python's cache, offline mode) and [`pretrained`] loads a
//! model by name, file or repo. What this crate does not hold: datasets, augmentation and the
//! training loop (those live in `asl-cli`'s library).

pub mod classes;
pub mod hub;
mod infer;
pub mod model;
pub mod ops;
pub mod pretrained;
pub mod registry;
mod train_engine;
pub mod weights;
mod winograd;

pub use asl_core;
pub use model::{trainable_vars, HeadKind, TResNet, TResNetConfig};
