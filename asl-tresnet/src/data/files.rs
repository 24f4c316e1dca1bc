//! A dataset read from files: samples (an image path, labels, where the row was read) over an
//! ordered vocabulary, and their alignment to a model's classes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::error::{bad_rows, BadRow, DataError};
use super::read::{check_unique, did_you_mean};
use super::{Dataset, DatasetFormat};
use crate::images::{load_rgb, ImageError, RgbImage, DEFAULT_MAX_PIXELS};

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

/// A labelled dataset: samples with labels over an explicit, ordered vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct FileDataset {
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

impl Default for FileDataset {
    /// An empty CSV dataset: what `std::mem::take` leaves behind.
    fn default() -> Self {
        FileDataset {
            format: DatasetFormat::Csv,
            source: String::new(),
            classes: Vec::new(),
            samples: Vec::new(),
            skipped: Vec::new(),
            unannotated: 0,
        }
    }
}

impl FileDataset {
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
    /// use asl_tresnet::data::{DatasetFormat, FileDataset, Sample};
    /// let sample = |labels: Vec<i8>| Sample { image: "a.jpg".into(), labels, origin: String::new() };
    /// let ds = FileDataset {
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
    ///   the label (dropped into [`FileDataset::skipped`] with `skip_bad`, else the error lists them);
    ///   a sample where it is negative or ignored just loses that column.
    pub fn align_to(
        self,
        model_classes: &[String],
        skip_bad: bool,
    ) -> Result<FileDataset, DataError> {
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
        Ok(FileDataset {
            classes: model_classes.to_vec(),
            samples,
            skipped,
            ..self
        })
    }

    /// Splits the dataset into (train, val) with `fraction` of it (at least one sample)
    /// validating, drawn by a fixed permutation of `seed` (independent of any training order).
    pub fn split(self, fraction: f64, seed: u64) -> Result<(FileDataset, FileDataset), DataError> {
        let ds = self;
        if !(0.0..1.0).contains(&fraction) || ds.samples.len() < 2 {
            return Err(DataError::Options(
                "the validation fraction must be in (0, 1) and the data must have at least 2 \
                 images"
                    .into(),
            ));
        }
        let n = ds.samples.len();
        let n_val = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
        let mut idx: Vec<usize> = (0..n).collect();
        // a fixed permutation for the seed (independent of the training order)
        let mut state = seed ^ 0x5eed_5eed;
        for i in (1..n).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            idx.swap(i, (state >> 33) as usize % (i + 1));
        }
        let val_set: HashSet<usize> = idx[..n_val].iter().copied().collect();
        let (mut train, mut val) = (ds.clone(), ds);
        train.samples = train
            .samples
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !val_set.contains(i))
            .map(|(_, s)| s)
            .collect();
        val.samples = val
            .samples
            .into_iter()
            .enumerate()
            .filter(|(i, _)| val_set.contains(i))
            .map(|(_, s)| s)
            .collect();
        Ok((train, val))
    }
}

impl Dataset for FileDataset {
    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn image(&self, i: usize) -> Result<RgbImage, ImageError> {
        load_rgb(&self.samples[i].image, DEFAULT_MAX_PIXELS)
    }

    fn labels(&self, i: usize) -> &[i8] {
        &self.samples[i].labels
    }

    fn describe(&self, i: usize) -> String {
        format!(
            "{} ({})",
            self.samples[i].origin,
            self.samples[i].image.display()
        )
    }
}
