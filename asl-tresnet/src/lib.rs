//! # asl-tresnet
//!
//! TResNet-M/L/XL/v2-L (Ridnik et al., "TResNet: High Performance GPU-Dedicated Architecture",
//! WACV 2021) for candle, numerically identical to timm's `tresnet.py`: what timm is for
//! PyTorch, for TResNet and the Asymmetric Loss. A candle project adds this crate to tag images
//! with a pretrained model or to fine-tune one on its own data.
//!
//! | module | what it holds |
//! |---|---|
//! | [`model`] | the model: [`TResNetConfig`] (variants), the layers under timm's weight names, [`TResNet`] (training path, folded inference path, `forward_features` / `forward_head`) |
//! | [`cpu`] | the CPU engines the model runs on with f32 weights: matrix-product and Winograd convolutions, inference and a training step with hand-written backward passes |
//! | [`pretrained`] | [`PretrainedCfg`](pretrained::PretrainedCfg), the registry of pretrained models, weight files (timm safetensors, the paper's `.pth`, ours), the Hugging Face hub client, loading by name |
//! | [`images`] | decoding and the preprocessing a model's configuration describes (feature `images`) |
//! | [`data`] | the [`Dataset`](data::Dataset) trait, COCO / VOC / CSV / JSON Lines readers, in-memory datasets, the prefetching loader (feature `data`) |
//! | [`augment`] | the ASL recipe's Cutout + RandAugment (feature `train`) |
//! | [`train`] | the [`Trainer`](train::Trainer): Adam, OneCycle, EMA, adaptive asymmetry, checkpoints, callbacks (feature `train`) |
//!
//! The loss and the metrics are [`asl_core`]'s, re-exported here. Errors are [`Error`].
//!
//! ```no_run
//! use asl_tresnet::images::Preprocess;
//! use asl_tresnet::pretrained::{load_model, CfgOverrides, HubConfig, ModelSource};
//! let loaded = load_model(
//!     &ModelSource::parse("tresnet_l-coco")?,
//!     &CfgOverrides::default(),
//!     &HubConfig::from_env(),
//!     &candle_core::Device::Cpu,
//! )?;
//! let prep = Preprocess::new(&loaded.cfg);
//! let x = prep.batch(&[asl_tresnet::images::load_rgb("photo.jpg".as_ref(), prep.max_pixels)?], &candle_core::Device::Cpu)?;
//! for (k, score) in loaded.labels(&loaded.scores(&x)?[0], None) {
//!     println!("{} {score:.2}", loaded.cfg.class_names[k]);
//! }
//! # Ok::<(), asl_tresnet::Error>(())
//! ```
//!
//! # Features
//! - `hub` (default): downloads from the Hugging Face hub (`hf-hub`, `ureq`, `sha2`); without
//!   it, hub models load from the local cache only.
//! - `images`: image decoding and preprocessing (`image`).
//! - `data` (implies `images`): datasets and the loader (`serde`, `roxmltree`).
//! - `train` (default, implies `data`): augmentation and the trainer (`rand`, `rand_chacha`).
//! - `cuda`: candle's CUDA backend and asl-core's CUDA losses.
//!
//! `default-features = false` leaves the model, the CPU engines and weight loading.

mod atomic;
pub mod cpu;
mod error;
pub mod model;
pub mod pretrained;

#[cfg(feature = "train")]
pub mod augment;
#[cfg(feature = "data")]
pub mod data;
#[cfg(feature = "images")]
pub mod images;
#[cfg(feature = "train")]
pub mod train;

pub use asl_core;
pub use atomic::{write_atomic, write_atomic_via};
pub use error::{Error, Result};
pub use model::{trainable_vars, HeadKind, TResNet, TResNetConfig};

/// The README's Rust examples (the loss, tagging, fine-tuning), compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(all(doctest, feature = "train"))]
pub struct ReadmeDoctests;
