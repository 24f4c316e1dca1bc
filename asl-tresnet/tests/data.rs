//! The dataset readers (COCO, VOC, CSV/TSV, JSONL), their bad-row reports, `align_to`, and the
//! background loader, on tiny datasets written to temporary folders.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asl_tresnet::data::{
    loader, read_dataset, BadRow, DataError, DatasetFormat, Difficult, FileDataset, Loader,
    ReadOptions,
};
use asl_tresnet::pretrained::ResizeMode;

// ---------------------------------------------------------------------------------------------
// Fixtures

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// A 4 x 3 PNG of one colour.
fn png(path: &Path, rgb: [u8; 3]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    image::RgbImage::from_pixel(4, 3, image::Rgb(rgb))
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

/// A 16 x 16 JPEG; `truncated` cuts it in half (the header still reads, decoding fails).
fn jpeg(path: &Path, truncated: bool) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 16, y as u8 * 16, 7]));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    if truncated {
        bytes.truncate(bytes.len() / 2);
    }
    std::fs::write(path, bytes).unwrap();
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn labels(ds: &FileDataset) -> Vec<Vec<i8>> {
    ds.samples.iter().map(|s| s.labels.clone()).collect()
}

fn file_names(ds: &FileDataset) -> Vec<String> {
    ds.samples
        .iter()
        .map(|s| s.image.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn bad_rows(err: DataError) -> (usize, Vec<BadRow>, String) {
    let msg = err.to_string();
    match err {
        DataError::BadRows { total, shown, .. } => (total, shown, msg),
        other => panic!("expected bad rows, got: {other}"),
    }
}

fn skip_bad() -> ReadOptions {
    ReadOptions {
        skip_bad: true,
        ..ReadOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// COCO

/// Categories out of id order with gaps (1, 3, 18, 90); image 1: categories 90 and 1 (and 1
/// again); image 2: 18; image 3: no annotation.
const COCO_JSON: &str = r#"{
  "info": {"year": 2014},
  "images": [
    {"id": 11, "file_name": "a.png", "width": 4, "height": 3},
    {"id": 22, "file_name": "b.png", "width": 4, "height": 3},
    {"id": 33, "file_name": "c.png", "width": 4, "height": 3}
  ],
  "annotations": [
    {"id": 1, "image_id": 11, "category_id": 90, "segmentation": [[1, 2, 3, 4]], "bbox": [0, 0, 1, 1], "iscrowd": 0},
    {"id": 2, "image_id": 22, "category_id": 18, "segmentation": {"counts": [1, 2], "size": [3, 4]}, "iscrowd": 1},
    {"id": 3, "image_id": 11, "category_id": 1},
    {"id": 4, "image_id": 11, "category_id": 1}
  ],
  "categories": [
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 1, "name": "person"},
    {"id": 90, "name": "toothbrush"},
    {"id": 3, "name": "car"}
  ]
}"#;

fn coco_root(dir: &Path, split: &str) -> PathBuf {
    let root = dir.join("coco");
    write(
        &root
            .join("annotations")
            .join(format!("instances_{split}2014.json")),
        COCO_JSON,
    );
    for name in ["a.png", "b.png", "c.png"] {
        png(&root.join(format!("{split}2014")).join(name), [1, 2, 3]);
    }
    root
}

#[test]
fn coco_root_gives_multi_hot_in_category_id_order_and_drops_unannotated_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = coco_root(dir.path(), "val");
    let ds = read_dataset(&root, &ReadOptions::default()).unwrap();
    assert_eq!(ds.format, DatasetFormat::Coco);
    assert_eq!(ds.classes, strings(&["person", "car", "dog", "toothbrush"]));
    assert_eq!(labels(&ds), vec![vec![1, 0, 0, 1], vec![0, 0, 1, 0]]);
    assert_eq!(file_names(&ds), ["a.png", "b.png"]);
    assert_eq!(ds.samples[0].image, root.join("val2014").join("a.png"));
    assert_eq!(ds.unannotated, 1);
    assert!(ds.skipped.is_empty());
    assert!(
        ds.samples[1].origin.contains("image id 22 (b.png)"),
        "{}",
        ds.samples[1].origin
    );
}

#[test]
fn coco_keep_empty_keeps_unannotated_images_as_all_negative() {
    let dir = tempfile::tempdir().unwrap();
    let root = coco_root(dir.path(), "val");
    let opts = ReadOptions {
        keep_empty: true,
        ..ReadOptions::default()
    };
    let ds = read_dataset(&root, &opts).unwrap();
    assert_eq!(file_names(&ds), ["a.png", "b.png", "c.png"]);
    assert_eq!(ds.samples[2].labels, vec![0, 0, 0, 0]);
    assert_eq!(ds.unannotated, 0);
}

#[test]
fn coco_split_names_the_annotation_file_and_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = coco_root(dir.path(), "train");
    // The default split (val) is absent: the error names the file and what was found.
    let err = read_dataset(&root, &ReadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("instances_val2014.json"), "{msg}");
    assert!(msg.contains("instances_train2014.json"), "{msg}");
    let opts = ReadOptions {
        split: Some("train".into()),
        ..ReadOptions::default()
    };
    let ds = read_dataset(&root, &opts).unwrap();
    assert_eq!(ds.samples[0].image, root.join("train2014").join("a.png"));
}

