//! `asl-cli train` and `asl-cli demo` end to end: a run, its curves, `infer` on its model,
//! resuming, refused settings. Data: subsets of the embedded digit mosaics.

use std::path::{Path, PathBuf};
use std::process::Command;

use asl_tresnet::data::demo::{self as demo_data, DemoSplit};

const ARCH: &str = "tresnet_custom:1-1-1-1:0.25";

fn subset(split: &DemoSplit, n: usize) -> DemoSplit {
    DemoSplit {
        images: split.images[..n].to_vec(),
        labels: split.labels[..n].to_vec(),
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_asl-cli"))
        .args(args)
        .output()
        .expect("run asl-cli")
}

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn train_and_demo_commands_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let demo = demo_data::load().expect("demo data");
    let train_csv =
        demo_data::write_split(&subset(&demo.train, 48), &dir.path().join("t")).expect("t");
    let val_csv = demo_data::write_split(&subset(&demo.val, 16), &dir.path().join("v")).expect("v");
    let out: PathBuf = dir.path().join("run");
    let p = |x: &Path| x.to_str().expect("path").to_string();
    let args = [
        "train",
        "--data",
        &p(&train_csv),
        "--val-data",
        &p(&val_csv),
        "--arch",
        ARCH,
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "0.004",
        "--no-augment",
        "--out",
        &p(&out),
    ];
    let o = cli(&args);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("best validation mAP"), "{stdout}");
    for f in ["loss.png", "map.png", "lr.png"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert!(
        stderr.contains("no --pretrained"),
        "warns about training from scratch: {stderr}"
    );
    let img = dir.path().join("t/00000.png");
    let o = cli(&[
        "infer",
        "--model",
        &p(&out.join("best.safetensors")),
        &p(&img),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    // the model (a custom architecture, named in its metadata) starts another run without
    // --arch, and converts again (its metadata updated)
    let best = p(&out.join("best.safetensors"));
    let mut again: Vec<&str> = args[..args.len() - 2].to_vec();
    again.retain(|a| *a != "--arch" && *a != ARCH);
    let second = p(&dir.path().join("second"));
    again.extend(["--pretrained", &best, "--out", &second]);
    let o = cli(&again);
    assert!(o.status.success(), "train --pretrained: {}", text(&o).1);
    let converted = p(&dir.path().join("converted.safetensors"));
    let o = cli(&["convert", &best, "-o", &converted, "--threshold", "0.3"]);
    assert!(o.status.success(), "convert: {}", text(&o).1);
    assert!(text(&o).0.contains(ARCH), "{}", text(&o).0);
    // the finished run resumes to nothing new; other options are refused
    let mut resume: Vec<&str> = args[..args.len() - 2].to_vec();
    let run = p(&out);
    resume.extend(["--resume", &run]);
    assert!(cli(&resume).status.success());
    let mut other = resume.clone();
    other.extend(["--weight-decay", "0.5"]);
    let (_, stderr) = text(&cli(&other));
    assert!(stderr.contains("other training settings"), "{stderr}");

    let demo_out = dir.path().join("demo");
    let o = cli(&[
        "demo",
        "--epochs",
        "1",
        "--train-images",
        "96",
        "--out",
        &p(&demo_out),
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    for part in ["ASL", "BCE", "best mAP", "held-out", "predicted"] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
    assert!(demo_out.join("asl/best.safetensors").exists());
}
