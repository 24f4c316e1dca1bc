//! The trainer: it learns, resumes exactly (after an epoch and mid-epoch, after skipped
//! batches), steps the accumulation tail, stops on a non-finite loss (or skips), writes
//! checkpoints atomically; trains on an in-memory dataset and reports to callbacks. Data:
//! subsets of the embedded digit mosaics, written as files.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use asl_core::adaptive::AdaptiveAsymmetry;
use asl_tresnet::augment::AugmentConfig;
use asl_tresnet::data::demo::{self as demo_data, DemoSplit};
use asl_tresnet::data::{read_dataset, FileDataset, ReadOptions};
use asl_tresnet::pretrained::weights::{load_tensors_with_header, save_tensors_atomic};
use asl_tresnet::train::{Event, Flow, TrainConfig, TrainOptions, TrainSummary, Trainer};
use candle_core::{Device, Tensor};

const ARCH: &str = "tresnet_custom:1-1-1-1:0.25";

fn subset(split: &DemoSplit, n: usize) -> DemoSplit {
    DemoSplit {
        images: split.images[..n].to_vec(),
        labels: split.labels[..n].to_vec(),
    }
}

/// (train, val) datasets of `n_train` and `n_val` mosaics written under `dir`.
fn datasets(dir: &Path, n_train: usize, n_val: usize) -> (FileDataset, FileDataset) {
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

/// A run's options: where, and whether it resumes or stops after some steps.
struct Run<'a> {
    out: &'a Path,
    resume: bool,
    max_steps: Option<usize>,
}

fn quiet(out: &Path) -> Run<'_> {
    Run {
        out,
        resume: false,
        max_steps: None,
    }
}

/// A whole run of `cfg` (or the rest of one, resumed), as `asl-cli train` does it.
fn fit(
    cfg: &TrainConfig,
    train: &FileDataset,
    val: &FileDataset,
    run: &Run,
) -> asl_tresnet::Result<TrainSummary> {
    let opts = TrainOptions {
        max_steps: run.max_steps,
        ..TrainOptions::new(run.out)
    };
    let classes = train.classes.clone();
    let mut trainer = match run.resume {
        true => Trainer::resume(cfg.clone(), classes, opts)?,
        false => Trainer::new(cfg.clone(), classes, opts)?,
    };
    trainer.fit(Arc::new(train.clone()), Arc::new(val.clone()), &mut [])
}

