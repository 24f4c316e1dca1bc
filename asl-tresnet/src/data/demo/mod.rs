//! The embedded demo dataset (what `asl-cli demo` trains on): multi-label mosaics of real
//! handwritten digits, ready to train on with no download.
//!
//! Each image is a 32 x 32 RGB mosaic, a 2 x 2 grid of 16 x 16 cells of which 1 to 3 hold a
//! handwritten digit (from the UCI "Optical Recognition of Handwritten Digits" data, E. Alpaydin
//! and C. Kaynak, CC BY 4.0), resized to 11..16 px at a random place in its cell with a random
//! ink and background colour. Its labels are the digit classes present ([`CLASSES`], "0".."9"):
//! 1 to 3 positives of 10, about 16% positives overall, the positive/negative imbalance ASL is
//! meant for. Splits: 2000 train, 400 val and 8 test mosaics; the source digits of the three
//! splits are disjoint.
//!
//! The data lives in `asl-tresnet/data/demo/` (generator script, README with source and licence)
//! and is compiled in with `include_bytes!` (about 1.2 MB, linked only into programs that use
//! it), so the demo works without the repository: per split a PNG sheet of the mosaics tiled row-major and a CSV of
//! labels (`image,labels`, `00000.png,3 7`) in sheet order.
//!

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};

use super::{DataError, InMemoryDataset};

/// The class names, in label order: the ten digits.
pub const CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The side of every demo image, in pixels (a multiple of 4 and at least 20, as TResNet needs).
pub const IMAGE_SIDE: u32 = 32;

/// The header row of the labels CSV files (embedded and written by [`write_split`]).
const CSV_HEADER: &str = "image,labels";

/// The embedded files, by their name in `asl-tresnet/data/demo/`.
pub const EMBEDDED_FILES: [(&str, &[u8]); 6] = [
    ("train.png", include_bytes!("../../../data/demo/train.png")),
    (
        "train_labels.csv",
        include_bytes!("../../../data/demo/train_labels.csv"),
    ),
    ("val.png", include_bytes!("../../../data/demo/val.png")),
    (
        "val_labels.csv",
        include_bytes!("../../../data/demo/val_labels.csv"),
    ),
    ("test.png", include_bytes!("../../../data/demo/test.png")),
    (
        "test_labels.csv",
        include_bytes!("../../../data/demo/test_labels.csv"),
    ),
];

/// The total size of the embedded data, in bytes.
pub fn embedded_size() -> usize {
    EMBEDDED_FILES.iter().map(|(_, bytes)| bytes.len()).sum()
}

/// One split: images and their labels, in the same order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemoSplit {
    /// The mosaics, each [`IMAGE_SIDE`] x [`IMAGE_SIDE`].
    pub images: Vec<RgbImage>,
    /// Per image, one label per class of [`CLASSES`]: `1` the digit is present, `0` it is not.
    pub labels: Vec<Vec<i8>>,
}

impl DemoSplit {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether the split has no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Keeps the first `len` images and their labels (all of them when `len` is larger).
    pub fn truncate(&mut self, len: usize) {
        self.images.truncate(len);
        self.labels.truncate(len);
    }

    /// The split as an in-memory dataset over [`CLASSES`] (an error only for a split whose
    /// label rows were edited to the wrong length).
    pub fn to_dataset(&self) -> Result<InMemoryDataset, DataError> {
        let classes = CLASSES.iter().map(|c| c.to_string()).collect();
        let samples = self
            .images
            .iter()
            .cloned()
            .zip(self.labels.iter().cloned())
            .collect();
        InMemoryDataset::new(classes, samples)
    }

    /// The names of the positive classes of image `i` (empty when `i` is out of range).
    pub fn label_names(&self, i: usize) -> Vec<&'static str> {
        self.labels.get(i).map_or_else(Vec::new, |row| {
            row.iter()
                .zip(CLASSES)
                .filter(|(&l, _)| l == 1)
                .map(|(_, name)| name)
                .collect()
        })
    }
}

