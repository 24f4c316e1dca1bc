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
pub use model::{trainable_vars, HeadKind, TResNet, TResNetConfig};

// ---------------------------------------------------------------------------------------------
// The crate's error type: what went wrong, as a value callers can match on, with a message that
// names the file, key or setting involved and says what to do.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed (shapes, dtypes, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The loss refused its input or settings.
    #[error(transparent)]
    Loss(#[from] asl_core::AslError),
    /// Reading or writing a file failed.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// `cannot read`, `writing`, ...
        doing: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Fetching from the Hugging Face hub failed.
    #[error(transparent)]
    Hub(#[from] crate::pretrained::hub::HubError),
    /// Tensors do not fit an architecture: the first missing, unexpected and mis-shaped keys.
    #[error("the weights do not {target}:\n{mismatch}")]
    KeyMismatch {
        /// `fit TResNet layers [3, 4, 11, 3] ...` or `match tresnet_m (...)`.
        target: String,
        mismatch: pretrained::keys::KeyMismatch,
    },
    /// An architecture name that is not one of ours.
    #[error("unknown architecture {name:?} (known: {})", crate::TResNetConfig::ARCHS.join(", "))]
    UnknownArch { name: String },
    /// A `--model` that is no file, registry name or hub repo.
    #[error("{0}")]
    UnknownModel(String),
    /// A registry entry whose hub repo does not exist: the message says how to make it.
    #[error("{message}")]
    Unpublished { name: String, message: String },
    /// A weight file's content is not what it should be (format, metadata, checkpoint layout).
    #[error("{0}")]
    Metadata(String),
    /// Settings that cannot work (input size, threshold, class names for the wrong count).
    #[error("{0}")]
    Config(String),
    /// An image could not be read.
    #[cfg(feature = "images")]
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// A dataset could not be read.
    #[cfg(feature = "data")]
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The embedded demo data could not be decoded.
    #[cfg(feature = "data")]
    #[error(transparent)]
    Demo(#[from] crate::data::demo::DemoDataError),
    /// Training cannot go on (a non-finite loss, a checkpoint that does not fit the run).
    #[cfg(feature = "train")]
    #[error("{0}")]
    Train(String),
    /// An error with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error with `context` (what was being done) in front of it.
    pub fn context(self, context: impl std::fmt::Display) -> Error {
        Error::Context {
            context: context.to_string(),
            source: Box::new(self),
        }
    }

    /// Reading `path` failed.
    pub fn read(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            doing: "cannot read",
            path: path.into(),
            source,
        }
    }

    /// Writing `path` failed.
    pub fn write(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            doing: "writing",
            path: path.into(),
            source,
        }
    }

    /// The innermost error, below every [`Error::Context`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }
}

/// Errors of this crate inside candle code (a `Module`, a custom op) travel as candle errors.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}

/// The README's Rust examples (the loss, tagging, fine-tuning), compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(all(doctest, feature = "train"))]
pub struct ReadmeDoctests;
