//! The embedded demo dataset: sizes, label statistics, agreement with the
//! generator's files and manifest, disjoint splits, `write_split` round trip, and errors (not
//! panics) on inconsistent bytes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{
    decode_split, embedded_size, load, write_split, DemoData, DemoDataError, DemoSplit, CLASSES,
    EMBEDDED_FILES, IMAGE_SIDE,
};
use sha2::{Digest, Sha256};

const MAX_BYTES: u64 = 5 * 1024 * 1024;

fn data() -> &'static DemoData {
    static DATA: OnceLock<DemoData> = OnceLock::new();
    DATA.get_or_init(|| load().unwrap())
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo")
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(demo_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn splits() -> [(&'static str, &'static DemoSplit); 3] {
    let d = data();
    [("train", &d.train), ("val", &d.val), ("test", &d.test)]
}

/// The labels file as the generator wrote it, read from disk (not through the library).
fn csv_on_disk(split: &str) -> String {
    std::fs::read_to_string(demo_dir().join(format!("{split}_labels.csv"))).unwrap()
}

#[test]
fn sizes_and_counts() {
    assert_eq!(IMAGE_SIDE, 32);
    let side = data().train.images[0].width();
    assert!(
        side.is_multiple_of(4) && side >= 20,
        "TResNet's input constraint"
    );
    assert_eq!(CLASSES, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    let m = manifest();
    for ((name, split), want) in splits().into_iter().zip([2000, 400, 8]) {
        assert_eq!(split.len(), want, "{name}");
        assert_eq!(split.labels.len(), want, "{name}");
        assert_eq!(m["splits"][name]["images"], want, "{name}");
        for (i, img) in split.images.iter().enumerate() {
            assert_eq!(img.dimensions(), (IMAGE_SIDE, IMAGE_SIDE), "{name} {i}");
        }
        for row in &split.labels {
            assert_eq!(row.len(), CLASSES.len());
            assert!(row.iter().all(|&l| l == 0 || l == 1), "{row:?}");
        }
    }
}

#[test]
fn every_image_has_one_to_three_positives() {
    for (name, split) in splits() {
        for (i, row) in split.labels.iter().enumerate() {
            let positives = row.iter().filter(|&&l| l == 1).count();
            assert!((1..=3).contains(&positives), "{name} image {i}: {row:?}");
        }
    }
}

#[test]
fn positives_are_a_small_minority() {
    for (name, split) in splits() {
        let total: usize = split.labels.iter().flatten().filter(|&&l| l == 1).count();
        let rate = total as f64 / (split.len() * CLASSES.len()) as f64;
        assert!(rate < 0.35, "{name}: positive rate {rate}");
        assert!(rate > 0.05, "{name}: positive rate {rate}");
    }
    // Per class in train and val: every class is present, none in more than 35% of the images.
    for (name, split) in [("train", &data().train), ("val", &data().val)] {
        for (k, class) in CLASSES.iter().enumerate() {
            let pos = split.labels.iter().filter(|row| row[k] == 1).count();
            let rate = pos as f64 / split.len() as f64;
            assert!(
                pos > 0 && rate < 0.35,
                "{name} class {class}: {pos} positives"
            );
        }
    }
}

#[test]
fn labels_match_the_generator_csv_and_manifest() {
    let m = manifest();
    for (name, split) in splits() {
        let text = csv_on_disk(name);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("image,labels"));
        let lines: Vec<&str> = lines.collect();
        assert_eq!(lines.len(), split.len(), "{name}");
        for (i, line) in lines.iter().enumerate() {
            let (image, labels) = line.split_once(',').unwrap();
            assert_eq!(image, format!("{i:05}.png"));
            let mut want: Vec<&str> = labels.split_whitespace().collect();
            want.sort_unstable();
            assert_eq!(split.label_names(i), want, "{name} line {}", i + 2);
        }
        // Per-class counts as the generator (Python) computed them.
        let per_class: Vec<u64> = (0..CLASSES.len())
            .map(|k| split.labels.iter().filter(|row| row[k] == 1).count() as u64)
            .collect();
        let want: Vec<u64> = m["splits"][name]["positives_per_class"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(per_class, want, "{name}");
    }
}

#[test]
fn pixels_match_the_generator_manifest() {
    // The generator hashes the raw RGB bytes of every mosaic in order: this checks the sheet
    // decoding and the tiling order, pixel for pixel.
    let m = manifest();
    for (name, split) in splits() {
        let mut hash = Sha256::new();
        for img in &split.images {
            hash.update(img.as_raw());
        }
        let got: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, m["splits"][name]["rgb_sha256"], "{name}");
    }
}

#[test]
fn embedded_bytes_are_the_files_on_disk() {
    for (file, bytes) in EMBEDDED_FILES {
        let on_disk = std::fs::read(demo_dir().join(file)).unwrap();
        assert!(on_disk == bytes, "{file} differs from the embedded copy");
    }
}

#[test]
fn splits_are_disjoint() {
    let set = |split: &DemoSplit| -> HashSet<Vec<u8>> {
        split.images.iter().map(|i| i.as_raw().clone()).collect()
    };
    let (train, val, test) = (set(&data().train), set(&data().val), set(&data().test));
    assert!(train.is_disjoint(&val));
    assert!(train.is_disjoint(&test));
    assert!(val.is_disjoint(&test));
    // No duplicates within a split either, and no blank mosaic.
    assert_eq!(train.len(), 2000);
    assert_eq!(val.len(), 400);
    assert_eq!(test.len(), 8);
    for (name, split) in splits() {
        for (i, img) in split.images.iter().enumerate() {
            let first = img.get_pixel(0, 0);
            assert!(img.pixels().any(|p| p != first), "{name} {i} is one colour");
        }
    }
    // The generator draws the source digits of the splits from disjoint pools.
    let m = manifest();
    let pools: u64 = ["train", "val", "test"]
        .iter()
        .map(|s| m["splits"][s]["source_digits"].as_u64().unwrap())
        .sum();
    assert_eq!(pools, 1797, "the pools partition load_digits' 1797 images");
}

#[test]
fn write_split_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (name, split) in splits() {
        let out = dir.path().join(name);
        let csv = write_split(split, &out).unwrap();
        assert_eq!(csv, out.join("labels.csv"));
        let text = std::fs::read_to_string(&csv).unwrap();
        // Same lines as the generator's CSV (same names, same labels in class order).
        assert_eq!(text, csv_on_disk(name), "{name}");
        for (i, line) in text.lines().skip(1).enumerate() {
            let (image, _) = line.split_once(',').unwrap();
            let back = image::open(out.join(image)).unwrap().to_rgb8();
            assert!(back == split.images[i], "{name} {image}");
        }
    }
}