#[test]
fn coco_reads_explicit_annotation_file_and_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("elsewhere").join("my_labels.json");
    write(&ann, COCO_JSON);
    let images = dir.path().join("pics");
    for name in ["a.png", "b.png", "c.png"] {
        png(&images.join(name), [0, 0, 0]);
    }
    let opts = ReadOptions {
        annotations: Some(ann.clone()),
        images: Some(images.clone()),
        ..ReadOptions::default()
    };
    // `annotations` alone selects COCO; the dataset path is then unused.
    let ds = read_dataset(dir.path(), &opts).unwrap();
    assert_eq!(ds.format, DatasetFormat::Coco);
    assert_eq!(ds.samples[0].image, images.join("a.png"));
    assert_eq!(labels(&ds), vec![vec![1, 0, 0, 1], vec![0, 0, 1, 0]]);

    // The annotation file as the path: the image folder comes from its name.
    let root = coco_root(dir.path(), "val");
    let file = root.join("annotations").join("instances_val2014.json");
    let ds = read_dataset(&file, &ReadOptions::default()).unwrap();
    assert_eq!(ds.samples[0].image, root.join("val2014").join("a.png"));

    // Without a way to find the images: a clear error.
    let err = read_dataset(&ann, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("image folder"), "{err}");
}

#[test]
fn coco_bad_rows_name_the_image_id_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = coco_root(dir.path(), "val");
    let json = COCO_JSON.replace(
        r#""image_id": 22, "category_id": 18"#,
        r#""image_id": 22, "category_id": 77"#,
    );
    write(
        &root.join("annotations").join("instances_val2014.json"),
        &json,
    );
    std::fs::remove_file(root.join("val2014").join("a.png")).unwrap();
    let (total, shown, msg) = bad_rows(read_dataset(&root, &ReadOptions::default()).unwrap_err());
    assert_eq!(total, 2, "{msg}");
    assert!(shown[0].origin.contains("image id 11 (a.png)"), "{msg}");
    assert!(shown[0].reason.contains("not found"), "{msg}");
    assert!(shown[1].origin.contains("image id 22 (b.png)"), "{msg}");
    assert!(shown[1].reason.contains("category id 77"), "{msg}");

    let ds = read_dataset(&root, &skip_bad()).unwrap();
    assert!(ds.samples.is_empty());
    assert_eq!(ds.skipped.len(), 2);
}