/// The three splits of the demo dataset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemoData {
    /// 2000 mosaics to train on.
    pub train: DemoSplit,
    /// 400 mosaics to validate on (source digits disjoint from train's).
    pub val: DemoSplit,
    /// 8 held-out mosaics for `infer` to tag.
    pub test: DemoSplit,
}

/// Why the embedded data (or bytes given to [`decode_split`]) could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DemoDataError {
    /// A sheet is not a decodable PNG.
    #[error("demo data {file}: cannot decode the PNG sheet: {source}")]
    Decode {
        /// The file name (`train.png`, ...).
        file: String,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// A sheet or a labels file is decodable but inconsistent.
    #[error("demo data {file}: {reason}")]
    Invalid {
        /// The file name (`train_labels.csv`, ...), with the line number where it applies.
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// Decodes the embedded dataset. Errors (never panics) when the embedded bytes are inconsistent.
pub fn load() -> Result<DemoData, DemoDataError> {
    let split = |name: &str| -> Result<DemoSplit, DemoDataError> {
        let file = |suffix: &str| {
            let wanted = format!("{name}{suffix}");
            EMBEDDED_FILES
                .iter()
                .find(|(n, _)| *n == wanted)
                .map(|(_, bytes)| *bytes)
                .ok_or_else(|| DemoDataError::Invalid {
                    file: wanted.clone(),
                    reason: "not embedded".into(),
                })
        };
        let csv_name = format!("{name}_labels.csv");
        let csv =
            std::str::from_utf8(file("_labels.csv")?).map_err(|e| DemoDataError::Invalid {
                file: csv_name,
                reason: format!("not UTF-8: {e}"),
            })?;
        decode_split(name, file(".png")?, csv)
    };
    Ok(DemoData {
        train: split("train")?,
        val: split("val")?,
        test: split("test")?,
    })
}

/// Decodes one split from its PNG sheet and its labels CSV (the files `{name}.png` and
/// `{name}_labels.csv` of `asl-tresnet/data/demo/`; `name` is only used in messages).
///
/// The sheet holds the mosaics row-major, `width / IMAGE_SIDE` per row, with blank cells only
/// after the last one (in the last row). The CSV has the header `image,labels` and one row per
/// mosaic in sheet order, `{index:05}.png,{labels}`, labels space-separated names of
/// [`CLASSES`], each at most once.
pub fn decode_split(
    name: &str,
    sheet_png: &[u8],
    labels_csv: &str,
) -> Result<DemoSplit, DemoDataError> {
    let csv_name = format!("{name}_labels.csv");
    let labels = parse_labels(&csv_name, labels_csv)?;

    let sheet_name = format!("{name}.png");
    let invalid = |reason: String| DemoDataError::Invalid {
        file: sheet_name.clone(),
        reason,
    };
    let sheet = image::load_from_memory_with_format(sheet_png, ImageFormat::Png)
        .map_err(|source| DemoDataError::Decode {
            file: sheet_name.clone(),
            source,
        })?
        .to_rgb8();
    let (width, height) = sheet.dimensions();
    if width == 0
        || height == 0
        || !width.is_multiple_of(IMAGE_SIDE)
        || !height.is_multiple_of(IMAGE_SIDE)
    {
        return Err(invalid(format!(
            "the sheet is {width} x {height}, not a whole number of {IMAGE_SIDE} x {IMAGE_SIDE} \
             cells"
        )));
    }
    let columns = (width / IMAGE_SIDE) as usize;
    let rows = (height / IMAGE_SIDE) as usize;
    let n = labels.len();
    // Every row of the sheet holds at least one mosaic: n in ((rows - 1) * columns, rows * columns].
    if n > rows * columns || n <= (rows - 1) * columns {
        return Err(invalid(format!(
            "the sheet has {rows} rows of {columns} cells, which does not fit the {n} images of \
             {csv_name}"
        )));
    }
    let images = (0..n)
        .map(|i| {
            let x = (i % columns) as u32 * IMAGE_SIDE;
            let y = (i / columns) as u32 * IMAGE_SIDE;
            image::imageops::crop_imm(&sheet, x, y, IMAGE_SIDE, IMAGE_SIDE).to_image()
        })
        .collect();
    Ok(DemoSplit { images, labels })
}

/// Parses a labels CSV (see [`decode_split`]) into one label row per image.
fn parse_labels(file: &str, text: &str) -> Result<Vec<Vec<i8>>, DemoDataError> {
    let at = |line: usize, reason: String| DemoDataError::Invalid {
        file: format!("{file}:{line}"),
        reason,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, header)) if header == CSV_HEADER => {}
        Some((line, header)) => {
            return Err(at(
                line,
                format!("the header is {header:?}, expected {CSV_HEADER:?}"),
            ))
        }
        None => {
            return Err(DemoDataError::Invalid {
                file: file.into(),
                reason: "empty file".into(),
            })
        }
    }
    let mut rows = Vec::new();
    for (line, text) in lines {
        let index = rows.len();
        let Some((image, names)) = text.split_once(',') else {
            return Err(at(line, format!("no comma in {text:?}")));
        };
        let expected = image_name(index);
        if image != expected {
            return Err(at(
                line,
                format!("image {image:?} where row {index} should be {expected:?}"),
            ));
        }
        let mut row = vec![0i8; CLASSES.len()];
        for label in names.split_whitespace() {
            let Some(k) = CLASSES.iter().position(|c| *c == label) else {
                return Err(at(
                    line,
                    format!("unknown label {label:?} (the classes are {CLASSES:?})"),
                ));
            };
            if row[k] == 1 {
                return Err(at(line, format!("label {label:?} is listed twice")));
            }
            row[k] = 1;
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(DemoDataError::Invalid {
            file: file.into(),
            reason: "no image rows after the header".into(),
        });
    }
    Ok(rows)
}

/// The file name of image `index` of a split: `00042.png`.
fn image_name(index: usize) -> String {
    format!("{index:05}.png")
}

/// Writes `split` to `dir` (created if missing) as PNG files `00000.png`, `00001.png`, ... and a
/// `labels.csv` (`image,labels`, labels space-separated, paths relative to `dir`): the CSV format
/// `asl-cli validate/train --data` reads. Returns the path of `labels.csv`.
///
/// Errors with [`io::ErrorKind::InvalidInput`] when the split's images and labels do not match
/// (counts, or a label row that is not one 0/1 per class).
pub fn write_split(split: &DemoSplit, dir: &Path) -> io::Result<PathBuf> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
    if split.images.len() != split.labels.len() {
        return Err(invalid(format!(
            "the split has {} images but {} label rows",
            split.images.len(),
            split.labels.len()
        )));
    }
    std::fs::create_dir_all(dir)?;
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for (i, (image, row)) in split.images.iter().zip(&split.labels).enumerate() {
        if row.len() != CLASSES.len() || row.iter().any(|&l| l != 0 && l != 1) {
            return Err(invalid(format!(
                "label row {i} is {row:?}, expected one 0 or 1 per class ({})",
                CLASSES.len()
            )));
        }
        let name = image_name(i);
        image
            .save_with_format(dir.join(&name), ImageFormat::Png)
            .map_err(|e| match e {
                image::ImageError::IoError(e) => e,
                e => io::Error::other(format!("cannot write {name}: {e}")),
            })?;
        let positives: Vec<&str> = row
            .iter()
            .zip(CLASSES)
            .filter(|(&l, _)| l == 1)
            .map(|(_, c)| c)
            .collect();
        // Writing to a String cannot fail.
        let _ = writeln!(csv, "{name},{}", positives.join(" "));
    }
    let path = dir.join("labels.csv");
    std::fs::write(&path, csv)?;
    Ok(path)
}

#[cfg(test)]
mod tests;
