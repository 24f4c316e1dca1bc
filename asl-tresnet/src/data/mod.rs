//! Labelled image datasets: the [`Dataset`] trait the trainer and the evaluation read, the
//! datasets users bring on disk read into one representation ([`FileDataset`]), samples held in
//! memory ([`InMemoryDataset`]), and a parallel loader that turns images into model inputs.
//!
//! # Formats ([`read_dataset`])
//! - **MS-COCO 2014** ([`DatasetFormat::Coco`]): a root holding
//!   `annotations/instances_{split}2014.json` and `{split}2014/` (split `val` unless
//!   [`ReadOptions::split`] says otherwise; a split that ends in a year, e.g. `val2017`, is used as
//!   is), or an explicit annotation file ([`ReadOptions::annotations`] or the path itself) and image
//!   folder ([`ReadOptions::images`]; by default `{root}/{split}` next to the `annotations` folder
//!   the file sits in). Multi-hot over the file's `categories` in category-id order (1..90 with
//!   gaps, names from the file). Images without any annotation are dropped, as the ASL reference
//!   does (40,137 of the 40,504 val2014 images remain); [`ReadOptions::keep_empty`] keeps them as
//!   all-negative. Samples keep the order of the file's `images` list.
//! - **Pascal VOC 2007** ([`DatasetFormat::Voc`]): a root with `Annotations/*.xml`,
//!   `ImageSets/Main/{split}.txt` and `JPEGImages/`. Without a split, `test` is read (the split the
//!   paper reports), else `val`, else every XML in `Annotations/` (sorted by name); a split that is
//!   asked for by name must exist. The vocabulary is the 20 VOC classes in alphabetical order
//!   ([`crate::pretrained::classes::VOC`]). The image of `Annotations/{id}.xml` is `JPEGImages/{id}.jpg`
//!   (the devkit's rule), or the XML's `<filename>` when only that one exists.
//!   Difficult objects follow [`Difficult`]: by default a class whose only objects in an image
//!   are difficult is *ignored* for that image (label `-1`), the VOC devkit's classification
//!   ground truth (`1` / `0` for "difficult only" / `-1` in its own encoding).
//! - **CSV / TSV** ([`DatasetFormat::Csv`]): a header row naming the columns `image` and `labels`
//!   (any order, case-insensitive, other columns ignored), RFC 4180 quoting (a quoted field may
//!   hold the delimiter, newlines and `""` for a quote). Tab-separated when the file name ends in
//!   `.tsv` or the header holds a tab. Labels are separated by whitespace, or by
//!   [`ReadOptions::label_sep`] (`;`, `|`, ...); an empty `labels` field is an image with no
//!   positive. Image paths are relative to the CSV file's folder, or to
//!   [`ReadOptions::image_root`]. Line numbers count physical lines from 1 (the header is line 1);
//!   a record that spans lines is named by its first.
//! - **JSON Lines** ([`DatasetFormat::Jsonl`]): one `{"image": "...", "labels": ["a", "b"]}` per
//!   line (other keys ignored, blank lines skipped); paths resolved as for CSV.
//!
//! The format is detected from the path ([`detect_format`]) unless given.
//!
//! # Labels and vocabulary
//! Each [`Sample`] has one label per class of [`FileDataset::classes`]: `1` positive, `0` negative,
//! `-1` ignored, the encoding `asl_core::metrics::MetricAccumulator` takes (as `f32`, see
//! [`FileDataset::labels_flat`]). The vocabulary is [`ReadOptions::classes`] when given (for every
//! format), else the dataset's own: COCO's categories, the 20 VOC classes, or for CSV/JSONL the
//! **sorted** (byte order) set of labels of every well-formed row. A CSV/JSONL row lists the
//! positives of its image: every class it does not name is negative.
//! [`FileDataset::align_to`] maps a dataset onto a model's classes by name.
//!
//! # Bad rows
//! Missing or unreadable images (every image's header is read up front, in parallel), images over
//! the pixel limit, unknown labels, duplicate images and malformed lines are each a [`BadRow`]
//! naming its file and line (COCO: the image id and file name; VOC: the XML file). Reading fails
//! with all of them counted and the first ten listed ([`DataError::BadRows`]) unless
//! [`ReadOptions::skip_bad`], which drops them into [`FileDataset::skipped`]. An image whose header
//! reads fine can still fail to decode: the [`Loader`] reports those per batch.
//!
//! Not for: augmentation or shuffling policy (the trainer's).