#[test]
fn coco_invalid_json_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let root = coco_root(dir.path(), "val");
    write(
        &root.join("annotations").join("instances_val2014.json"),
        "{\n  \"images\": [\n    {\"id\": 1,}\n",
    );
    let err = read_dataset(&root, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Parse { .. }), "{err}");
    assert!(
        err.to_string().contains("instances_val2014.json:3:"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Pascal VOC

fn voc_xml(objects: &[(&str, bool)]) -> String {
    let mut xml = String::from("<annotation>\n  <folder>VOC2007</folder>\n");
    for (name, difficult) in objects {
        xml.push_str(&format!(
            "  <object>\n    <name>{name}</name>\n    <pose>Left</pose>\n    \
             <difficult>{}</difficult>\n  </object>\n",
            u8::from(*difficult)
        ));
    }
    xml.push_str("</annotation>\n");
    xml
}

/// 000001: a dog, a difficult-only cat, a person both difficult and not; 000002: a car;
/// 000003: a difficult bus.
fn voc_root(dir: &Path) -> PathBuf {
    let root = dir.join("VOC2007");
    let xmls = [
        (
            "000001",
            voc_xml(&[
                ("dog", false),
                ("cat", true),
                ("person", true),
                ("person", false),
            ]),
        ),
        ("000002", voc_xml(&[("car", false)])),
        ("000003", voc_xml(&[("bus", true)])),
    ];
    for (id, xml) in xmls {
        write(&root.join("Annotations").join(format!("{id}.xml")), &xml);
        jpeg(&root.join("JPEGImages").join(format!("{id}.jpg")), false);
    }
    root
}

fn voc_class(name: &str) -> usize {
    asl_tresnet::pretrained::classes::VOC
        .iter()
        .position(|c| *c == name)
        .unwrap()
}

#[test]
fn voc_difficult_objects_follow_the_chosen_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = voc_root(dir.path());
    let read = |difficult| {
        let opts = ReadOptions {
            difficult,
            ..ReadOptions::default()
        };
        read_dataset(&root, &opts).unwrap()
    };
    let ds = read(Difficult::Ignore);
    assert_eq!(ds.format, DatasetFormat::Voc);
    assert_eq!(ds.classes, strings(&asl_tresnet::pretrained::classes::VOC));
    // No split list: every XML, sorted.
    assert_eq!(file_names(&ds), ["000001.jpg", "000002.jpg", "000003.jpg"]);
    let first = &ds.samples[0];
    assert_eq!(first.labels[voc_class("dog")], 1);
    assert_eq!(first.labels[voc_class("cat")], -1);
    assert_eq!(
        first.labels[voc_class("person")],
        1,
        "a non-difficult one wins"
    );
    assert_eq!(first.labels[voc_class("car")], 0);
    assert_eq!(first.labels.iter().filter(|&&l| l != 0).count(), 3);
    assert_eq!(ds.samples[2].labels[voc_class("bus")], -1);
    assert!(first.origin.ends_with("000001.xml"), "{}", first.origin);

    let ds = read(Difficult::Positive);
    assert_eq!(ds.samples[0].labels[voc_class("cat")], 1);
    assert_eq!(ds.samples[0].labels[voc_class("person")], 1);
    assert_eq!(ds.samples[2].labels[voc_class("bus")], 1);

    let ds = read(Difficult::Negative);
    assert_eq!(ds.samples[0].labels[voc_class("cat")], 0);
    assert_eq!(ds.samples[0].labels[voc_class("person")], 1);
    assert_eq!(ds.samples[2].labels, vec![0; 20]);
}

#[test]
fn voc_reads_the_imagesets_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = voc_root(dir.path());
    let main = root.join("ImageSets").join("Main");
    write(&main.join("test.txt"), "000003\n\n000001\n");
    write(&main.join("train.txt"), "000002\n");
    // Default: test.
    let ds = read_dataset(&root, &ReadOptions::default()).unwrap();
    assert_eq!(file_names(&ds), ["000003.jpg", "000001.jpg"]);
    assert!(ds.source.ends_with("test.txt"), "{}", ds.source);
    let opts = ReadOptions {
        split: Some("train".into()),
        ..ReadOptions::default()
    };
    let ds = read_dataset(&root, &opts).unwrap();
    assert_eq!(file_names(&ds), ["000002.jpg"]);
    // A split asked for by name must exist.
    let opts = ReadOptions {
        split: Some("val".into()),
        ..ReadOptions::default()
    };
    let err = read_dataset(&root, &opts).unwrap_err();
    assert!(matches!(err, DataError::Layout { .. }), "{err}");
    assert!(err.to_string().contains("val.txt"), "{err}");
}

