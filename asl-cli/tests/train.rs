//! The trainer: it learns, resumes exactly (after an epoch and mid-epoch), stops on a
//! non-finite loss (or skips), writes checkpoints atomically; `asl-cli train` and `asl-cli demo`
//! end to end. Data: subsets of the embedded digit mosaics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use asl_cli::augment::AugmentConfig;
use asl_cli::data::{read_dataset, Dataset, ReadOptions};
use asl_cli::demo_data::{self, DemoSplit};
use asl_cli::train::{fit, TrainConfig, TrainOptions};
use asl_core::adaptive::AdaptiveAsymmetry;
use candle_core::{Device, Tensor};

const ARCH: &str = "tresnet_custom:1-1-1-1:0.25";

fn subset(split: &DemoSplit, n: usize) -> DemoSplit {
    DemoSplit {
        images: split.images[..n].to_vec(),
        labels: split.labels[..n].to_vec(),
    }
}

/// (train, val) datasets of `n_train` and `n_val` mosaics written under `dir`.
fn datasets(dir: &Path, n_train: usize, n_val: usize) -> (Dataset, Dataset) {
    let demo = demo_data::load().expect("embedded demo data");
    let classes: Vec<String> = demo_data::CLASSES.iter().map(|c| c.to_string()).collect();
    let read = |split: DemoSplit, name: &str| {
        let csv = demo_data::write_split(&split, &dir.join(name)).expect("write split");
        read_dataset(
            &csv,
            &ReadOptions {
                classes: Some(classes.clone()),
                ..ReadOptions::default()
            },
        )
        .expect("read split")
    };
    (
        read(subset(&demo.train, n_train), "train"),
        read(subset(&demo.val, n_val), "val"),
    )
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        image_size: 32,
        epochs,
        batch_size: 16,
        lr: 4e-3,
        ema_decay: Some(0.99),
        ema_warmup: true,
        augment: AugmentConfig::none(),
        seed: 7,
        ..TrainConfig::recipe(ARCH)
    }
}

fn quiet(out: &Path) -> TrainOptions {
    let mut o = TrainOptions::new(out);
    o.progress = false;
    o
}

fn model_tensors(ckpt: &Path) -> HashMap<String, Tensor> {
    let (t, _) =
        asl_tresnet::weights::load_tensors_with_header(ckpt, &Device::Cpu).expect("checkpoint");
    t
}

fn assert_same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (k, ta) in a {
        let tb = &b[k];
        let (va, vb) = (
            ta.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("a"),
            tb.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("b"),
        );
        assert!(va == vb, "{k} differs");
    }
}

#[test]
fn a_short_run_learns() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 480, 120);
    let s = fit(&config(4), &train, &val, &quiet(&dir.path().join("run"))).expect("training");
    assert_eq!(s.epochs.len(), 4);
    let (first, last) = (&s.epochs[0], &s.epochs[3]);
    assert!(
        last.train_loss < first.train_loss,
        "loss falls: {:?}",
        s.epochs
    );
    // chance level is the positive rate (about 16%)
    assert!(
        s.best_map > 30.0,
        "mAP well above chance (~16%): {:?}",
        s.epochs
    );
    for f in [
        "best.safetensors",
        "checkpoint.safetensors",
        "metrics.csv",
        "loss.png",
        "map.png",
        "lr.png",
    ] {
        assert!(dir.path().join("run").join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(dir.path().join("run/metrics.csv")).expect("metrics");
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.starts_with("epoch,steps,train_loss,val_map,val_map_ema"));
}

