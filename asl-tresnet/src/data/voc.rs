//! Pascal VOC: `Annotations/*.xml`, `ImageSets/Main/{split}.txt`, `JPEGImages/`.

use std::path::{Path, PathBuf};

use super::{BadRow, DataError, Difficult, Entry, Mark, Parsed, RawRow, ReadOptions};

/// The image ids to read, each with where it was listed.
fn image_ids(
    root: &Path,
    ann_dir: &Path,
    opts: &ReadOptions,
) -> Result<(Vec<(String, String)>, String), DataError> {
    let main = root.join("ImageSets").join("Main");
    let list = match opts.split.as_deref() {
        Some(split) => {
            let file = main.join(format!("{split}.txt"));
            if !file.is_file() {
                return Err(DataError::Layout {
                    path: file,
                    reason: "VOC split list not found (the splits are the files in \
                             ImageSets/Main/, e.g. train, val, trainval, test)"
                        .into(),
                });
            }
            Some(file)
        }
        // The paper reports VOC 2007 test; `val` is what the trainval download has.
        None => ["test", "val"]
            .iter()
            .map(|s| main.join(format!("{s}.txt")))
            .find(|f| f.is_file()),
    };
    if let Some(file) = list {
        let text = super::read_text(&file)?;
        let name = file.display().to_string();
        let ids = text
            .lines()
            .enumerate()
            .filter_map(|(n, line)| {
                let id = line.split_whitespace().next()?;
                Some((id.to_string(), format!("{name}:{}", n + 1)))
            })
            .collect();
        return Ok((ids, name));
    }
    let entries = std::fs::read_dir(ann_dir).map_err(|cause| DataError::Io {
        path: ann_dir.to_path_buf(),
        cause,
    })?;
    let mut ids: Vec<(String, String)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let is_xml = path.extension()?.eq_ignore_ascii_case("xml");
            let id = path.file_stem()?.to_str()?.to_string();
            is_xml.then(|| (id, path.display().to_string()))
        })
        .collect();
    ids.sort();
    Ok((ids, ann_dir.display().to_string()))
}

pub(super) fn read(root: &Path, opts: &ReadOptions) -> Result<Parsed, DataError> {
    let ann_dir = root.join("Annotations");
    if !ann_dir.is_dir() {
        return Err(DataError::Layout {
            path: ann_dir,
            reason: "Pascal VOC Annotations folder not found".into(),
        });
    }
    let image_dir = opts
        .images
        .clone()
        .unwrap_or_else(|| root.join("JPEGImages"));
    let (ids, source) = image_ids(root, &ann_dir, opts)?;
    let entries = ids
        .into_iter()
        .map(|(id, listed_at)| {
            let xml = ann_dir.join(format!("{id}.xml"));
            match read_annotation(&xml, &id, &image_dir, opts.difficult) {
                Ok(row) => Entry::Row(row),
                Err(Problem::Missing) => Entry::Bad(BadRow {
                    origin: listed_at,
                    reason: format!("annotation file {} not found", xml.display()),
                }),
                Err(Problem::Bad(reason)) => Entry::Bad(BadRow {
                    origin: xml.display().to_string(),
                    reason,
                }),
            }
        })
        .collect();
    Ok(Parsed {
        entries,
        classes: Some(
            crate::pretrained::classes::VOC
                .iter()
                .map(|c| c.to_string())
                .collect(),
        ),
        vocabulary: "the 20 Pascal VOC classes (give the class list for a VOC-format dataset \
                     with other classes)"
            .into(),
        source,
        unannotated: 0,
    })
}

enum Problem {
    Missing,
    Bad(String),
}

/// One annotation file: its image and, per class named by its objects, positive or ignored.
fn read_annotation(
    xml: &Path,
    id: &str,
    image_dir: &Path,
    difficult: Difficult,
) -> Result<RawRow, Problem> {
    let text = match std::fs::read_to_string(xml) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Problem::Missing),
        Err(e) => return Err(Problem::Bad(format!("cannot read: {e}"))),
    };
    let doc = roxmltree::Document::parse(&text)
        .map_err(|e| Problem::Bad(format!("malformed XML: {e}")))?;
    let line = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row;
    let root = doc.root_element();
    if root.tag_name().name() != "annotation" {
        return Err(Problem::Bad(format!(
            "the root element is <{}>, not <annotation>",
            root.tag_name().name()
        )));
    }
    let child_text = |node: roxmltree::Node, tag: &str| -> Option<String> {
        let child = node.children().find(|c| c.has_tag_name(tag))?;
        Some(child.text().unwrap_or("").trim().to_string())
    };

    // Per class: (has a non-difficult object, has a difficult one), in order of appearance.
    let mut seen: Vec<(String, bool, bool)> = Vec::new();
    for object in root.children().filter(|c| c.has_tag_name("object")) {
        let name = match child_text(object, "name") {
            Some(name) if !name.is_empty() => name,
            _ => {
                return Err(Problem::Bad(format!(
                    "line {}: <object> without a <name>",
                    line(object)
                )))
            }
        };
        let is_difficult = match child_text(object, "difficult").as_deref() {
            None | Some("" | "0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(Problem::Bad(format!(
                    "line {}: <difficult> is {other:?}, expected 0 or 1",
                    line(object)
                )))
            }
        };
        let slot = match seen.iter().position(|(n, _, _)| *n == name) {
            Some(i) => &mut seen[i],
            None => {
                seen.push((name, false, false));
                let last = seen.len() - 1;
                &mut seen[last]
            }
        };
        if is_difficult {
            slot.2 = true;
        } else {
            slot.1 = true;
        }
    }
    let labels = seen
        .into_iter()
        .filter_map(
            |(name, normal, has_difficult)| match (normal, has_difficult, difficult) {
                (true, _, _) | (false, true, Difficult::Positive) => Some((name, Mark::Positive)),
                (false, true, Difficult::Ignore) => Some((name, Mark::Ignored)),
                _ => None,
            },
        )
        .collect();

    // The devkit's rule, `JPEGImages/{id}.jpg`; the XML's <filename> when only that one exists
    // (VOC-format datasets made with other tools store PNGs and the like).
    let mut image = image_dir.join(format!("{id}.jpg"));
    if !image.exists() {
        if let Some(named) = child_text(root, "filename").filter(|f| !f.is_empty()) {
            let named: PathBuf = image_dir.join(named);
            if named.exists() {
                image = named;
            }
        }
    }
    Ok(RawRow {
        origin: xml.display().to_string(),
        image,
        labels,
    })
}
