//! The binary: help, unknown commands refused clearly, and `convert` end to end on a full-size
//! random tresnet_m in timm naming and on the small original-naming fixture.

use std::path::PathBuf;
use std::process::Command;

use asl_test_support::models::random_weights;
use asl_tresnet::pretrained::weights::{load_weights, SourceFormat};
use asl_tresnet::pretrained::ResizeMode;
use asl_tresnet::TResNetConfig;
use candle_core::Device;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asl-cli"))
        .args(args)
        .output()
        .expect("run asl-cli")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("asl-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn help_lists_the_commands() {
    let out = cli(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // the names listed under "Commands:", one per line (not words of the description)
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for cmd in [
        "infer", "validate", "train", "convert", "models", "bench", "demo",
    ] {
        assert!(listed.contains(&cmd), "help should list {cmd}: {listed:?}");
    }
    let out = cli(&["convert", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--arch",
        "--classes",
        "--input-size",
        "--threshold",
        "--resize",
        "--output",
    ] {
        assert!(text.contains(opt), "convert --help should mention {opt}");
    }
}

#[test]
fn unknown_commands_fail_clearly() {
    let out = cli(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no-such-command"));
}

#[test]
fn version() {
    let out = cli(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("asl-cli "));
}

#[test]
fn convert_timm_safetensors_with_class_file() {
    let dir = temp_dir("convert");
    // A full-size tresnet_m with 3 classes and random weights, saved as timm would.
    let tensors = random_weights(&TResNetConfig::tresnet_m(3));
    let input = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &input).expect("save");
    let classes = dir.join("classes.txt");
    std::fs::write(&classes, "red\ngreen\n\nblue\n").expect("classes");
    let output = dir.join("out.safetensors");
    let (i, o, c) = (
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        classes.to_str().unwrap(),
    );

    let out = cli(&["convert", i, "-o", o, "--classes", c, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["arch"], "tresnet_m");
    assert_eq!(report["num_classes"], 3);
    assert_eq!(report["input_size"], 224);
    assert_eq!(report["input_format"], "timm safetensors");
    assert_eq!(
        report["activation"], "sigmoid",
        "3 classes: not an ImageNet classifier"
    );
    let back = load_weights(&output, &Device::Cpu).expect("load converted");
    assert_eq!(back.format, SourceFormat::AslSafetensors);
    let meta = back.metadata.expect("metadata");
    assert_eq!(meta.class_names, ["red", "green", "blue"]);
    assert_eq!(meta.resize, ResizeMode::Crop { crop_pct: 0.875 });
    assert!(meta.source.contains("model.safetensors (timm safetensors)"));

    // Nothing is overwritten without --force.
    let out = cli(&["convert", i, "-o", o]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"));
    // Converting the converted file keeps its metadata and source, and converts nothing again.
    let again = dir.join("again.safetensors");
    let out = cli(&[
        "convert",
        o,
        "-o",
        again.to_str().unwrap(),
        "--threshold",
        "0.8",
        "--activation",
        "softmax",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta2 = load_weights(&again, &Device::Cpu)
        .unwrap()
        .metadata
        .unwrap();
    assert_eq!(meta2.class_names, meta.class_names);
    assert_eq!(meta2.source, meta.source);
    assert_eq!(meta2.threshold, 0.8);
    assert_eq!(
        meta2.activation,
        asl_tresnet::pretrained::Activation::Softmax
    );
    // Wrong class list length, wrong architecture.
    let out = cli(&["convert", i, "-o", o, "--force", "--classes", "coco"]);
    assert!(
        stderr(&out).contains("has 80 names but the model has 3 classes"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["convert", i, "-o", o, "--force", "--arch", "tresnet_l"]);
    let err = stderr(&out);
    assert!(
        err.contains("do not match tresnet_l") && err.contains("mis-shaped"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn convert_refuses_an_unknown_architecture_naming_keys() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../asl-tresnet/tests/fixtures/tresnet/small_basic.original.pth");
    let dir = temp_dir("refuse");
    let out_path = dir.join("x.safetensors");
    let out = cli(&[
        "convert",
        fixture.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("missing:") && err.contains("mis-shaped:"),
        "{err}"
    );
    assert!(!out_path.exists(), "nothing written on failure");
    let out = cli(&[
        "convert",
        "/nonexistent/file.pth",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(stderr(&out).contains("/nonexistent/file.pth"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_reports_images_per_second() {
    let out = cli(&[
        "bench",
        "--arch",
        "tresnet_m",
        "--input-size",
        "32",
        "--batch-size",
        "1",
        "--runs",
        "1",
        "--num-classes",
        "2",
        "--format",
        "json",
        "--profile",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v["images_per_s"].as_f64().is_some_and(|x| x > 0.0));
    assert_eq!(v["arch"], "tresnet_m");
    let profile = v["profile"].as_array().expect("profile rows");
    let ops: Vec<&str> = profile.iter().filter_map(|r| r["op"].as_str()).collect();
    for op in [
        "conv 3x3: gemm",
        "conv 1x1: gemm",
        "blur",
        "SE: gates",
        "head",
    ] {
        assert!(ops.contains(&op), "profile should time {op}: {ops:?}");
    }
    let share: f64 = profile.iter().filter_map(|r| r["share"].as_f64()).sum();
    assert!((share - 1.0).abs() < 1e-6, "shares sum to {share}");
    let out = cli(&["bench", "--arch", "resnet50"]);
    assert!(stderr(&out).contains("unknown architecture"));
    let out = cli(&["bench", "--input-size", "30", "--runs", "1"]);
    assert!(stderr(&out).contains("multiples of 4"), "{}", stderr(&out));
}