#[test]
fn resuming_gives_the_same_weights() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 64, 32);
    // 4 steps per epoch; adaptive asymmetry makes gamma_neg part of the state to restore
    let cfg = TrainConfig {
        adaptive: Some(AdaptiveAsymmetry {
            target_gap: 0.0,
            step: 1.0,
            gamma_max: 8.0,
        }),
        ..config(2)
    };
    let whole = dir.path().join("whole");
    let full = fit(&cfg, &train, &val, &quiet(&whole)).expect("two epochs");
    assert_ne!(
        full.epochs[1].gamma_neg, cfg.loss.gamma_neg,
        "gamma_neg adapts"
    );
    for stop_at in [4, 6] {
        // stop after one epoch, and in the middle of the second; then resume
        let parts = dir.path().join(format!("parts{stop_at}"));
        let mut first = quiet(&parts);
        first.max_steps = Some(stop_at);
        let s = fit(&cfg, &train, &val, &first).expect("first part");
        assert!(s.interrupted);
        let mut rest = quiet(&parts);
        rest.resume = true;
        let s = fit(&cfg, &train, &val, &rest).expect("resumed");
        assert!(!s.interrupted && s.epochs.len() == 2);
        assert_eq!(s.epochs[1].gamma_neg, full.epochs[1].gamma_neg);
        assert_eq!(s.epochs[1].prob_gap, full.epochs[1].prob_gap);
        assert_same(
            &model_tensors(&whole.join("checkpoint.safetensors")),
            &model_tensors(&parts.join("checkpoint.safetensors")),
        );
    }
    // other settings are refused
    let mut other = quiet(&whole);
    other.resume = true;
    let e = fit(&TrainConfig { lr: 1.0, ..cfg }, &train, &val, &other).expect_err("other lr");
    assert!(e.to_string().contains("other training settings"), "{e}");
}

#[test]
fn adaptive_asymmetry_steers_gamma_neg_toward_the_target_gap() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 64, 16);
    let run = |target_gap: f64, name: &str| {
        let cfg = TrainConfig {
            adaptive: Some(AdaptiveAsymmetry {
                target_gap,
                step: 0.5,
                gamma_max: 6.0,
            }),
            ..config(2)
        };
        let s = fit(&cfg, &train, &val, &quiet(&dir.path().join(name))).expect("training");
        let csv = std::fs::read_to_string(dir.path().join(name).join("metrics.csv")).expect("csv");
        assert!(csv
            .lines()
            .next()
            .unwrap_or("")
            .ends_with("gamma_neg,prob_gap"));
        s.epochs
            .iter()
            .map(|e| (e.gamma_neg, e.prob_gap.expect("a gap")))
            .collect::<Vec<_>>()
    };
    // a target above any reachable gap raises gamma_neg every step; one below lowers it
    let up = run(0.99, "up");
    assert!(up[0].0 > 4.0 && up[1].0 > up[0].0, "{up:?}");
    let down = run(-0.99, "down");
    assert!(down[0].0 < 4.0 && down[1].0 < down[0].0, "{down:?}");
    assert!(down.iter().all(|(g, _)| *g >= 0.0), "{down:?}");
    // the gap is a difference of two mean probabilities
    assert!(up.iter().chain(&down).all(|(_, p)| p.abs() <= 1.0));
}

#[test]
fn mixed_precision_training_keeps_f32_weights() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 32, 16);
    // f16 stands in for bf16 on the CPU (candle's CPU matrix product has no bf16)
    let cfg = TrainConfig {
        autocast: Some(candle_core::DType::F16),
        ..config(1)
    };
    let out = dir.path().join("f16");
    let s = fit(&cfg, &train, &val, &quiet(&out)).expect("f16 autocast training");
    assert!(s.epochs[0].train_loss.is_finite() && s.best_map.is_finite());
    let t = model_tensors(&out.join("checkpoint.safetensors"));
    assert!(t.values().all(|t| t.dtype() == candle_core::DType::F32));
    let cfg = TrainConfig {
        autocast: Some(candle_core::DType::BF16),
        ..config(1)
    };
    let e = fit(&cfg, &train, &val, &quiet(&dir.path().join("bf16"))).expect_err("bf16 on CPU");
    assert!(format!("{e:#}").contains("CUDA"), "{e:#}");
}

#[test]
fn a_non_finite_loss_stops_the_run_or_is_skipped() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 64, 16);
    let cfg = TrainConfig {
        lr: 1e38,
        ema_decay: None,
        ..config(1)
    };
    let e = fit(&cfg, &train, &val, &quiet(&dir.path().join("a"))).expect_err("diverges");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("non-finite loss") && msg.contains("batch"),
        "{msg}"
    );
    assert!(msg.contains("--skip-nonfinite"), "{msg}");
    let cfg = TrainConfig {
        skip_nonfinite: true,
        ..cfg
    };
    // every batch after the first step is non-finite: all are skipped, and validation then
    // says the weights diverged, with the count
    let e = fit(&cfg, &train, &val, &quiet(&dir.path().join("b"))).expect_err("diverged");
    let msg = format!("{e:#}");
    assert!(msg.contains("diverged"), "{msg}");
    assert!(msg.contains("3 batches skipped"), "{msg}");
}