mod coco;
pub mod demo;
mod error;
mod files;
mod loader;
mod read;
mod table;
mod voc;

use std::sync::Arc;

pub use error::{BadRow, DataError};
pub use files::{FileDataset, Sample};
pub use loader::{loader, Batch, Loader};
pub use read::{detect_format, read_dataset, DatasetFormat, Difficult, ReadOptions};
pub use table::split_csv_line;

// What the format readers share.
use read::{check_unique, read_text, Entry, Mark, Parsed, RawRow};

use crate::images::{ImageError, RgbImage};

/// A multi-label dataset: images by index, each with one label per class. The trainer and the
/// evaluation read datasets through this trait, so a file-backed [`FileDataset`], an
/// [`InMemoryDataset`] or a reader of one's own all train the same way.
pub trait Dataset: Send + Sync {
    /// The vocabulary: `labels(i)[k]` is the label of `classes()[k]`.
    fn classes(&self) -> &[String];

    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The image of sample `i`, decoded to 8-bit RGB (any size: the trainer resizes it).
    fn image(&self, i: usize) -> Result<RgbImage, ImageError>;

    /// The labels of sample `i`: `1` positive, `0` negative, `-1` ignored (not trained on as a
    /// positive, and left out of the metrics for that class).
    fn labels(&self, i: usize) -> &[i8];

    /// Sample `i` for messages: where it was read, or just its index.
    fn describe(&self, i: usize) -> String {
        format!("sample {i}")
    }
}

/// The labels of the samples at `indices`, row-major, as `f32` (what the metrics take).
pub fn labels_of(data: &dyn Dataset, indices: &[usize]) -> Vec<f32> {
    indices
        .iter()
        .flat_map(|&i| data.labels(i).iter().map(|&l| f32::from(l)))
        .collect()
}

/// A dataset of images held in memory.
///
/// ```
/// use asl_tresnet::data::{Dataset, InMemoryDataset};
/// let img = image::RgbImage::new(8, 8);
/// let ds = InMemoryDataset::new(vec!["cat".into(), "dog".into()], vec![(img, vec![1, 0])])?;
/// assert_eq!((ds.len(), ds.labels(0)), (1, &[1i8, 0][..]));
/// # Ok::<(), asl_tresnet::data::DataError>(())
/// ```
#[derive(Clone, Debug)]
pub struct InMemoryDataset {
    classes: Vec<String>,
    samples: Arc<[(RgbImage, Vec<i8>)]>,
}

impl InMemoryDataset {
    /// Refuses duplicate class names, labels of the wrong length and labels other than 1, 0
    /// and -1.
    pub fn new(
        classes: Vec<String>,
        samples: Vec<(RgbImage, Vec<i8>)>,
    ) -> Result<InMemoryDataset, DataError> {
        check_unique(&classes, "the classes")?;
        for (i, (_, labels)) in samples.iter().enumerate() {
            if labels.len() != classes.len() {
                return Err(DataError::Options(format!(
                    "sample {i} has {} labels for {} classes",
                    labels.len(),
                    classes.len()
                )));
            }
            if let Some(l) = labels.iter().find(|l| !(-1..=1).contains(*l)) {
                return Err(DataError::Options(format!(
                    "sample {i} has the label {l}: labels are 1, 0 or -1"
                )));
            }
        }
        Ok(InMemoryDataset {
            classes,
            samples: samples.into(),
        })
    }
}

impl Dataset for InMemoryDataset {
    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn image(&self, i: usize) -> Result<RgbImage, ImageError> {
        Ok(self.samples[i].0.clone())
    }

    fn labels(&self, i: usize) -> &[i8] {
        &self.samples[i].1
    }
}
