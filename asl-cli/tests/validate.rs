//! `asl-cli validate` end to end.
//!
//! Metrics: one dataset (`tests/fixtures/validate.json`, from `gen_validate_fixtures.py`) with
//! fixed scores, written here as VOC (difficult objects for the ignored labels), CSV and JSON
//! Lines, evaluated with `--scores`; every metric is compared with scikit-learn / numpy's values.
//! Model runs: a tresnet_m with random weights through the whole pipeline (loader, model,
//! `--save-scores`, `--calibrate`, `--write-model`, `--plots`), its saved scores giving the same
//! report through `--scores`; bad rows.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asl-cli"))
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("run asl-cli")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn tiny_png(path: &Path, shade: u8) {
    image::RgbImage::from_pixel(8, 6, image::Rgb([shade, 100, 200]))
        .save(path)
        .expect("write image");
}

/// Writes the fixture's images into `dir` and a scores CSV naming them as `prefix/name`.
fn write_images_and_scores(fx: &Value, dir: &Path, image_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(image_dir).expect("image dir");
    let classes = strings(&fx["classes"]);
    let mut scores = format!("image,{}\n", classes.join(","));
    for (i, name) in strings(&fx["images"]).iter().enumerate() {
        tiny_png(&image_dir.join(name), i as u8);
        let row: Vec<String> = fx["scores"][i]
            .as_array()
            .expect("row")
            .iter()
            .map(|v| (v.as_f64().expect("score") as f32).to_string())
            .collect();
        scores.push_str(&format!(
            "{},{}\n",
            image_dir.join(name).display(),
            row.join(",")
        ));
    }
    let path = dir.join("scores.csv");
    std::fs::write(&path, scores).expect("scores");
    path
}

fn labels(fx: &Value, i: usize) -> Vec<i64> {
    fx["labels"][i]
        .as_array()
        .expect("labels")
        .iter()
        .map(|v| v.as_i64().expect("label"))
        .collect()
}

fn close(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64(), want.as_f64());
    match (g, w) {
        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-6, "{what}: {g} vs {w}"),
        _ => panic!("{what}: {got} vs {want}"),
    }
}

fn check_report(report: &Value, want: &Value, n: usize) {
    assert_eq!(report["num_images"], n);
    for key in ["map", "map_macro", "cp", "cr", "cf1", "op", "or", "of1"] {
        close(&report[key], &want[key], key);
    }
    assert_eq!(
        report["classes_with_positives"],
        want["classes_with_positives"]
    );
    let got = report["per_class"].as_array().expect("per class");
    let want = want["per_class"].as_array().expect("per class");
    assert_eq!(got.len(), want.len());
    for (c, (g, w)) in got.iter().zip(want).enumerate() {
        close(&g["ap"], &w["ap"], &format!("AP of class {c}"));
        close(
            &g["precision"],
            &w["precision"],
            &format!("precision of class {c}"),
        );
        close(&g["recall"], &w["recall"], &format!("recall of class {c}"));
        for key in ["positives", "tp", "fp", "fn"] {
            assert_eq!(g[key], w[key], "{key} of class {c}");
        }
    }
}

