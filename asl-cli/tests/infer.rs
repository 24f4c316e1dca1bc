//! `asl-cli infer` and `asl-cli models` end to end: real image files, real weight files (a
//! tresnet_m with random weights, in the project's format and in timm's), a local hub on
//! 127.0.0.1 for registry names and `hf:` sources, every output format, bad images.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use asl_tresnet::pretrained::weights::save_safetensors;
use asl_tresnet::pretrained::Activation;
use asl_tresnet::pretrained::{PretrainedCfg, ResizeMode};
use asl_tresnet::{TResNet, TResNetConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use asl_test_support::hub::{Behaviour, ServedFile, TestHub};

const CLASSES: [&str; 3] = ["cat", "dog", "bird, flying"];

fn cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_asl-cli"));
    cmd.args(args)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("ASL_RS_HUB_ORG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run asl-cli");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("asl-cli output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A tresnet_m backbone with random weights (made once per test binary).
fn backbone() -> &'static HashMap<String, Tensor> {
    static WEIGHTS: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    WEIGHTS.get_or_init(|| {
        let vars = VarMap::new();
        TResNet::new(
            &TResNetConfig::tresnet_m(1),
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )
        .expect("random tresnet_m");
        let data = vars.data().lock().expect("vars");
        data.iter()
            .filter(|(k, _)| !k.starts_with("head."))
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    })
}

/// The backbone with a random `classes`-way head.
fn weights(classes: usize) -> HashMap<String, Tensor> {
    let mut t = backbone().clone();
    let features = TResNetConfig::tresnet_m(classes).num_features();
    // a small random head over spread biases: scores that depend on the image but stay
    // distinct and away from 0 and 1 (a head of std 0.05 on the random backbone's features gave
    // logits of +-70, and a threshold test between two scores that were both 1.0 in f32)
    t.insert(
        "head.fc.weight".into(),
        Tensor::randn(0f32, 5e-5, (classes, features), &Device::Cpu).expect("head"),
    );
    let spread = (0..classes).map(|i| 3.0 * i as f32 / classes.max(2) as f32 - 1.5);
    t.insert(
        "head.fc.bias".into(),
        Tensor::from_iter(spread, &Device::Cpu).expect("bias"),
    );
    t
}

/// A model in the project's format: 3 named classes, 64 px squish, threshold 0.
fn asl_model(dir: &Path) -> PathBuf {
    let path = dir.join("model.safetensors");
    let meta = PretrainedCfg {
        arch: "tresnet_m".into(),
        num_classes: 3,
        class_names: CLASSES.iter().map(|s| s.to_string()).collect(),
        input_size: 64,
        resize: ResizeMode::Squish,
        threshold: 0.0,
        activation: Activation::Sigmoid,
        class_thresholds: None,
        source: "random test weights".into(),
        mean: [0.0; 3],
        std: [1.0; 3],
        license: None,
    };
    save_safetensors(&path, &weights(3), &meta).expect("write model");
    path
}

/// timm-format bytes (no metadata) with a `classes`-way head.
fn timm_bytes(classes: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.safetensors");
    candle_core::safetensors::save(&weights(classes), &path).expect("save");
    std::fs::read(path).expect("read back")
}

/// Writes test images: a.png, sub/b.jpg, sub/deeper/c.bmp and a notes.txt that is no image.
fn images(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir.join("sub/deeper")).expect("dirs");
    let img = image::RgbImage::from_fn(90, 70, |x, y| image::Rgb([x as u8 * 2, y as u8 * 3, 77]));
    let paths = [
        dir.join("a.png"),
        dir.join("sub/b.jpg"),
        dir.join("sub/deeper/c.bmp"),
    ];
    for p in &paths {
        img.save(p).expect("write image");
    }
    std::fs::write(dir.join("sub/notes.txt"), "not an image").expect("notes");
    paths.to_vec()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn models_lists_the_registry() {
    let o = cli(&["models", "--format", "json"], &[], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let rows = v.as_array().expect("a list");
    assert_eq!(
        rows.len(),
        asl_tresnet::pretrained::registry::REGISTRY.len()
    );
    let coco = rows
        .iter()
        .find(|r| r["name"] == "tresnet_l-coco")
        .expect("tresnet_l-coco");
    assert_eq!(coco["input_size"], 448);
    assert_eq!(coco["public"], false);
    assert_eq!(coco["repo"], "asl-rs/tresnet_l-coco");
    assert_eq!(rows.iter().filter(|r| r["public"] == true).count(), 10);
    let o = cli(&["models"], &[("ASL_RS_HUB_ORG", "me")], None);
    let text = stdout(&o);
    assert!(text.contains("me/tresnet_l-coco") && text.contains("timm/tresnet_m.miil_in1k"));
}

#[test]
fn infer_labels_images_in_every_format() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = asl_model(dir.path());
    let imgs = images(&dir.path().join("imgs"));
    let m = model.to_str().expect("utf-8 path");
    let a = imgs[0].to_str().expect("path");
    let b = imgs[1].to_str().expect("path");

    let o = cli(&["infer", "--model", m, a, b], &[], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(a) && text.contains(b), "{text}");
    assert!(
        CLASSES.iter().all(|c| text.contains(c)),
        "threshold 0: all labels\n{text}"
    );

    let o = cli(
        &["infer", "-m", m, "--format", "json", "--all-scores", a, b],
        &[],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let scores: Vec<f64> = serde_json::from_value(line["scores"].clone()).expect("scores");
        assert_eq!(scores.len(), 3);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let labels = line["labels"].as_array().expect("labels");
        assert_eq!(labels.len(), 3);
        let got: Vec<f64> = labels
            .iter()
            .map(|l| l["score"].as_f64().expect("score"))
            .collect();
        assert!(
            got.windows(2).all(|w| w[0] >= w[1]),
            "highest first: {got:?}"
        );
        for l in labels {
            let i = l["index"].as_u64().expect("index") as usize;
            assert_eq!(l["name"], CLASSES[i]);
            assert_eq!(l["score"].as_f64(), Some(scores[i]));
        }
    }
    assert_eq!(lines[0]["image"], a);

    // threshold between the scores of the first image; top-k
    // scores of `a` alone (a batch of one, as in the runs below)
    let o = cli(
        &["infer", "-m", m, "--format", "json", "--all-scores", a],
        &[],
        None,
    );
    let s: Vec<f64> = serde_json::from_value(json_lines(&o)[0]["scores"].clone()).expect("s");
    let mut sorted = s.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(
        sorted[0] < sorted[1] && sorted[1] < sorted[2] && sorted[0] > 1e-3 && sorted[2] < 0.999,
        "the test model's scores are distinct and not saturated: {sorted:?}"
    );
    let mid = ((sorted[0] + sorted[1]) / 2.0).to_string();
    let o = cli(
        &["infer", "-m", m, "--format", "json", "--threshold", &mid, a],
        &[],
        None,
    );
    assert_eq!(
        json_lines(&o)[0]["labels"].as_array().map(Vec::len),
        Some(2)
    );
    let o = cli(
        &["infer", "-m", m, "--format", "json", "--top-k", "1", a],
        &[],
        None,
    );
    let labels = json_lines(&o)[0]["labels"].clone();
    assert_eq!(labels.as_array().map(Vec::len), Some(1));
    assert_eq!(labels[0]["score"].as_f64(), Some(sorted[2]));

    let o = cli(&["infer", "-m", m, "--format", "csv", a], &[], None);
    let text = stdout(&o);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "image,label,score");
    assert_eq!(rows.len(), 4);
    assert!(text.contains("\"bird, flying\""), "quoted: {text}");
    let o = cli(
        &["infer", "-m", m, "--format", "csv", "--all-scores", a, b],
        &[],
        None,
    );
    let text = stdout(&o);
    assert!(
        text.starts_with("image,cat,dog,\"bird, flying\"\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3);

    // the same image alone and in a batch of two: the same scores up to rounding
    let pair: Vec<f64> = serde_json::from_value(lines[0]["scores"].clone()).expect("scores");
    for (x, y) in pair.iter().zip(&s) {
        assert!((x - y).abs() < 1e-5, "batch of 2 {pair:?} vs alone {s:?}");
    }
}

#[test]
fn inputs_from_directories_globs_and_stdin() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = asl_model(dir.path());
    let imgs = images(&dir.path().join("imgs"));
    let m = model.to_str().expect("path");
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["infer", "-m", m, "--format", "json"];
        all.extend_from_slice(args);
        let o = cli(&all, &[], stdin);
        assert!(o.status.success(), "{}", stderr(&o));
        json_lines(&o)
            .iter()
            .map(|l| l["image"].as_str().expect("image").to_string())
            .collect::<Vec<_>>()
    };
    let root = dir.path().join("imgs");
    let found = run(&[root.to_str().expect("path")], None);
    let want: Vec<String> = imgs.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(found, want, "recursive, sorted, notes.txt skipped");
    let pattern = format!("{}/sub/*.jpg", root.display());
    assert_eq!(run(&[&pattern], None), vec![want[1].clone()]);
    let list = format!("{}\n\n{}\n", want[2], want[0]);
    assert_eq!(
        run(&["-"], Some(&list)),
        vec![want[2].clone(), want[0].clone()]
    );

    let o = cli(
        &["infer", "-m", m, &format!("{}/*.gif", root.display())],
        &[],
        None,
    );
    assert!(!o.status.success() && stderr(&o).contains("matches no files"));
}

