//! # asl-tresnet
//!
//! TResNet-M/L/XL/v2-L (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture",
//! WACV 2021) in candle, numerically identical to timm's `tresnet.py`, loading timm's
//! safetensors and the ASL paper's original checkpoints, with the pretrained registry and the
//! Hugging Face hub client.
//!
//! **Status:** not implemented yet: the model, weight loading, the registry and the hub client
//! arrive with issues 3 and 4. Today this crate only re-exports [`asl_core`], so that downstream
//! code can depend on it already. What this crate will not hold: datasets, augmentation and the
//! training loop (those live in `asl-cli`'s library).

pub use asl_core;