#[test]
fn write_split_reads_back_with_the_dataset_reader() {
    let dir = tempfile::tempdir().unwrap();
    let split = &data().val;
    let csv = write_split(split, dir.path()).unwrap();
    let ds = crate::data::read_dataset(&csv, &crate::data::ReadOptions::default()).unwrap();
    assert_eq!(ds.format, crate::data::DatasetFormat::Csv);
    assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);
    assert_eq!(ds.classes, CLASSES.map(String::from));
    assert_eq!(ds.samples.len(), split.len());
    for (i, sample) in ds.samples.iter().enumerate() {
        assert_eq!(sample.labels, split.labels[i], "row {i}");
        assert_eq!(sample.image, dir.path().join(format!("{i:05}.png")));
    }
}

#[test]
fn write_split_rejects_mismatched_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mut split = data().test.clone();
    split.labels.pop();
    let err = write_split(&split, dir.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let mut split = data().test.clone();
    split.labels[0][0] = 2;
    let err = write_split(&split, dir.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn embedded_data_stays_under_5_mb() {
    let size = embedded_size() as u64;
    assert!(size < MAX_BYTES, "{size} bytes embedded");
    let on_disk: u64 = EMBEDDED_FILES
        .iter()
        .map(|(f, _)| std::fs::metadata(demo_dir().join(f)).unwrap().len())
        .sum();
    assert_eq!(on_disk, size);
    // The whole folder (generator, README, manifest included).
    let folder: u64 = std::fs::read_dir(demo_dir())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(folder < MAX_BYTES, "{folder} bytes in data/demo");
}

#[test]
fn the_folder_documents_source_and_licence() {
    let readme = std::fs::read_to_string(demo_dir().join("README.md")).unwrap();
    for needle in [
        "Alpaydin",
        "Kaynak",
        "CC BY 4.0",
        "gen_demo_data.py",
        "load_digits",
    ] {
        assert!(readme.contains(needle), "README.md lacks {needle:?}");
    }
    let script = std::fs::read_to_string(demo_dir().join("gen_demo_data.py")).unwrap();
    assert!(script.contains("SEED ="));
    let versions = &manifest()["versions"];
    for lib in ["numpy", "scikit-learn", "Pillow"] {
        assert!(
            versions[lib].is_string(),
            "manifest lacks the {lib} version"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Inconsistent bytes: errors, never panics.

fn test_files() -> (&'static [u8], &'static str) {
    let png = EMBEDDED_FILES
        .iter()
        .find(|(f, _)| *f == "test.png")
        .unwrap()
        .1;
    let csv = EMBEDDED_FILES
        .iter()
        .find(|(f, _)| *f == "test_labels.csv")
        .unwrap()
        .1;
    (png, std::str::from_utf8(csv).unwrap())
}

#[test]
fn decode_split_accepts_the_embedded_test_split() {
    let (png, csv) = test_files();
    assert_eq!(decode_split("test", png, csv).unwrap(), data().test);
}

#[test]
fn decode_split_rejects_broken_sheets() {
    let (png, csv) = test_files();
    for cut in [0, 8, 33, png.len() / 2, png.len() - 13] {
        let err = decode_split("test", &png[..cut], csv).unwrap_err();
        assert!(
            matches!(err, DemoDataError::Decode { .. }),
            "cut {cut}: {err}"
        );
        assert!(err.to_string().contains("test.png"), "{err}");
    }
    // Flipped bytes: an error or (if the flip lands where the decoder does not look) a split of
    // the same shape; never a panic.
    for at in (0..png.len()).step_by(97) {
        let mut bad = png.to_vec();
        bad[at] ^= 0x5a;
        if let Ok(split) = decode_split("test", &bad, csv) {
            assert_eq!(split.len(), 8);
        }
    }
    // A sheet whose side is not a multiple of the image side.
    let mut odd = Vec::new();
    image::RgbImage::new(8 * IMAGE_SIDE, IMAGE_SIDE + 1)
        .write_to(&mut std::io::Cursor::new(&mut odd), image::ImageFormat::Png)
        .unwrap();
    let err = decode_split("test", &odd, csv).unwrap_err();
    assert!(err.to_string().contains("whole number"), "{err}");
}

#[test]
fn decode_split_rejects_counts_that_do_not_fit_the_sheet() {
    let (png, csv) = test_files();
    // 9 rows for an 8-cell sheet.
    let more = format!("{csv}00008.png,1\n");
    let err = decode_split("test", png, &more).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    // A sheet two rows high for 8 images: a wholly blank row.
    let mut tall = Vec::new();
    image::RgbImage::new(8 * IMAGE_SIDE, 2 * IMAGE_SIDE)
        .write_to(
            &mut std::io::Cursor::new(&mut tall),
            image::ImageFormat::Png,
        )
        .unwrap();
    let err = decode_split("test", &tall, csv).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    // Fewer rows than cells in the last row is fine (blank cells after the last image).
    let fewer: String = csv.lines().take(8).map(|l| format!("{l}\n")).collect();
    assert_eq!(decode_split("test", png, &fewer).unwrap().len(), 7);
}

#[test]
fn decode_split_rejects_bad_labels() {
    let (png, csv) = test_files();
    let cases = [
        ("", "empty file"),
        ("image,labels\n", "no image rows"),
        ("img,labels\n00000.png,1\n", "header"),
        ("image,labels\n00000.png 1\n", "no comma"),
        ("image,labels\n00001.png,1\n", "should be"),
        ("image,labels\n00000.png,one\n", "unknown label"),
        ("image,labels\n00000.png,1 1\n", "twice"),
    ];
    for (text, wanted) in cases {
        let err = decode_split("test", png, text).unwrap_err();
        assert!(
            matches!(err, DemoDataError::Invalid { .. }) && err.to_string().contains(wanted),
            "{text:?}: {err}"
        );
    }
    // A valid line with an out-of-order image name, in the real file.
    let swapped = csv.replacen("00003.png", "00004.png", 1);
    let err = decode_split("test", png, &swapped).unwrap_err();
    assert!(err.to_string().contains("test_labels.csv:5"), "{err}");
}
