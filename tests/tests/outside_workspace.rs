//! asl-tresnet as a candle project meets it: a crate outside this workspace, with a path
//! dependency on asl-tresnet (and candle, which a candle project has), builds the crate's two
//! examples as its own programs, tags an image by model file and fine-tunes for one epoch on an
//! in-memory dataset. It builds into this workspace's target folder with this workspace's
//! lock file and dependency profile, so only the outside crate itself is compiled.

use std::path::{Path, PathBuf};
use std::process::Command;

use asl_test_support::models::{write_small_tagger, SMALL_TAGGER_CLASSES};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The outside crate: `tag` and `finetune` from asl-tresnet's examples, as binaries.
fn outside_crate(dir: &Path) {
    let root = workspace();
    let manifest = format!(
        r#"[package]
name = "outside"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
asl-tresnet = {{ path = {:?} }}
candle-core = "0.11.1"

# its own workspace, not this one's
[workspace]

[profile.dev.package."*"]
opt-level = 2
"#,
        root.join("asl-tresnet")
    );
    std::fs::create_dir_all(dir.join("src/bin")).expect("src/bin");
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock");
    for name in ["tag", "finetune"] {
        std::fs::copy(
            root.join(format!("asl-tresnet/examples/{name}.rs")),
            dir.join(format!("src/bin/{name}.rs")),
        )
        .expect("example source");
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_crate_outside_the_workspace_tags_and_fine_tunes_with_asl_tresnet() {
    let dir = tempfile::tempdir().expect("tmp");
    let krate = dir.path().join("outside");
    outside_crate(&krate);
    let target = workspace().join("target");
    run(Command::new(env!("CARGO"))
        .args(["build", "--bins", "--quiet"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", &target));
    let bin = |name: &str| target.join("debug").join(name);

    let model = write_small_tagger(dir.path());
    let image = dir.path().join("photo.png");
    image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 90]))
        .save(&image)
        .expect("image");
    let tags = run(Command::new(bin("tag")).arg(&model).arg(&image));
    for class in SMALL_TAGGER_CLASSES {
        assert!(tags.contains(class), "{tags}");
    }

    let run_dir = dir.path().join("run");
    let log = run(Command::new(bin("finetune"))
        .arg(&run_dir)
        .args(["1", "48"]));
    assert!(log.contains("epoch 1: loss"), "{log}");
    assert!(run_dir.join("best.safetensors").exists());
}

#[test]
fn without_default_features_asl_tresnet_has_no_image_http_or_hub_crates() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "asl-tresnet",
            "--no-default-features",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(workspace())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"asl-tresnet") && crates.contains(&"candle-core"),
        "{tree}"
    );
    for heavy in [
        "image",
        "png",
        "zune-jpeg",
        "gif",
        "tiff",
        "image-webp",
        "hf-hub",
        "ureq",
        "rustls",
        "http",
        "sha2",
        "roxmltree",
    ] {
        assert!(
            !crates.contains(&heavy),
            "{heavy} in the tree without default features"
        );
    }
    // and with them, the hub client and the decoders are there
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "asl-tresnet",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    for wanted in ["image", "hf-hub", "roxmltree"] {
        assert!(
            tree.lines().any(|l| l.starts_with(&format!("{wanted} "))),
            "{wanted}"
        );
    }
}
