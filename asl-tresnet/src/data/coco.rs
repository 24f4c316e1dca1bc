//! MS-COCO instances JSON (`instances_{split}2014.json`) + image folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{BadRow, DataError, Entry, Mark, Parsed, RawRow, ReadOptions};

/// The parts of an instances file the labels need; the rest (segmentations, boxes, licences) is
/// skipped by the parser without being built.
#[derive(Deserialize)]
struct InstancesFile {
    images: Vec<Image>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Image {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct Annotation {
    #[serde(default)]
    id: Option<u64>,
    image_id: u64,
    category_id: u64,
}

#[derive(Deserialize)]
struct Category {
    id: u64,
    name: String,
}

/// The `instances_*.json` files in `dir`, sorted (empty when `dir` is not a folder).
pub(super) fn instances_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("instances_") && n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// `val` -> `val2014`; a split that already ends in a year (`val2017`) is kept.
fn split_folder(split: &str) -> String {
    let bytes = split.as_bytes();
    let has_year = bytes.len() >= 4 && bytes[bytes.len() - 4..].iter().all(u8::is_ascii_digit);
    if has_year {
        split.to_string()
    } else {
        format!("{split}2014")
    }
}

/// The annotation file and the image folder `path` and the options name.
fn locate(path: &Path, opts: &ReadOptions) -> Result<(PathBuf, PathBuf), DataError> {
    let folder = split_folder(opts.split.as_deref().unwrap_or("val"));
    let annotations = match &opts.annotations {
        Some(file) => file.clone(),
        None if path.is_file() => path.to_path_buf(),
        None => path
            .join("annotations")
            .join(format!("instances_{folder}.json")),
    };
    if !annotations.is_file() {
        let found = instances_files(&path.join("annotations"));
        let hint = if found.is_empty() {
            String::new()
        } else {
            format!(" (found: {}; choose one with the split)", found.join(", "))
        };
        return Err(DataError::Layout {
            path: annotations,
            reason: format!("COCO annotation file not found{hint}"),
        });
    }
    let images = match &opts.images {
        Some(dir) => dir.clone(),
        None if path.is_dir() && opts.annotations.is_none() => path.join(&folder),
        None => {
            // `root/annotations/instances_val2014.json` -> `root/val2014`.
            let name = annotations.file_name().and_then(|n| n.to_str());
            let split = name.and_then(|n| n.strip_prefix("instances_")?.strip_suffix(".json"));
            let root = annotations.parent().and_then(Path::parent);
            match (split, root) {
                (Some(split), Some(root)) => root.join(split),
                _ => {
                    return Err(DataError::Layout {
                        path: annotations,
                        reason: "cannot tell the image folder of this annotation file; give it \
                                 explicitly"
                            .into(),
                    })
                }
            }
        }
    };
    if !images.is_dir() {
        return Err(DataError::Layout {
            path: images,
            reason: format!(
                "COCO image folder not found (the images of {}); give it explicitly",
                annotations.display()
            ),
        });
    }
    Ok((annotations, images))
}

pub(super) fn read(path: &Path, opts: &ReadOptions) -> Result<Parsed, DataError> {
    let (ann_path, image_dir) = locate(path, opts)?;
    let bytes = std::fs::read(&ann_path).map_err(|cause| DataError::Io {
        path: ann_path.clone(),
        cause,
    })?;
    let file: InstancesFile = serde_json::from_slice(&bytes).map_err(|e| DataError::Parse {
        origin: format!("{}:{}:{}", ann_path.display(), e.line(), e.column()),
        reason: format!("not a COCO instances file: {e}"),
    })?;
    drop(bytes);
    let source = ann_path.display().to_string();

    // Category-id order is the reference's class order (ids 1..90 with gaps).
    let mut categories = file.categories;
    categories.sort_by_key(|c| c.id);
    let mut category_index = HashMap::new();
    for (k, category) in categories.iter().enumerate() {
        if category_index.insert(category.id, k).is_some() {
            return Err(DataError::Parse {
                origin: source,
                reason: format!("category id {} appears more than once", category.id),
            });
        }
    }
    let classes: Vec<String> = categories.into_iter().map(|c| c.name).collect();
    if let Err(DataError::Options(reason)) = super::check_unique(&classes, "the categories") {
        return Err(DataError::Parse {
            origin: source,
            reason,
        });
    }

    let origin = |image: &Image| format!("{source}: image id {} ({})", image.id, image.file_name);
    let mut image_index: HashMap<u64, usize> = HashMap::with_capacity(file.images.len());
    // Per image: its categories (as indices), or why it is bad.
    let mut found: Vec<Result<Vec<usize>, String>> = Vec::with_capacity(file.images.len());
    for (i, image) in file.images.iter().enumerate() {
        match image_index.get(&image.id) {
            Some(&first) => found.push(Err(format!(
                "duplicate image id {}: already listed as {}",
                image.id, file.images[first].file_name
            ))),
            None => {
                image_index.insert(image.id, i);
                found.push(Ok(Vec::new()));
            }
        }
    }
    let mut entries = Vec::new();
    for (a, ann) in file.annotations.iter().enumerate() {
        let Some(&i) = image_index.get(&ann.image_id) else {
            let name = ann
                .id
                .map_or(format!("#{}", a + 1), |id| format!("id {id}"));
            entries.push(Entry::Bad(BadRow {
                origin: format!("{source}: annotation {name}"),
                reason: format!(
                    "refers to image id {}, which is not among the file's images",
                    ann.image_id
                ),
            }));
            continue;
        };
        let Ok(cats) = &mut found[i] else { continue };
        match category_index.get(&ann.category_id) {
            Some(&k) => {
                if !cats.contains(&k) {
                    cats.push(k);
                }
            }
            None => {
                let name = ann
                    .id
                    .map_or(format!("#{}", a + 1), |id| format!("id {id}"));
                found[i] = Err(format!(
                    "annotation {name} has category id {}, which is not among the file's \
                     categories",
                    ann.category_id
                ));
            }
        }
    }

    let mut unannotated = 0;
    for (image, cats) in file.images.iter().zip(found) {
        match cats {
            Err(reason) => entries.push(Entry::Bad(BadRow {
                origin: origin(image),
                reason,
            })),
            Ok(cats) if cats.is_empty() && !opts.keep_empty => unannotated += 1,
            Ok(mut cats) => {
                cats.sort_unstable();
                entries.push(Entry::Row(RawRow {
                    origin: origin(image),
                    image: image_dir.join(&image.file_name),
                    labels: cats
                        .into_iter()
                        .map(|k| (classes[k].clone(), Mark::Positive))
                        .collect(),
                }));
            }
        }
    }
    Ok(Parsed {
        entries,
        vocabulary: format!("the {} categories of {source}", classes.len()),
        classes: Some(classes),
        source,
        unannotated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_folder_adds_2014_unless_a_year_is_given() {
        assert_eq!(split_folder("val"), "val2014");
        assert_eq!(split_folder("train"), "train2014");
        assert_eq!(split_folder("val2017"), "val2017");
    }
}
