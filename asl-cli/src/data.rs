//! Labelled image datasets a user brings, read into one representation, and a parallel loader
//! that turns their images into model inputs.
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
//!   ([`asl_tresnet::classes::VOC`]). The image of `Annotations/{id}.xml` is `JPEGImages/{id}.jpg`
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
//! Each [`Sample`] has one label per class of [`Dataset::classes`]: `1` positive, `0` negative,
//! `-1` ignored, the encoding `asl_core::metrics::MetricAccumulator` takes (as `f32`, see
//! [`Dataset::labels_flat`]). The vocabulary is [`ReadOptions::classes`] when given (for every
//! format), else the dataset's own: COCO's categories, the 20 VOC classes, or for CSV/JSONL the
//! **sorted** (byte order) set of labels of every well-formed row. A CSV/JSONL row lists the
//! positives of its image: every class it does not name is negative.
//! [`Dataset::align_to`] maps a dataset onto a model's classes by name.
//!
//! # Bad rows
//! Missing or unreadable images (every image's header is read up front, in parallel), images over
//! the pixel limit, unknown labels, duplicate images and malformed lines are each a [`BadRow`]
//! naming its file and line (COCO: the image id and file name; VOC: the XML file). Reading fails
//! with all of them counted and the first ten listed ([`DataError::BadRows`]) unless
//! [`ReadOptions::skip_bad`], which drops them into [`Dataset::skipped`]. An image whose header
//! reads fine can still fail to decode: the [`Loader`] reports those per batch.
//!
//! Not for: augmentation or shuffling policy (the training loop's), model inference.

mod coco;
mod loader;
mod table;
mod voc;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::images::DEFAULT_MAX_PIXELS;

pub use loader::{loader, Batch, Loader};
pub use table::split_csv_line;

/// How many bad rows a [`DataError::BadRows`] message lists before "and N more".
const BAD_ROWS_SHOWN: usize = 10;

/// The on-disk layout of a dataset.
///
/// ```
/// use asl_cli::data::DatasetFormat;
/// assert_eq!("tsv".parse::<DatasetFormat>(), Ok(DatasetFormat::Csv));
/// assert_eq!(DatasetFormat::Jsonl.to_string(), "jsonl");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetFormat {
    /// MS-COCO instances JSON + image folder.
    Coco,
    /// Pascal VOC: `Annotations/`, `ImageSets/Main/`, `JPEGImages/`.
    Voc,
    /// CSV or TSV with a header `image,labels`.
    Csv,
    /// JSON Lines, one `{"image": ..., "labels": [...]}` per line.
    Jsonl,
}

impl DatasetFormat {
    /// The name [`FromStr`](std::str::FromStr) accepts and `Display` prints.
    pub fn name(self) -> &'static str {
        match self {
            DatasetFormat::Coco => "coco",
            DatasetFormat::Voc => "voc",
            DatasetFormat::Csv => "csv",
            DatasetFormat::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DatasetFormat {
    type Err = String;

    /// `coco`, `voc`, `csv`, `tsv` (same reader as CSV), `jsonl` or `ndjson`, any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "coco" => Ok(DatasetFormat::Coco),
            "voc" => Ok(DatasetFormat::Voc),
            "csv" | "tsv" => Ok(DatasetFormat::Csv),
            "jsonl" | "ndjson" => Ok(DatasetFormat::Jsonl),
            _ => Err(format!(
                "unknown dataset format {s:?}: expected coco, voc, csv, tsv or jsonl"
            )),
        }
    }
}

/// How a Pascal VOC object marked `<difficult>1</difficult>` counts for its class, when the image
/// has no other, non-difficult object of that class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Difficult {
    /// Label `-1`: neither positive nor negative, the sample does not count for that class.
    /// The VOC devkit's classification convention, and the default.
    #[default]
    Ignore,
    /// Label `1`: the object is in the image, difficult or not.
    Positive,
    /// Label `0`: as if the object were not annotated.
    Negative,
}