#[test]
fn voc_bad_rows_name_the_xml_file_or_split_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = voc_root(dir.path());
    let ann = root.join("Annotations");
    write(
        &ann.join("000002.xml"),
        "<annotation>\n  <object>\n</annotation>\n",
    );
    write(&ann.join("000003.xml"), &voc_xml(&[("unicorn", false)]));
    write(
        &root.join("ImageSets").join("Main").join("test.txt"),
        "000001\n000002\n000003\n000009\n",
    );
    let (total, shown, msg) = bad_rows(read_dataset(&root, &ReadOptions::default()).unwrap_err());
    assert_eq!(total, 3, "{msg}");
    assert!(shown[0].origin.ends_with("000002.xml"), "{msg}");
    assert!(shown[0].reason.contains("malformed XML"), "{msg}");
    assert!(shown[1].origin.ends_with("000003.xml"), "{msg}");
    assert!(shown[1].reason.contains("\"unicorn\""), "{msg}");
    assert!(shown[2].origin.ends_with("test.txt:4"), "{msg}");
    assert!(shown[2].reason.contains("000009.xml not found"), "{msg}");

    let ds = read_dataset(&root, &skip_bad()).unwrap();
    assert_eq!(file_names(&ds), ["000001.jpg"]);
    assert_eq!(ds.skipped.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// CSV / TSV

#[test]
fn csv_handles_quotes_empty_labels_and_a_sorted_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    png(&data.join("img").join("a, b.png"), [0, 0, 0]);
    png(&data.join("img").join("c.png"), [0, 0, 0]);
    png(&data.join("img").join("d.png"), [0, 0, 0]);
    let csv = data.join("train.csv");
    write(
        &csv,
        "image,labels\n\"img/a, b.png\",\"zebra  cat\"\nimg/c.png,\n\nimg/d.png,dog\n",
    );
    let ds = read_dataset(&csv, &ReadOptions::default()).unwrap();
    assert_eq!(ds.format, DatasetFormat::Csv);
    assert_eq!(ds.classes, strings(&["cat", "dog", "zebra"]));
    assert_eq!(
        labels(&ds),
        vec![vec![1, 0, 1], vec![0, 0, 0], vec![0, 1, 0]]
    );
    // Relative to the CSV's folder.
    assert_eq!(ds.samples[0].image, data.join("img").join("a, b.png"));
    let origins: Vec<&str> = ds.samples.iter().map(|s| s.origin.as_str()).collect();
    let name = csv.display().to_string();
    assert_eq!(
        origins,
        [
            format!("{name}:2"),
            format!("{name}:3"),
            format!("{name}:5")
        ]
    );
}

#[test]
fn csv_label_separators_semicolon_and_pipe() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a.png"), [0, 0, 0]);
    png(&dir.path().join("b.png"), [0, 0, 0]);
    for sep in [';', '|'] {
        let csv = dir.path().join("t.csv");
        write(
            &csv,
            &format!("labels,image\n\"traffic light{sep} stop sign\",a.png\n{sep}person{sep}{sep},b.png\n"),
        );
        let opts = ReadOptions {
            label_sep: Some(sep),
            ..ReadOptions::default()
        };
        let ds = read_dataset(&csv, &opts).unwrap();
        assert_eq!(
            ds.classes,
            strings(&["person", "stop sign", "traffic light"]),
            "separator {sep}"
        );
        assert_eq!(labels(&ds), vec![vec![0, 1, 1], vec![1, 0, 0]]);
    }
}

