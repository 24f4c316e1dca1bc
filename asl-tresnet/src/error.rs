//! The crate's error type: what went wrong, as a value callers can match on, with a message
//! that names the file, key or setting involved and says what to do.

use std::path::PathBuf;

use crate::pretrained::keys::KeyMismatch;

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
        path: PathBuf,
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
        mismatch: KeyMismatch,
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
    pub fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            doing: "cannot read",
            path: path.into(),
            source,
        }
    }

    /// Writing `path` failed.
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
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