/// What [`read_dataset`] reads and how. `Default` reads the detected format with the dataset's own
/// vocabulary, fails on bad rows and checks every image header against
/// [`DEFAULT_MAX_PIXELS`].
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The format; detected from the path when `None` ([`detect_format`]).
    pub format: Option<DatasetFormat>,
    /// COCO: `val` (default), `train`, or a name with its year such as `val2017`.
    /// VOC: the `ImageSets/Main/{split}.txt` list; default `test`, else `val`, else all XMLs.
    pub split: Option<String>,
    /// COCO: the instances JSON, instead of the one the root and split name.
    pub annotations: Option<PathBuf>,
    /// COCO and VOC: the image folder, instead of the one the layout names.
    pub images: Option<PathBuf>,
    /// COCO: keep images without annotations (all-negative) instead of dropping them.
    pub keep_empty: bool,
    /// CSV/TSV: the separator between labels in the `labels` field; whitespace when `None`.
    pub label_sep: Option<char>,
    /// CSV/JSONL: the folder image paths are relative to, instead of the file's own folder.
    pub image_root: Option<PathBuf>,
    /// VOC: how difficult objects count.
    pub difficult: Difficult,
    /// The vocabulary, in order, instead of the dataset's own; a label outside it is a bad row.
    pub classes: Option<Vec<String>>,
    /// Drop bad rows (listed in [`Dataset::skipped`]) instead of failing.
    pub skip_bad: bool,
    /// Read every image's header up front (missing, unreadable and too large images become bad
    /// rows). On by default.
    pub check_images: bool,
    /// The largest `width * height` an image may have.
    pub max_pixels: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            split: None,
            annotations: None,
            images: None,
            keep_empty: false,
            label_sep: None,
            image_root: None,
            difficult: Difficult::Ignore,
            classes: None,
            skip_bad: false,
            check_images: true,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// One labelled image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The image file, resolved against the dataset's image folder.
    pub image: PathBuf,
    /// One label per class of the dataset: `1` positive, `0` negative, `-1` ignored.
    pub labels: Vec<i8>,
    /// Where the sample was read, for messages: `data/train.csv:12`,
    /// `.../instances_val2014.json: image id 42 (COCO_val2014_000000000042.jpg)`,
    /// `.../Annotations/000001.xml`.
    pub origin: String,
}

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

/// A labelled dataset: samples with labels over an explicit, ordered vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// The format it was read from.
    pub format: DatasetFormat,
    /// What was read, for messages: the annotation file, the split list or the table.
    pub source: String,
    /// The vocabulary: `samples[i].labels[k]` is the label of `classes[k]`.
    pub classes: Vec<String>,
    /// The samples, in the dataset's order.
    pub samples: Vec<Sample>,
    /// Bad rows dropped under `skip_bad`, in the dataset's order.
    pub skipped: Vec<BadRow>,
    /// COCO images dropped because they have no annotation (0 with `keep_empty`).
    pub unannotated: usize,
}

impl Default for Dataset {
    /// An empty CSV dataset: what `std::mem::take` leaves behind.
    fn default() -> Self {
        Dataset {
            format: DatasetFormat::Csv,
            source: String::new(),
            classes: Vec::new(),
            samples: Vec::new(),
            skipped: Vec::new(),
            unannotated: 0,
        }
    }
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The image files, in sample order (what [`loader`] takes).
    pub fn image_paths(&self) -> Vec<PathBuf> {
        self.samples.iter().map(|s| s.image.clone()).collect()
    }