#[test]
fn tsv_is_detected_by_extension_or_a_tab_in_the_header() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a,1.png"), [0, 0, 0]);
    for name in ["t.tsv", "tabs.csv"] {
        let file = dir.path().join(name);
        write(&file, "image\tlabels\na,1.png\tcat dog\n");
        let ds = read_dataset(&file, &ReadOptions::default()).unwrap();
        assert_eq!(ds.classes, strings(&["cat", "dog"]), "{name}");
        assert_eq!(ds.samples[0].image, dir.path().join("a,1.png"), "{name}");
    }
}

#[test]
fn csv_paths_resolve_against_the_image_root_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("lists").join("t.csv");
    write(&csv, "image,labels\nx.png,cat\n");
    let images = dir.path().join("images");
    png(&images.join("x.png"), [0, 0, 0]);
    // Relative to the CSV's folder, the image is missing.
    let (_, shown, msg) = bad_rows(read_dataset(&csv, &ReadOptions::default()).unwrap_err());
    assert!(shown[0].reason.contains("not found"), "{msg}");
    let opts = ReadOptions {
        image_root: Some(images.clone()),
        ..ReadOptions::default()
    };
    let ds = read_dataset(&csv, &opts).unwrap();
    assert_eq!(ds.samples[0].image, images.join("x.png"));
}

#[test]
fn csv_without_the_header_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    write(&csv, "a.png,cat\n");
    let err = read_dataset(&csv, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("t.csv:1"), "{err}");
    assert!(err.to_string().contains("image,labels"), "{err}");
}

#[test]
fn given_classes_fix_the_vocabulary_and_unknown_labels_are_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a.png"), [0, 0, 0]);
    png(&dir.path().join("b.png"), [0, 0, 0]);
    let csv = dir.path().join("t.csv");
    write(&csv, "image,labels\na.png,dog\nb.png,Traffic_Light dog\n");
    let opts = ReadOptions {
        classes: Some(strings(&["traffic light", "dog", "cat"])),
        ..ReadOptions::default()
    };
    let (total, shown, msg) = bad_rows(read_dataset(&csv, &opts).unwrap_err());
    assert_eq!(total, 1, "{msg}");
    assert_eq!(shown[0].origin, format!("{}:3", csv.display()));
    assert!(shown[0].reason.contains("\"Traffic_Light\""), "{msg}");
    assert!(
        shown[0].reason.contains("did you mean \"traffic light\""),
        "{msg}"
    );
    let opts = ReadOptions {
        skip_bad: true,
        ..opts
    };
    let ds = read_dataset(&csv, &opts).unwrap();
    assert_eq!(ds.classes, strings(&["traffic light", "dog", "cat"]));
    assert_eq!(labels(&ds), vec![vec![0, 1, 0]]);
}

// ---------------------------------------------------------------------------------------------
// JSON Lines

#[test]
fn jsonl_reads_rows_and_skips_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a.png"), [0, 0, 0]);
    png(&dir.path().join("b.png"), [0, 0, 0]);
    let file = dir.path().join("t.jsonl");
    write(
        &file,
        "{\"image\": \"a.png\", \"labels\": [\"b\", \"a\"]}\n\n   \n{\"image\": \"b.png\", \"labels\": [], \"w\": 1}\n",
    );
    let ds = read_dataset(&file, &ReadOptions::default()).unwrap();
    assert_eq!(ds.format, DatasetFormat::Jsonl);
    assert_eq!(ds.classes, strings(&["a", "b"]));
    assert_eq!(labels(&ds), vec![vec![1, 1], vec![0, 0]]);
    assert_eq!(ds.samples[1].origin, format!("{}:4", file.display()));
}

