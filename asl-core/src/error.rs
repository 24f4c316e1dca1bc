//! Errors raised by the loss functions and the metrics.
//!
//! Every public loss entry point returns `candle_core::Result`, so these errors reach callers
//! wrapped in `candle_core::Error`; their `Display` text is what the user sees.

use candle_core::{DType, Shape};

/// What went wrong, said in terms of the user's inputs.
#[derive(Debug, thiserror::Error)]
pub enum AslError {
    /// A configuration value is outside the range the loss is defined for.
    #[error("invalid loss configuration: {0}")]
    InvalidConfig(String),

    /// Logits and targets disagree in shape, or the shape has the wrong rank.
    #[error("{what}: expected {expected}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: String,
        got: Shape,
    },

    /// A dtype the operation does not accept.
    #[error("{what}: unsupported dtype {dtype:?} (accepted: {accepted})")]
    DType {
        what: &'static str,
        dtype: DType,
        accepted: &'static str,
    },

    /// A multi-label target that is NaN or outside [0, 1].
    #[error(
        "target at [{row}, {col}] is {value}: multi-label targets must be 0/1 or soft labels in [0, 1]"
    )]
    TargetOutOfRange { row: usize, col: usize, value: f64 },

    /// A single-label class index outside `0..num_classes`.
    #[error("target class index {value} at row {row} is out of range for {num_classes} classes")]
    ClassIndexOutOfRange {
        row: usize,
        value: i64,
        num_classes: usize,
    },

    /// A score that cannot be ranked (NaN) was given to a metric.
    #[error("score at [{row}, {col}] is NaN: metrics need finite or infinite scores")]
    NanScore { row: usize, col: usize },

    /// A metric label that is not 1 (positive), 0 (negative) or -1 (ignored).
    #[error(
        "label at [{row}, {col}] is {value}: metric labels must be 1 (positive), 0 (negative) or -1 (ignored)"
    )]
    BadMetricLabel { row: usize, col: usize, value: f64 },

    /// An operation that needs a device the build does not support yet.
    #[error("{0}")]
    Unsupported(String),
}

impl From<AslError> for candle_core::Error {
    fn from(e: AslError) -> Self {
        candle_core::Error::wrap(e)
    }
}