fn model_tensors(ckpt: &Path) -> HashMap<String, Tensor> {
    let (t, _) = load_tensors_with_header(ckpt, &Device::Cpu).expect("checkpoint");
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
    // (the curves, loss.png, map.png and lr.png, are the CLI's: asl-cli/tests/train.rs)
    for f in ["best.safetensors", "checkpoint.safetensors", "metrics.csv"] {
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
    save_tensors_atomic(&path, &t, HashMap::new()).expect("save");
    let before = std::fs::read(&path).expect("read");
    let entries = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // a write that cannot complete (a header safetensors refuses) leaves the old file as it was
    // and no temporary behind
    let huge = HashMap::from([("x".to_string(), "y".repeat(100_000_001))]);
    let t2 = HashMap::from([(
        "w".to_string(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).expect("t"),
    )]);
    assert!(save_tensors_atomic(&path, &t2, huge).is_err());
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert_eq!(entries(), vec!["ckpt.safetensors".to_string()]);
    // a write whose rename fails (a folder holds the name) removes its temporary file and
    // leaves the folder as it was
    let taken = dir.path().join("taken.safetensors");
    std::fs::create_dir(&taken).expect("folder");
    std::fs::write(taken.join("keep"), b"x").expect("keep");
    assert!(save_tensors_atomic(&taken, &t2, HashMap::new()).is_err());
    assert_eq!(std::fs::read(taken.join("keep")).expect("kept"), b"x");
    assert_eq!(
        entries(),
        vec![
            "ckpt.safetensors".to_string(),
            "taken.safetensors".to_string()
        ]
    );
    save_tensors_atomic(&path, &t2, HashMap::new()).expect("save");
    assert_eq!(entries().len(), 2, "no temporary left");
    assert_ne!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn callbacks_see_every_event_and_can_stop_the_run_resumably() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 48, 16);
    let cfg = config(1);
    let out = dir.path().join("run");
    let mut names: Vec<&'static str> = Vec::new();
    let mut record = |e: &Event<'_>| -> asl_tresnet::Result<Flow> {
        names.push(match e {
            Event::EpochStarted { images, .. } => {
                assert_eq!(*images, 48);
                "start"
            }
            Event::Batch { .. } => "batch",
            Event::Step { .. } => "step",
            Event::Validating { .. } => "validating",
            Event::BestModel { .. } => "best",
            Event::Checkpoint { .. } => "checkpoint",
            Event::EpochEnded(history) => {
                assert_eq!(history.len(), 1);
                "end"
            }
            _ => "other",
        });
        Ok(Flow::Continue)
    };
    let mut trainer =
        Trainer::new(cfg.clone(), train.classes.clone(), TrainOptions::new(&out)).expect("new");
    let (t, v) = (Arc::new(train.clone()), Arc::new(val.clone()));
    trainer
        .fit(t.clone(), v.clone(), &mut [&mut record])
        .expect("fit");
    // 48 images in batches of 16: three batches, each a step
    let want = [
        "start",
        "batch",
        "step",
        "batch",
        "step",
        "batch",
        "step",
        "validating",
        "best",
        "checkpoint",
        "end",
    ];
    assert_eq!(names, want);
    // a callback that stops after the first step: a checkpoint, and the run resumes to the
    // same weights as the uninterrupted one
    let stopped = dir.path().join("stopped");
    let mut stop = |e: &Event<'_>| -> asl_tresnet::Result<Flow> {
        Ok(match e {
            Event::Step { .. } => Flow::Stop,
            _ => Flow::Continue,
        })
    };
    let mut first = Trainer::new(
        cfg.clone(),
        train.classes.clone(),
        TrainOptions::new(&stopped),
    )
    .expect("new");
    let s = first
        .fit(t.clone(), v.clone(), &mut [&mut stop])
        .expect("stopped");
    assert!(s.interrupted && s.epochs.is_empty());
    assert_eq!(first.steps_done(), 1);
    let mut rest =
        Trainer::resume(cfg, train.classes.clone(), TrainOptions::new(&stopped)).expect("resume");
    let s = rest.fit(t, v, &mut []).expect("rest");
    assert!(!s.interrupted && s.epochs.len() == 1);
    assert_same(
        &model_tensors(&out.join("checkpoint.safetensors")),
        &model_tensors(&stopped.join("checkpoint.safetensors")),
    );
}

#[test]
fn an_in_memory_dataset_trains_like_the_files_it_came_from() {
    let dir = tempfile::tempdir().expect("tmp");
    let (train, val) = datasets(dir.path(), 32, 16);
    let demo = demo_data::load().expect("demo data");
    let memory = subset(&demo.train, 32).to_dataset().expect("in memory");
    let memory_val = subset(&demo.val, 16).to_dataset().expect("in memory");
    let cfg = config(1);
    let files = fit(&cfg, &train, &val, &quiet(&dir.path().join("files"))).expect("files");
    let opts = TrainOptions::new(dir.path().join("memory"));
    let mut trainer = Trainer::new(cfg, train.classes.clone(), opts).expect("new");
    let mem = trainer
        .fit(Arc::new(memory), Arc::new(memory_val), &mut [])
        .expect("memory");
    // the same pixels and labels in the same order: the same run, bit for bit
    assert_eq!(files.epochs[0].train_loss, mem.epochs[0].train_loss);
    assert_eq!(files.best_map, mem.best_map);
    assert_same(
        &model_tensors(&dir.path().join("files/checkpoint.safetensors")),
        &model_tensors(&dir.path().join("memory/checkpoint.safetensors")),
    );
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