#[test]
fn bad_images_are_reported_and_skipped_or_stop_the_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = asl_model(dir.path());
    let imgs = images(&dir.path().join("imgs"));
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff garbage").expect("bad file");
    let (m, a, bad) = (
        model.to_str().expect("path"),
        imgs[0].to_str().expect("path"),
        bad.to_str().expect("path"),
    );
    let o = cli(
        &["infer", "-m", m, "--format", "json", bad, a, "missing.png"],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "some images failed");
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["image"], a);
    let err = stderr(&o);
    assert!(
        err.contains("broken.jpg") && err.contains("missing.png"),
        "{err}"
    );
    assert!(err.contains("2 of 3 images"), "{err}");

    let o = cli(&["infer", "-m", m, "--strict", bad, a], &[], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--strict"), "{}", stderr(&o));
    assert!(!stdout(&o).contains(a), "stopped before the good image");
}

#[test]
fn annotate_writes_labelled_copies() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = asl_model(dir.path());
    let imgs = images(&dir.path().join("imgs"));
    let out = dir.path().join("annotated");
    let o = cli(
        &[
            "infer",
            "-m",
            model.to_str().expect("path"),
            "--annotate",
            out.to_str().expect("path"),
            imgs[0].to_str().expect("path"),
            imgs[1].to_str().expect("path"),
        ],
        &[],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, src) in [("a.png", &imgs[0]), ("b.png", &imgs[1])] {
        let written = image::open(out.join(name))
            .expect("annotated image")
            .to_rgb8();
        let original = image::open(src).expect("original").to_rgb8();
        assert_eq!(written.dimensions(), original.dimensions());
        assert_ne!(
            written.get_pixel(2, 2),
            original.get_pixel(2, 2),
            "labels drawn"
        );
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = asl_model(dir.path());
    let imgs = images(&dir.path().join("imgs"));
    let (m, a) = (
        model.to_str().expect("path"),
        imgs[0].to_str().expect("path"),
    );
    if !cfg!(feature = "cuda") {
        let o = cli(&["infer", "-m", m, "--device", "cuda", a], &[], None);
        assert!(stderr(&o).contains("built without CUDA"), "{}", stderr(&o));
    }
    let o = cli(&["infer", "-m", m, "--threshold", "1.5", a], &[], None);
    assert!(stderr(&o).contains("--threshold"));
    let o = cli(&["infer", "-m", m, "--classes", "voc", a], &[], None);
    assert!(stderr(&o).contains("20 class names") && stderr(&o).contains("3 classes"));
    let o = cli(&["infer", "-m", m, "--input-size", "66", a], &[], None);
    assert!(stderr(&o).contains("multiple of 4"), "{}", stderr(&o));
    let o = cli(&["infer", "-m", "no-such-model", a], &[], None);
    assert!(stderr(&o).contains("unknown model"), "{}", stderr(&o));
    let o = cli(&["infer", "-m", a, a], &[], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("neither a PyTorch checkpoint nor a safetensors"));
}

