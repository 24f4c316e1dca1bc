//! What goes wrong reading a dataset: bad rows, each naming its file and line, and errors
//! about a dataset as a whole.

use std::fmt;
use std::path::PathBuf;

/// How many bad rows a [`DataError::BadRows`] message lists before "and N more".
const BAD_ROWS_SHOWN: usize = 10;

/// A row that could not become a [`Sample`], and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    /// Where it was read (see [`Sample::origin`]).
    pub origin: String,
    /// What is wrong, naming the image file where there is one.
    pub reason: String,
}

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// Why a dataset could not be read. Messages name the file (and line) and what to try.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset path does not exist.
    #[error("dataset {} not found", path.display())]
    NotFound { path: PathBuf },
    /// A file could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The format could not be told from the path.
    #[error(
        "cannot tell the dataset format of {}: {reason}; give the format explicitly \
         (coco, voc, csv or jsonl)",
        path.display()
    )]
    UnknownFormat { path: PathBuf, reason: String },
    /// The files the format needs are not where they should be.
    #[error("{}: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },
    /// A file as a whole cannot be used (invalid COCO JSON, a CSV without the header).
    #[error("{origin}: {reason}")]
    Parse { origin: String, reason: String },
    /// Options that contradict themselves (duplicate class names, ...).
    #[error("{0}")]
    Options(String),
    /// Rows that cannot be used; `shown` holds the first few of `total`.
    #[error("{}", bad_rows_message(dataset, *total, shown))]
    BadRows {
        /// What was read (file or folder).
        dataset: String,
        total: usize,
        shown: Vec<BadRow>,
    },
}

fn bad_rows_message(dataset: &str, total: usize, shown: &[BadRow]) -> String {
    let rows = if total == 1 { "bad row" } else { "bad rows" };
    let mut msg = format!("{total} {rows} in {dataset}:");
    for row in shown {
        msg.push_str(&format!("\n  {row}"));
    }
    if total > shown.len() {
        msg.push_str(&format!("\n  ... and {} more", total - shown.len()));
    }
    msg.push_str("\nfix or remove them, or skip them (skip_bad, `--skip-bad`)");
    msg
}

/// The error for `bad` rows of `dataset`.
pub(crate) fn bad_rows(dataset: String, bad: Vec<BadRow>) -> DataError {
    let total = bad.len();
    DataError::BadRows {
        dataset,
        total,
        shown: bad.into_iter().take(BAD_ROWS_SHOWN).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_message_lists_the_first_ten() {
        let bad: Vec<BadRow> = (1..=12)
            .map(|i| BadRow {
                origin: format!("t.csv:{i}"),
                reason: "r".into(),
            })
            .collect();
        let msg = bad_rows("t.csv".into(), bad).to_string();
        assert!(msg.starts_with("12 bad rows in t.csv:"), "{msg}");
        assert!(msg.contains("t.csv:10: r"), "{msg}");
        assert!(!msg.contains("t.csv:11: r"), "{msg}");
        assert!(msg.contains("... and 2 more"), "{msg}");
    }
}