#[test]
fn jsonl_malformed_lines_are_reported_by_line() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join("a.png"), [0, 0, 0]);
    let file = dir.path().join("t.ndjson");
    write(
        &file,
        "{\"image\": \"a.png\", \"labels\": [\"x\"]}\n{\"image\": \"a.png\", \"labels\": [\"x\"\n{\"image\": \"a.png\"}\n",
    );
    let (total, shown, msg) = bad_rows(read_dataset(&file, &ReadOptions::default()).unwrap_err());
    assert_eq!(total, 2, "{msg}");
    assert_eq!(shown[0].origin, format!("{}:2", file.display()));
    assert!(shown[0].reason.contains("invalid JSON"), "{msg}");
    assert_eq!(shown[1].origin, format!("{}:3", file.display()));
    assert!(shown[1].reason.contains("labels"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Bad rows

#[test]
fn every_kind_of_bad_row_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    png(&d.join("good.png"), [0, 0, 0]);
    png(&d.join("good2.png"), [0, 0, 0]);
    write(&d.join("corrupt.png"), "this is not an image");
    std::fs::write(
        d.join("bad_header.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR garbage",
    )
    .unwrap();
    write(&d.join("empty.jpg"), "");
    let big = d.join("big.png");
    image::RgbImage::new(40, 30).save(&big).unwrap();
    let csv = d.join("t.csv");
    write(
        &csv,
        "image,labels\n\
         good.png,cat\n\
         missing.jpg,cat\n\
         corrupt.png,cat\n\
         good.png,dog\n\
         good2.png,cat,dog\n\
         \"good2.png\"x,cat\n\
         empty.jpg,cat\n\
         bad_header.png,cat\n\
         big.png,cat\n\
         good2.png,cat\n",
    );
    let opts = ReadOptions {
        max_pixels: 1000,
        ..ReadOptions::default()
    };
    let (total, shown, msg) = bad_rows(read_dataset(&csv, &opts).unwrap_err());
    let name = csv.display().to_string();
    let expect = [
        (3, "missing.jpg not found"),
        (4, "not in a supported image format"),
        (5, "duplicate image"),
        (6, "3 fields where the header has 2"),
        (7, "after the closing quote"),
        (8, "empty (0 bytes)"),
        (9, "bad_header.png"),
        (10, "1200 pixels"),
    ];
    assert_eq!(total, expect.len(), "{msg}");
    for ((line, reason), row) in expect.iter().zip(&shown) {
        assert_eq!(row.origin, format!("{name}:{line}"), "{msg}");
        assert!(row.reason.contains(reason), "line {line}: {msg}");
    }
    assert!(shown[2].reason.contains(&format!("{name}:2")), "{msg}");
    assert!(msg.starts_with(&format!("8 bad rows in {name}")), "{msg}");

    let opts = ReadOptions {
        skip_bad: true,
        ..opts
    };
    let ds = read_dataset(&csv, &opts).unwrap();
    assert_eq!(file_names(&ds), ["good.png", "good2.png"]);
    assert_eq!(ds.samples[1].origin, format!("{name}:11"));
    assert_eq!(ds.skipped.len(), 8);
    assert_eq!(ds.skipped[0].origin, format!("{name}:3"));
}

#[test]
fn image_checks_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    write(&csv, "image,labels\nmissing.png,cat\n");
    let opts = ReadOptions {
        check_images: false,
        ..ReadOptions::default()
    };
    let ds = read_dataset(&csv, &opts).unwrap();
    assert_eq!(ds.len(), 1);
}

#[test]
fn the_error_lists_the_first_ten_bad_rows_and_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let mut text = String::from("image,labels\n");
    for i in 0..25 {
        text.push_str(&format!("missing{i}.png,cat\n"));
    }
    write(&csv, &text);
    let (total, shown, msg) = bad_rows(read_dataset(&csv, &ReadOptions::default()).unwrap_err());
    assert_eq!(total, 25);
    assert_eq!(shown.len(), 10);
    assert!(msg.contains("missing9.png"), "{msg}");
    assert!(!msg.contains("missing10.png"), "{msg}");
    assert!(msg.contains("and 15 more"), "{msg}");
}