    /// All labels as `f32`, row-major `[samples, classes]`: what
    /// `asl_core::metrics::MetricAccumulator::push_slices` takes.
    ///
    /// ```
    /// use asl_cli::data::{Dataset, DatasetFormat, Sample};
    /// let sample = |labels: Vec<i8>| Sample { image: "a.jpg".into(), labels, origin: String::new() };
    /// let ds = Dataset {
    ///     format: DatasetFormat::Csv,
    ///     source: "t.csv".into(),
    ///     classes: vec!["cat".into(), "dog".into()],
    ///     samples: vec![sample(vec![1, 0]), sample(vec![-1, 1])],
    ///     skipped: vec![],
    ///     unannotated: 0,
    /// };
    /// assert_eq!(ds.labels_flat(), vec![1.0, 0.0, -1.0, 1.0]);
    /// assert_eq!(ds.labels_for(&[1]), vec![-1.0, 1.0]);
    /// ```
    pub fn labels_flat(&self) -> Vec<f32> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.iter().map(|&l| f32::from(l)))
            .collect()
    }

    /// The labels of the samples at `indices` (e.g. a [`Batch`]'s), row-major, as `f32`.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn labels_for(&self, indices: &[usize]) -> Vec<f32> {
        indices
            .iter()
            .flat_map(|&i| self.samples[i].labels.iter().map(|&l| f32::from(l)))
            .collect()
    }

    /// The dataset with its labels expressed over `model_classes`, matched by exact name.
    ///
    /// - Same classes in the same order: unchanged.
    /// - A model class the dataset does not have is negative (`0`) for every sample: a dataset's
    ///   annotations are taken as exhaustive over what they name.
    /// - A dataset class the model does not have: a sample positive for it is a bad row naming
    ///   the label (dropped into [`Dataset::skipped`] with `skip_bad`, else the error lists them);
    ///   a sample where it is negative or ignored just loses that column.
    pub fn align_to(self, model_classes: &[String], skip_bad: bool) -> Result<Dataset, DataError> {
        check_unique(model_classes, "the model's classes")?;
        if self.classes == model_classes {
            return Ok(self);
        }
        let model_index: HashMap<&str, usize> = model_classes
            .iter()
            .enumerate()
            .map(|(k, c)| (c.as_str(), k))
            .collect();
        let target: Vec<Option<usize>> = self
            .classes
            .iter()
            .map(|c| model_index.get(c.as_str()).copied())
            .collect();
        let mut samples = Vec::with_capacity(self.samples.len());
        let mut bad = Vec::new();
        for sample in self.samples {
            let mut labels = vec![0i8; model_classes.len()];
            let mut unknown = Vec::new();
            for (k, &label) in sample.labels.iter().enumerate() {
                match target[k] {
                    Some(j) => labels[j] = label,
                    None if label == 1 => unknown.push(self.classes[k].as_str()),
                    None => {}
                }
            }
            if unknown.is_empty() {
                samples.push(Sample { labels, ..sample });
            } else {
                let reason = unknown
                    .iter()
                    .map(|name| {
                        format!(
                            "label {name:?} is not among the model's {} classes{}",
                            model_classes.len(),
                            did_you_mean(name, model_classes)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                bad.push(BadRow {
                    origin: sample.origin,
                    reason,
                });
            }
        }
        if !bad.is_empty() && !skip_bad {
            return Err(bad_rows(
                format!("{} (for the model's classes)", self.source),
                bad,
            ));
        }
        let mut skipped = self.skipped;
        skipped.extend(bad);
        Ok(Dataset {
            classes: model_classes.to_vec(),
            samples,
            skipped,
            ..self
        })
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

fn bad_rows(dataset: String, bad: Vec<BadRow>) -> DataError {
    let total = bad.len();
    DataError::BadRows {
        dataset,
        total,
        shown: bad.into_iter().take(BAD_ROWS_SHOWN).collect(),
    }
}

/// The format of the dataset at `path`:
/// - a folder with `annotations/instances_*.json`: COCO;
/// - a folder with `Annotations/`: VOC;
/// - a `.json` file: a COCO instances file;
/// - a `.csv` or `.tsv` file: CSV; a `.jsonl` or `.ndjson` file: JSON Lines.
pub fn detect_format(path: &Path) -> Result<DatasetFormat, DataError> {
    if !path.exists() {
        return Err(DataError::NotFound {
            path: path.to_path_buf(),
        });
    }
    if path.is_dir() {
        if !coco::instances_files(&path.join("annotations")).is_empty() {
            return Ok(DatasetFormat::Coco);
        }
        if path.join("Annotations").is_dir() {
            return Ok(DatasetFormat::Voc);
        }
        return Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "the folder holds neither annotations/instances_*.json (COCO) nor \
                     Annotations/ (Pascal VOC)"
                .into(),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("json") => Ok(DatasetFormat::Coco),
        Some("csv" | "tsv") => Ok(DatasetFormat::Csv),
        Some("jsonl" | "ndjson") => Ok(DatasetFormat::Jsonl),
        _ => Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "expected a COCO or VOC folder, or a .json, .csv, .tsv, .jsonl or .ndjson \
                     file"
                .into(),
        }),
    }
}

/// Reads the dataset at `path` (see the [module docs](self) for the formats), checks every row
/// up front, and returns the samples with their labels over the vocabulary.
///
/// Fails with [`DataError::BadRows`] when any row is bad, unless `opts.skip_bad`.
pub fn read_dataset(path: &Path, opts: &ReadOptions) -> Result<Dataset, DataError> {
    if let Some(classes) = &opts.classes {
        check_unique(classes, "the given classes")?;
    }
    let format = match opts.format {
        Some(format) => format,
        None if opts.annotations.is_some() => DatasetFormat::Coco,
        None => detect_format(path)?,
    };
    let parsed = match format {
        DatasetFormat::Coco => coco::read(path, opts)?,
        DatasetFormat::Voc => voc::read(path, opts)?,
        DatasetFormat::Csv => table::read_csv(path, opts)?,
        DatasetFormat::Jsonl => table::read_jsonl(path, opts)?,
    };
    finish(format, parsed, opts)
}

/// A label as a row states it, before it is placed in the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Positive,
    Ignored,
}

/// A well-formed row: its image and the labels it names.
struct RawRow {
    origin: String,
    image: PathBuf,
    labels: Vec<(String, Mark)>,
}

enum Entry {
    Row(RawRow),
    Bad(BadRow),
}

/// What a format reader hands to [`finish`].
struct Parsed {
    /// Rows and bad rows in the dataset's order.
    entries: Vec<Entry>,
    /// The format's own vocabulary; `None`: the sorted set of labels seen.
    classes: Option<Vec<String>>,
    /// How the format's own vocabulary is named in "unknown label" messages.
    vocabulary: String,
    source: String,
    unannotated: usize,
}

/// Vocabulary, duplicates, labels and image headers: the checks every format shares.
fn finish(format: DatasetFormat, parsed: Parsed, opts: &ReadOptions) -> Result<Dataset, DataError> {
    let (classes, vocabulary) = match (&opts.classes, parsed.classes) {
        (Some(given), _) => (given.clone(), format!("the {} given classes", given.len())),
        (None, Some(own)) => (own, parsed.vocabulary),
        (None, None) => {
            let seen: BTreeSet<&str> = parsed
                .entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Row(row) => Some(row.labels.iter().map(|(name, _)| name.as_str())),
                    Entry::Bad(_) => None,
                })
                .flatten()
                .collect();
            let seen = seen.into_iter().map(String::from).collect();
            (seen, parsed.vocabulary)
        }
    };
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(k, c)| (c.as_str(), k))
        .collect();

    let mut first_seen: HashMap<PathBuf, String> = HashMap::new();
    let mut slots: Vec<Result<Sample, BadRow>> = Vec::with_capacity(parsed.entries.len());
    for entry in parsed.entries {
        let row = match entry {
            Entry::Bad(bad) => {
                slots.push(Err(bad));
                continue;
            }
            Entry::Row(row) => row,
        };
        if let Some(first) = first_seen.get(&row.image) {
            slots.push(Err(BadRow {
                reason: format!(
                    "duplicate image {}: already listed at {first}",
                    row.image.display()
                ),
                origin: row.origin,
            }));
            continue;
        }
        first_seen.insert(row.image.clone(), row.origin.clone());
        let mut labels = vec![0i8; classes.len()];
        let mut unknown = Vec::new();
        for (name, mark) in &row.labels {
            match (index.get(name.as_str()), mark) {
                (Some(&k), Mark::Positive) => labels[k] = 1,
                (Some(&k), Mark::Ignored) if labels[k] != 1 => labels[k] = -1,
                (Some(_), Mark::Ignored) => {}
                (None, _) => {
                    if !unknown.contains(&name) {
                        unknown.push(name);
                    }
                }
            }
        }
        if unknown.is_empty() {
            slots.push(Ok(Sample {
                image: row.image,
                labels,
                origin: row.origin,
            }));
        } else {
            let reason = unknown
                .iter()
                .map(|name| {
                    format!(
                        "unknown label {name:?}: not among {vocabulary}{}",
                        did_you_mean(name, &classes)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            slots.push(Err(BadRow {
                origin: row.origin,
                reason,
            }));
        }
    }

    if opts.check_images {
        slots.par_iter_mut().for_each(|slot| {
            if let Ok(sample) = slot {
                if let Err(reason) = check_image(&sample.image, opts.max_pixels) {
                    *slot = Err(BadRow {
                        origin: std::mem::take(&mut sample.origin),
                        reason,
                    });
                }
            }
        });
    }

    let mut samples = Vec::with_capacity(slots.len());
    let mut skipped = Vec::new();
    for slot in slots {
        match slot {
            Ok(sample) => samples.push(sample),
            Err(bad) => skipped.push(bad),
        }
    }
    if !skipped.is_empty() && !opts.skip_bad {
        return Err(bad_rows(parsed.source, skipped));
    }
    Ok(Dataset {
        format,
        source: parsed.source,
        classes,
        samples,
        skipped,
        unannotated: parsed.unannotated,
    })
}

/// Reads the image's header only: it exists, is a supported image, and is within the pixel limit.
/// The reason names the file.
fn check_image(path: &Path, max_pixels: u64) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("image file {} not found", path.display()),
        _ => format!("cannot read image file {}: {e}", path.display()),
    })?;
    if meta.is_dir() {
        return Err(format!("{} is a folder, not an image file", path.display()));
    }
    if meta.len() == 0 {
        return Err(format!(
            "image file {} is empty (0 bytes), not an image",
            path.display()
        ));
    }
    let unreadable =
        |e: &dyn fmt::Display| format!("cannot read the image header of {}: {e}", path.display());
    let cannot_read = |e: std::io::Error| format!("cannot read image file {}: {e}", path.display());
    // The format comes from the content, never the file name, as `images::load_rgb` does.
    let mut file = std::fs::File::open(path).map_err(cannot_read)?;
    let mut head = Vec::with_capacity(64);
    Read::by_ref(&mut file)
        .take(64)
        .read_to_end(&mut head)
        .map_err(cannot_read)?;
    let format = image::guess_format(&head).ok().filter(|f| {
        use image::ImageFormat::*;
        matches!(f, Jpeg | Png | WebP | Bmp | Gif | Tiff)
    });
    let Some(format) = format else {
        return Err(format!(
            "{} is not in a supported image format (JPEG, PNG, WebP, BMP, GIF, TIFF)",
            path.display()
        ));
    };
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(cannot_read)?;
    let mut reader = image::ImageReader::with_format(std::io::BufReader::new(file), format);
    // Our own limit below gives the clearer message; the decoder's must not refuse first.
    reader.no_limits();
    let (width, height) = reader.into_dimensions().map_err(|e| unreadable(&e))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(format!(
            "image file {} is {width} x {height} = {pixels} pixels, more than the limit of \
             {max_pixels}",
            path.display()
        ));
    }
    Ok(())
}

fn check_unique(classes: &[String], what: &str) -> Result<(), DataError> {
    let mut seen = HashSet::new();
    for class in classes {
        if !seen.insert(class.as_str()) {
            return Err(DataError::Options(format!(
                "{what} name {class:?} more than once"
            )));
        }
    }
    Ok(())
}

/// ` (did you mean "traffic light"?)` when a class differs from `name` only in case, spaces,
/// `_` or `-`; else empty.
fn did_you_mean(name: &str, classes: &[String]) -> String {
    let key = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = key(name);
    classes
        .iter()
        .find(|c| key(c) == wanted)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

/// Reads a text file, naming it in the error.
fn read_text(path: &Path) -> Result<String, DataError> {
    let text = std::fs::read_to_string(path).map_err(|cause| DataError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    // A UTF-8 byte-order mark (Excel writes one) is not part of the first field.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_ignores_case_and_separators() {
        let classes = vec!["traffic light".to_string(), "dog".to_string()];
        assert_eq!(
            did_you_mean("Traffic_Light", &classes),
            " (did you mean \"traffic light\"?)"
        );
        assert_eq!(did_you_mean("cat", &classes), "");
    }

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
