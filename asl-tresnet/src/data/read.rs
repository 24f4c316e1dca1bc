//! Reading a dataset: the format detected or given, the format's reader, then the checks every
//! format shares (vocabulary, duplicates, labels, image headers).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::error::{bad_rows, BadRow, DataError};
use super::files::{FileDataset, Sample};
use super::{coco, table, voc};
use crate::images::DEFAULT_MAX_PIXELS;

/// The on-disk layout of a dataset.
///
/// ```
/// use asl_tresnet::data::DatasetFormat;
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
pub fn read_dataset(path: &Path, opts: &ReadOptions) -> Result<FileDataset, DataError> {
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
pub(crate) enum Mark {
    Positive,
    Ignored,
}

/// A well-formed row: its image and the labels it names.
pub(crate) struct RawRow {
    pub(crate) origin: String,
    pub(crate) image: PathBuf,
    pub(crate) labels: Vec<(String, Mark)>,
}

pub(crate) enum Entry {
    Row(RawRow),
    Bad(BadRow),
}

/// What a format reader hands to [`finish`].
pub(crate) struct Parsed {
    /// Rows and bad rows in the dataset's order.
    pub(crate) entries: Vec<Entry>,
    /// The format's own vocabulary; `None`: the sorted set of labels seen.
    pub(crate) classes: Option<Vec<String>>,
    /// How the format's own vocabulary is named in "unknown label" messages.
    pub(crate) vocabulary: String,
    pub(crate) source: String,
    pub(crate) unannotated: usize,
}

/// Vocabulary, duplicates, labels and image headers: the checks every format shares.
fn finish(
    format: DatasetFormat,
    parsed: Parsed,
    opts: &ReadOptions,
) -> Result<FileDataset, DataError> {
    let (classes, vocabulary) = vocabulary(&parsed, opts);
    let mut slots = place_rows(parsed.entries, &classes, &vocabulary);
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
    Ok(FileDataset {
        format,
        source: parsed.source,
        classes,
        samples,
        skipped,
        unannotated: parsed.unannotated,
    })
}

/// The vocabulary (given, the format's own, or the sorted set of labels seen) and how it is
/// named in "unknown label" messages.
fn vocabulary(parsed: &Parsed, opts: &ReadOptions) -> (Vec<String>, String) {
    match (&opts.classes, &parsed.classes) {
        (Some(given), _) => (given.clone(), format!("the {} given classes", given.len())),
        (None, Some(own)) => (own.clone(), parsed.vocabulary.clone()),
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
            (seen, parsed.vocabulary.clone())
        }
    }
}

/// Every entry as a sample over `classes`, or as a bad row (duplicate image, unknown label).
fn place_rows(
    entries: Vec<Entry>,
    classes: &[String],
    vocabulary: &str,
) -> Vec<Result<Sample, BadRow>> {
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(k, c)| (c.as_str(), k))
        .collect();
    let mut first_seen: HashMap<PathBuf, String> = HashMap::new();
    let mut slots = Vec::with_capacity(entries.len());
    for entry in entries {
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
        slots.push(place_labels(row, &index, classes, vocabulary));
    }
    slots
}

/// One row's labels over the vocabulary `index`; a bad row when it names an unknown label.
fn place_labels(
    row: RawRow,
    index: &HashMap<&str, usize>,
    classes: &[String],
    vocabulary: &str,
) -> Result<Sample, BadRow> {
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
    if !unknown.is_empty() {
        let reason = unknown
            .iter()
            .map(|name| {
                format!(
                    "unknown label {name:?}: not among {vocabulary}{}",
                    did_you_mean(name, classes)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(BadRow {
            origin: row.origin,
            reason,
        });
    }
    Ok(Sample {
        image: row.image,
        labels,
        origin: row.origin,
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

pub(crate) fn check_unique(classes: &[String], what: &str) -> Result<(), DataError> {
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
pub(crate) fn did_you_mean(name: &str, classes: &[String]) -> String {
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
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
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
}
