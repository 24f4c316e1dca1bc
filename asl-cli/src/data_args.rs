//! The dataset flags `validate` and `train` share.

use std::path::PathBuf;

use asl_tresnet::data::{DatasetFormat, Difficult, ReadOptions};
use clap::{Args, ValueEnum};

/// `--format` of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataFormatArg {
    Coco,
    Voc,
    Csv,
    Jsonl,
}

impl From<DataFormatArg> for DatasetFormat {
    fn from(f: DataFormatArg) -> DatasetFormat {
        match f {
            DataFormatArg::Coco => DatasetFormat::Coco,
            DataFormatArg::Voc => DatasetFormat::Voc,
            DataFormatArg::Csv => DatasetFormat::Csv,
            DataFormatArg::Jsonl => DatasetFormat::Jsonl,
        }
    }
}

/// `--difficult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DifficultArg {
    Ignore,
    Positive,
    Negative,
}

impl From<DifficultArg> for Difficult {
    fn from(d: DifficultArg) -> Difficult {
        match d {
            DifficultArg::Ignore => Difficult::Ignore,
            DifficultArg::Positive => Difficult::Positive,
            DifficultArg::Negative => Difficult::Negative,
        }
    }
}

/// How a dataset is read.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset format (default: detected from the path).
    #[arg(long, value_enum)]
    pub format: Option<DataFormatArg>,
    /// Split of a COCO or VOC root. validate reads val (COCO) or test (VOC) by default; train
    /// reads train / trainval from --data and val / test from --val-data.
    #[arg(long)]
    pub split: Option<String>,
    /// CSV/TSV: the separator between labels in the labels column (default: space).
    #[arg(long)]
    pub label_sep: Option<char>,
    /// CSV/TSV/JSONL: resolve image paths against this folder (default: the file's folder).
    #[arg(long)]
    pub image_root: Option<PathBuf>,
    /// Skip bad rows (missing or unreadable images, unknown labels, duplicates) with a count
    /// instead of stopping before any work.
    #[arg(long)]
    pub skip_bad: bool,
}

impl DataArgs {
    /// The reader's options for one split.
    pub fn read_options(&self, split: Option<String>) -> ReadOptions {
        ReadOptions {
            format: self.format.map(DatasetFormat::from),
            split,
            label_sep: self.label_sep,
            image_root: self.image_root.clone(),
            skip_bad: self.skip_bad,
            ..ReadOptions::default()
        }
    }
}