#[test]
fn format_detection_from_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels.txt");
    write(&file, "image,labels\n");
    let err = read_dataset(&file, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
    // The explicit format overrides the extension.
    let opts = ReadOptions {
        format: Some(DatasetFormat::Csv),
        ..ReadOptions::default()
    };
    assert!(read_dataset(&file, &opts).unwrap().is_empty());
    let err = read_dataset(&dir.path().join("nope.csv"), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
    let err = read_dataset(dir.path(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// align_to

fn small_csv(dir: &Path) -> FileDataset {
    png(&dir.join("a.png"), [0, 0, 0]);
    png(&dir.join("b.png"), [0, 0, 0]);
    let csv = dir.join("t.csv");
    write(&csv, "image,labels\na.png,dog cat\nb.png,bird\n");
    read_dataset(&csv, &ReadOptions::default()).unwrap()
}

#[test]
fn align_to_identical_classes_keeps_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_csv(dir.path());
    assert_eq!(ds.classes, strings(&["bird", "cat", "dog"]));
    let aligned = ds.clone().align_to(&ds.classes, false).unwrap();
    assert_eq!(aligned, ds);
}

#[test]
fn align_to_a_superset_maps_by_name_and_fills_negatives() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_csv(dir.path());
    let model = strings(&["dog", "person", "bird", "cat"]);
    let aligned = ds.align_to(&model, false).unwrap();
    assert_eq!(aligned.classes, model);
    assert_eq!(labels(&aligned), vec![vec![1, 0, 0, 1], vec![0, 0, 1, 0]]);
    assert_eq!(aligned.labels_flat()[..4], [1.0, 0.0, 0.0, 1.0]);
}

#[test]
fn align_to_keeps_ignored_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = voc_root(dir.path());
    let ds = read_dataset(&root, &ReadOptions::default()).unwrap();
    let mut model = strings(&asl_tresnet::pretrained::classes::VOC);
    model.reverse();
    model.push("extra".into());
    let aligned = ds.align_to(&model, false).unwrap();
    let cat = model.iter().position(|c| c == "cat").unwrap();
    assert_eq!(aligned.samples[0].labels[cat], -1);
    assert_eq!(aligned.samples[0].labels[20], 0);
}

#[test]
fn align_to_reports_labels_the_model_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_csv(dir.path());
    let model = strings(&["dog", "cat", "person"]);
    let (total, shown, msg) = bad_rows(ds.clone().align_to(&model, false).unwrap_err());
    assert_eq!(total, 1, "{msg}");
    assert!(shown[0].origin.ends_with("t.csv:3"), "{msg}");
    assert!(shown[0].reason.contains("\"bird\""), "{msg}");
    let aligned = ds.align_to(&model, true).unwrap();
    assert_eq!(labels(&aligned), vec![vec![1, 1, 0]]);
    assert_eq!(aligned.skipped.len(), 1);
    assert!(aligned.skipped[0].origin.ends_with("t.csv:3"));
}

// ---------------------------------------------------------------------------------------------
// Loader

fn colour_pngs(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("{i}.png"));
            png(&path, [i as u8 * 10, 0, 255]);
            path
        })
        .collect()
}

#[test]
fn loader_yields_every_image_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = colour_pngs(dir.path(), 7);
    let size = 5;
    let batches: Vec<_> = loader(
        paths,
        size,
        ResizeMode::Squish,
        3,
        2,
        asl_tresnet::images::DEFAULT_MAX_PIXELS,
    )
    .collect();
    let indices: Vec<Vec<usize>> = batches.iter().map(|b| b.indices.clone()).collect();
    assert_eq!(indices, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    let plane = (size * size) as usize;
    for batch in &batches {
        assert!(batch.failed.is_empty());
        assert_eq!(batch.inputs.len(), batch.indices.len() * 3 * plane);
        for (k, &i) in batch.indices.iter().enumerate() {
            let image = &batch.inputs[k * 3 * plane..(k + 1) * 3 * plane];
            // A solid colour survives resizing: red plane i*10/255, green 0, blue 1.
            assert!((image[0] - (i as f32 * 10.0) / 255.0).abs() < 1e-6);
            assert_eq!(image[plane], 0.0);
            assert_eq!(image[2 * plane + plane - 1], 1.0);
        }
    }
}

