//! The examples run as users run them: `tag` on a model file and an image, `finetune` for one
//! epoch on an in-memory dataset (small random model, no network). `cargo test` builds the
//! examples before it runs the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use asl_test_support::models::{write_small_tagger, SMALL_TAGGER_CLASSES};

/// The compiled example `name`, next to this test's binary (`target/<profile>/examples`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

#[test]
fn tag_labels_an_image_with_a_model_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = write_small_tagger(dir.path());
    let image = dir.path().join("photo.png");
    image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 90]))
        .save(&image)
        .expect("image");
    let out = Command::new(example("tag"))
        .arg(&model)
        .arg(&image)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run tag");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    // threshold 0: every class is a tag, highest first, with its score
    let line = stdout.lines().next().expect("a line");
    assert!(
        line.starts_with(&format!("{}: ", image.display())),
        "{line}"
    );
    for class in SMALL_TAGGER_CLASSES {
        assert!(line.contains(class), "{line}");
    }
    let bad = Command::new(example("tag"))
        .arg(&model)
        .arg(dir.path().join("missing.png"))
        .output()
        .expect("run tag");
    assert!(!bad.status.success(), "a missing image is an error");
}

#[test]
fn finetune_trains_one_epoch_on_an_in_memory_dataset() {
    let dir = tempfile::tempdir().expect("tmp");
    let out_dir = dir.path().join("run");
    let out = Command::new(example("finetune"))
        .arg(&out_dir)
        .args(["1", "64"])
        .output()
        .expect("run finetune");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("epoch 1: loss"),
        "the callback's line: {stdout}"
    );
    assert!(stdout.contains("best mAP"), "{stdout}");
    assert!(out_dir.join("best.safetensors").exists());
    assert!(out_dir.join("checkpoint.safetensors").exists());
}