/// The environment of a run against the hub at `endpoint` with its own cache.
fn hub_env<'a>(endpoint: &'a str, cache: &'a Path) -> Vec<(&'a str, &'a str)> {
    vec![
        ("HF_ENDPOINT", endpoint),
        ("HF_HUB_CACHE", cache.to_str().expect("path")),
        ("HF_TOKEN", ""),
    ]
}

#[test]
fn unpublished_registry_names_say_how_to_publish_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let imgs = images(&dir.path().join("imgs"));
    let hub = TestHub::start("asl-rs/tresnet_l-coco", &[], Behaviour::Normal);
    let endpoint = hub.endpoint.clone();
    let cache = dir.path().join("cache");
    let a = imgs[0].to_str().expect("path");
    let o = cli(
        &["infer", "-m", "tresnet_l-coco", a],
        &hub_env(&endpoint, &cache),
        None,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    for part in [
        "asl-rs/tresnet_l-coco",
        "asl-cli convert",
        "huggingface-cli upload",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    let mut env = hub_env(&endpoint, &cache);
    env.push(("HF_HUB_OFFLINE", "1"));
    let before = hub.request_count();
    let o = cli(&["infer", "-m", "tresnet_l-coco", a], &env, None);
    let err = stderr(&o);
    assert!(
        err.contains("offline") && err.contains("asl-rs/tresnet_l-coco"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");
    assert_eq!(hub.request_count(), before, "offline: no request");
}

#[test]
fn registry_names_and_hub_repos_resolve_through_the_hub() {
    let dir = tempfile::tempdir().expect("tmp");
    let imgs = images(&dir.path().join("imgs"));
    let a = imgs[0].to_str().expect("path");
    let cache = dir.path().join("cache");

    // a registry entry published under another organisation: the registry's settings (COCO
    // names, sigmoid) apply to a timm-format file without metadata
    let hub = TestHub::start(
        "me/tresnet_m-coco",
        &[("model.safetensors", ServedFile::lfs(timm_bytes(80)))],
        Behaviour::Normal,
    );
    let endpoint = hub.endpoint.clone();
    let mut env = hub_env(&endpoint, &cache);
    env.push(("ASL_RS_HUB_ORG", "me"));
    let args = [
        "infer",
        "-m",
        "tresnet_m-coco",
        "--input-size",
        "64",
        "--format",
        "json",
    ];
    let o = cli(&[&args[..], &["--threshold", "0", a]].concat(), &env, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let labels = json_lines(&o)[0]["labels"].clone();
    assert_eq!(labels.as_array().map(Vec::len), Some(80));
    let names: Vec<&str> = labels
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(names.contains(&"person") && names.contains(&"toothbrush"));
    drop(hub);
    // cached: works offline with the server gone
    env.push(("HF_HUB_OFFLINE", "1"));
    let o = cli(&[&args[..], &[a]].concat(), &env, None);
    assert!(o.status.success(), "{}", stderr(&o));

    // hf:ORG/REPO of a timm repo: config.json says ImageNet-1k, centre crop, softmax
    let config = r#"{"architecture": "tresnet_m", "num_classes": 1000, "pretrained_cfg":
        {"input_size": [3, 64, 64], "interpolation": "bilinear", "crop_pct": 0.875,
         "crop_mode": "center", "num_classes": 1000}}"#;
    let hub = TestHub::start(
        "timm-test/tresnet_m.x",
        &[
            ("model.safetensors", ServedFile::lfs(timm_bytes(1000))),
            ("config.json", ServedFile::git(config.as_bytes(), "abc123")),
        ],
        Behaviour::Normal,
    );
    let endpoint = hub.endpoint.clone();
    let o = cli(
        &[
            "infer",
            "-m",
            "hf:timm-test/tresnet_m.x",
            "--format",
            "json",
            "--all-scores",
            a,
        ],
        &hub_env(&endpoint, &cache),
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = &json_lines(&o)[0];
    let labels = line["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 5, "softmax models report the top 5");
    let scores: Vec<f64> = serde_json::from_value(line["scores"].clone()).expect("scores");
    assert_eq!(scores.len(), 1000);
    let sum: f64 = scores.iter().sum();
    assert!((sum - 1.0).abs() < 1e-3, "softmax sums to 1: {sum}");
    let top = labels[0]["index"].as_u64().expect("index") as usize;
    let names = asl_tresnet::pretrained::classes::builtin("imagenet-1k").expect("list");
    assert_eq!(labels[0]["name"], names[top]);
}
