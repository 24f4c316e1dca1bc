//! # asl-tresnet
//!
//! TResNet-M/L/XL/v2-L in candle, numerically identical to timm.

pub mod cpu;
pub mod model;
pub mod pretrained;

pub use asl_core;
pub use model::{trainable_vars, HeadKind, TResNet, TResNetConfig};