fn validate_json(args: &[&str]) -> Value {
    let mut all = vec!["validate", "--json", "-"];
    all.extend_from_slice(args);
    let o = cli(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("json report")
}

#[test]
fn metrics_match_scikit_learn_in_every_format() {
    let fx = fixture();
    let dir = tempfile::tempdir().expect("tmp");
    let classes = strings(&fx["classes"]);
    let images = strings(&fx["images"]);
    let threshold = fx["threshold"].as_f64().expect("threshold").to_string();
    let n = images.len();

    // VOC: positives as objects, ignored labels as difficult objects
    let voc = dir.path().join("VOC2007");
    for sub in ["Annotations", "ImageSets/Main"] {
        std::fs::create_dir_all(voc.join(sub)).expect("voc dirs");
    }
    let scores = write_images_and_scores(&fx, dir.path(), &voc.join("JPEGImages"));
    let mut ids = String::new();
    for (i, name) in images.iter().enumerate() {
        let id = name.trim_end_matches(".png");
        ids.push_str(&format!("{id}\n"));
        let mut xml = format!("<annotation><filename>{name}</filename>");
        for (c, &l) in labels(&fx, i).iter().enumerate() {
            if l != 0 {
                let difficult = i64::from(l < 0);
                xml.push_str(&format!(
                    "<object><name>{}</name><difficult>{difficult}</difficult></object>",
                    classes[c]
                ));
            }
        }
        xml.push_str("</annotation>");
        std::fs::write(voc.join(format!("Annotations/{id}.xml")), xml).expect("xml");
    }
    std::fs::write(voc.join("ImageSets/Main/test.txt"), ids).expect("split");
    let s = scores.to_str().expect("path");
    let v = voc.to_str().expect("path");
    let report = validate_json(&["--data", v, "--scores", s, "--threshold", &threshold]);
    check_report(&report, &fx["expected"], n);
    let report = validate_json(&[
        "--data",
        v,
        "--scores",
        s,
        "--threshold",
        &threshold,
        "--difficult",
        "negative",
    ]);
    check_report(&report, &fx["expected_ignored_as_negative"], n);

    // CSV and JSON Lines next to the images (paths relative to the file)
    let img_dir = voc.join("JPEGImages");
    let mut csv = String::from("image,labels\n");
    let mut jsonl = String::new();
    for (i, name) in images.iter().enumerate() {
        let pos: Vec<&str> = labels(&fx, i)
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == 1)
            .map(|(c, _)| classes[c].as_str())
            .collect();
        csv.push_str(&format!("{name},{}\n", pos.join(" ")));
        jsonl.push_str(&format!(
            "{}\n",
            serde_json::json!({"image": name, "labels": pos})
        ));
    }
    std::fs::write(img_dir.join("data.csv"), csv).expect("csv");
    std::fs::write(img_dir.join("data.jsonl"), jsonl).expect("jsonl");
    for file in ["data.csv", "data.jsonl"] {
        let data = img_dir.join(file);
        let report = validate_json(&[
            "--data",
            data.to_str().expect("path"),
            "--scores",
            s,
            "--threshold",
            &threshold,
        ]);
        check_report(&report, &fx["expected_ignored_as_negative"], n);
    }

    // the readable summary says which mAP is which
    let o = cli(&["validate", "--data", v, "--scores", s, "--per-class"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("mAP") && text.contains("paper definition") && text.contains("macro mAP")
    );
    assert!(text.contains("cow"), "per-class table: {text}");
}

#[test]
fn a_model_run_saves_scores_calibrates_and_plots() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = common::asl_model(dir.path());
    // a CSV dataset over the model's three classes, one unreadable image
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).expect("dir");
    let mut csv = String::from("image,labels\n");
    for i in 0..12u8 {
        tiny_png(&imgs.join(format!("{i}.png")), i * 20);
        let labels = ["cat", "dog", "cat;bird, flying"][i as usize % 3];
        csv.push_str(&format!("{i}.png,\"{labels}\"\n"));
    }
    let data = imgs.join("data.csv");
    std::fs::write(&data, &csv).expect("csv");
    let (m, d) = (model.to_str().expect("path"), data.to_str().expect("path"));
    let scores = dir.path().join("out/scores.csv");
    let plots = dir.path().join("plots");
    let calibrated = dir.path().join("calibrated.safetensors");
    let report = validate_json(&[
        "--model",
        m,
        "--data",
        d,
        "--save-scores",
        scores.to_str().expect("path"),
        "--plots",
        plots.to_str().expect("path"),
        "--calibrate",
        "--write-model",
        calibrated.to_str().expect("path"),
        "--batch-size",
        "5",
        "--label-sep",
        ";",
    ]);
    assert_eq!(report["num_images"], 12);
    assert_eq!(report["per_class"].as_array().map(Vec::len), Some(3));
    let cal = &report["calibrated"];
    assert!(cal["cf1_mean_of_f1"].as_f64() >= report["cf1_mean_of_f1"].as_f64());
    for (c, m) in cal["per_class"]
        .as_array()
        .expect("classes")
        .iter()
        .enumerate()
    {
        let before = report["per_class"][c]["f1"].as_f64().expect("f1");
        assert!(m["f1"].as_f64().expect("f1") >= before - 1e-9, "class {c}");
    }
    for png in ["ap_per_class.png", "pr_curves.png"] {
        let img = image::open(plots.join(png)).expect(png);
        assert!(img.width() > 100 && img.height() > 100);
    }
    // the saved scores give the same report without the model
    let again = validate_json(&[
        "--data",
        d,
        "--label-sep",
        ";",
        "--scores",
        scores.to_str().expect("path"),
    ]);
    for key in ["map", "map_macro", "cp", "cr", "of1"] {
        close(&again[key], &report[key], key);
    }
    // the calibrated copy carries the thresholds, and infer uses them
    let meta =
        asl_tresnet::pretrained::weights::load_weights(&calibrated, &candle_core::Device::Cpu)
            .expect("calibrated model")
            .metadata
            .expect("metadata");
    let thresholds = meta.class_thresholds.expect("thresholds");
    let want: Vec<f64> = cal["per_class"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|m| m["threshold"].as_f64().expect("threshold"))
        .collect();
    assert_eq!(thresholds, want);
    let img = imgs.join("0.png");
    let o = cli(&[
        "infer",
        "--model",
        calibrated.to_str().expect("path"),
        "--format",
        "json",
        "--all-scores",
        img.to_str().expect("path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: Value = serde_json::from_slice(&o.stdout).expect("json line");
    let scores = line["scores"].as_array().expect("scores");
    let labelled: Vec<u64> = line["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l["index"].as_u64().expect("index"))
        .collect();
    for (c, s) in scores.iter().enumerate() {
        let above = s.as_f64().expect("score") as f32 >= thresholds[c] as f32;
        assert_eq!(
            labelled.contains(&(c as u64)),
            above,
            "class {c}: infer uses its threshold"
        );
    }
    let o = cli(&[
        "validate",
        "--model",
        m,
        "--data",
        d,
        "--label-sep",
        ";",
        "--calibrate",
        "--write-model",
        calibrated.to_str().expect("path"),
    ]);
    assert!(stderr(&o).contains("--force"), "never overwritten silently");
}

#[test]
fn bad_rows_stop_the_run_or_are_skipped() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = common::asl_model(dir.path());
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).expect("dir");
    for i in 0..4u8 {
        tiny_png(&imgs.join(format!("{i}.png")), i);
    }
    std::fs::write(imgs.join("broken.png"), b"\x89PNG\r\n\x1a\n garbage").expect("broken");
    let csv = "image,labels\n0.png,cat\n1.png,dog\nmissing.png,cat\n2.png,zebra\nbroken.png,dog\n3.png,cat\n0.png,cat\n";
    let data = imgs.join("data.csv");
    std::fs::write(&data, csv).expect("csv");
    let (m, d) = (model.to_str().expect("path"), data.to_str().expect("path"));
    let o = cli(&["validate", "--model", m, "--data", d]);
    assert!(!o.status.success());
    let err = stderr(&o);
    for part in [
        "data.csv:4",
        "missing.png",
        "data.csv:6",
        "broken.png",
        "data.csv:8",
    ] {
        assert!(err.contains(part), "{part} in {err}");
    }
    // zebra is unknown to the model: reported when matching the vocabularies
    let o = cli(&[
        "validate",
        "--model",
        m,
        "--data",
        d,
        "--skip-bad",
        "--json",
        "-",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["num_images"], 3, "0, 1 and 3 remain: {}", stderr(&o));
    assert!(stderr(&o).contains("zebra"), "{}", stderr(&o));
}

mod common {
    use std::path::{Path, PathBuf};

    use asl_test_support::models::{multilabel_cfg, write_model};
    use asl_tresnet::TResNetConfig;

    /// A random tresnet_m over cat, dog and "bird, flying" at 32 px.
    pub fn asl_model(dir: &Path) -> PathBuf {
        let cfg = TResNetConfig::tresnet_m(3);
        let path = dir.join("model.safetensors");
        let meta = multilabel_cfg(&cfg, &["cat", "dog", "bird, flying"], 32, 0.7);
        write_model(&path, &cfg, &meta);
        path
    }
}