#[test]
fn checkpoints_are_written_atomically() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ckpt.safetensors");
    let t = HashMap::from([(
        "w".to_string(),
        Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).expect("t"),
    )]);
    asl_tresnet::weights::save_tensors_atomic(&path, &t, HashMap::new()).expect("save");
    let before = std::fs::read(&path).expect("read");
    // a write that cannot complete (the temporary name is taken by a directory) leaves the old
    // file as it was and no temporary behind
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::create_dir(&tmp).expect("block the temporary name");
    let t2 = HashMap::from([(
        "w".to_string(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).expect("t"),
    )]);
    assert!(asl_tresnet::weights::save_tensors_atomic(&path, &t2, HashMap::new()).is_err());
    assert_eq!(std::fs::read(&path).expect("read"), before);
    std::fs::remove_dir(&tmp).expect("unblock");
    asl_tresnet::weights::save_tensors_atomic(&path, &t2, HashMap::new()).expect("save");
    assert!(!tmp.exists());
    assert_ne!(std::fs::read(&path).expect("read"), before);
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

#[test]
fn accumulation_steps_the_tail_and_one_cycle_ends_at_its_final_rate() {
    let dir = tempfile::tempdir().expect("tmp");
    // 64 images in batches of 16: 4 micro-batches per epoch, accumulated by 3, so every epoch
    // ends with a tail of one micro-batch: 2 optimiser steps per epoch, 4 in all
    let (train, val) = datasets(dir.path(), 64, 16);
    let cfg = TrainConfig {
        accumulate: 3,
        ema_decay: None,
        ..config(2)
    };
    let s = fit(&cfg, &train, &val, &quiet(&dir.path().join("acc"))).expect("training");
    let steps: Vec<usize> = s.epochs.iter().map(|e| e.steps).collect();
    assert_eq!(steps, vec![2, 4], "the tail of every epoch is a step");
    let last = s.epochs.last().expect("an epoch").lr;
    let final_lr = cfg.lr / cfg.div_factor / cfg.final_div_factor;
    assert!(
        (last - final_lr).abs() <= 1e-12 * final_lr.max(1e-30),
        "OneCycle ends at its final rate: {last} vs {final_lr}"
    );
}

#[test]
fn resuming_after_skipped_batches_gives_the_same_weights() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 24, 16);
    // two of every three training images become unreadable after the dataset was read: with
    // batches of 2, many batches fail entirely and are skipped (--skip-bad)
    for (i, s) in train.samples.iter().enumerate() {
        if i % 3 != 0 {
            std::fs::write(&s.image, b"not an image").expect("corrupt");
        }
    }
    let cfg = TrainConfig {
        batch_size: 2,
        skip_bad: true,
        ..config(2)
    };
    let whole = dir.path().join("whole");
    fit(&cfg, &train, &val, &quiet(&whole)).expect("uninterrupted");
    for stop_at in [3, 9, 16] {
        let parts = dir.path().join(format!("parts{stop_at}"));
        let mut first = quiet(&parts);
        first.max_steps = Some(stop_at);
        assert!(
            fit(&cfg, &train, &val, &first)
                .expect("first part")
                .interrupted
        );
        let mut rest = quiet(&parts);
        rest.resume = true;
        fit(&cfg, &train, &val, &rest).expect("resumed");
        assert_same(
            &model_tensors(&whole.join("checkpoint.safetensors")),
            &model_tensors(&parts.join("checkpoint.safetensors")),
        );
    }
}

#[test]
fn a_finished_run_extends_to_more_epochs_and_a_changed_setting_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 32, 16);
    let out = dir.path().join("run");
    let s = fit(&config(1), &train, &val, &quiet(&out)).expect("one epoch");
    assert_eq!(s.epochs.len(), 1);
    let mut resume = quiet(&out);
    resume.resume = true;
    let s = fit(&config(2), &train, &val, &resume).expect("extended to two epochs");
    assert_eq!(s.epochs.len(), 2);
    assert!(!s.interrupted);
    let e = fit(
        &TrainConfig {
            weight_decay: 0.5,
            ..config(3)
        },
        &train,
        &val,
        &resume,
    )
    .expect_err("another weight decay");
    let msg = format!("{e:#}");
    assert!(msg.contains("other training settings"), "{msg}");
    assert!(msg.contains("weight_decay") && msg.contains("0.5"), "{msg}");
    let e = fit(&config(1), &train, &val, &resume).expect_err("fewer epochs than done");
    assert!(format!("{e:#}").contains("2 epochs"), "{e:#}");
}