#[test]
fn loader_reports_undecodable_images_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = colour_pngs(dir.path(), 3);
    let truncated = dir.path().join("truncated.jpg");
    jpeg(&truncated, true);
    paths.insert(1, truncated);
    paths.push(dir.path().join("missing.png"));
    let mut loader = loader(paths, 4, ResizeMode::Squish, 2, 1, u64::MAX);
    assert_eq!(loader.num_batches(), 3);
    let first = loader.next().unwrap();
    assert_eq!(first.indices, vec![0]);
    assert_eq!(first.inputs.len(), 3 * 16);
    assert_eq!(first.failed.len(), 1);
    assert_eq!(first.failed[0].0, 1);
    assert!(
        first.failed[0].1.to_string().contains("truncated.jpg"),
        "{}",
        first.failed[0].1
    );
    let second = loader.next().unwrap();
    assert_eq!(second.indices, vec![2, 3]);
    let third = loader.next().unwrap();
    assert_eq!(third.indices, Vec::<usize>::new());
    assert!(third.inputs.is_empty());
    assert_eq!(third.failed[0].0, 4);
    assert!(loader.next().is_none());
}

#[test]
fn loader_prefetch_is_bounded_and_dropping_it_stops_the_thread() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let paths: Vec<PathBuf> = (0..100).map(|i| PathBuf::from(format!("{i}"))).collect();
    let (batch_size, prefetch) = (2, 1);
    let mut loader = Loader::new((0..paths.len()).collect(), batch_size, prefetch, move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(vec![i as f32])
    });
    std::thread::sleep(Duration::from_millis(300));
    // One batch in the channel, one finished and waiting to be sent.
    assert!(calls.load(Ordering::SeqCst) <= (prefetch + 1) * batch_size);
    let first = loader.next().unwrap();
    assert_eq!(first.indices, vec![0, 1]);
    assert_eq!(first.inputs, vec![0.0, 1.0]);
    drop(loader);
    let after_drop = calls.load(Ordering::SeqCst);
    assert!(after_drop <= (prefetch + 2) * batch_size, "{after_drop}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(calls.load(Ordering::SeqCst), after_drop);
}

#[test]
fn loader_follows_a_given_order() {
    let paths: Vec<PathBuf> = (0..5).map(|i| PathBuf::from(format!("{i}"))).collect();
    let order = vec![4, 0, 3, 3, 1];
    let batches: Vec<_> = Loader::new(order.clone(), 2, 0, move |i| {
        assert_eq!(paths[i], Path::new(&i.to_string()));
        Ok(vec![i as f32])
    })
    .collect();
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, order);
    let inputs: Vec<f32> = batches.iter().flat_map(|b| b.inputs.clone()).collect();
    assert_eq!(inputs, vec![4.0, 0.0, 3.0, 3.0, 1.0]);
}

#[test]
fn a_panic_in_the_loader_is_not_mistaken_for_the_end() {
    let paths: Vec<PathBuf> = (0..4).map(|i| PathBuf::from(format!("{i}"))).collect();
    let loader = Loader::new((0..paths.len()).collect(), 2, 1, |i| {
        if i == 3 {
            panic!("transform failed");
        }
        Ok(vec![0.0])
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.count()));
    assert!(result.is_err());
}

#[test]
fn dataset_labels_feed_the_loader_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ds = small_csv(dir.path());
    let mut batches = loader(ds.image_paths(), 2, ResizeMode::Squish, 8, 1, u64::MAX);
    let batch = batches.next().unwrap();
    assert_eq!(batch.indices, vec![0, 1]);
    assert_eq!(ds.labels_for(&batch.indices), ds.labels_flat());
    assert_eq!(ds.labels_flat(), vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
}
