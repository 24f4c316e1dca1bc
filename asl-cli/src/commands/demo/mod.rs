//! `asl-cli demo`: the embedded digit-mosaic dataset, a small TResNet trained from scratch with
//! ASL and with BCE, both mAPs side by side, the ASL model tagging held-out images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use asl_core::AslConfig;
use asl_tresnet::augment::AugmentConfig;
use asl_tresnet::data::demo as data;
use asl_tresnet::data::{read_dataset, FileDataset, ReadOptions};
use asl_tresnet::images::Preprocess;
use asl_tresnet::pretrained::{load_model, CfgOverrides, HubConfig, ModelSource};
use asl_tresnet::train::{TrainConfig, TrainOptions, TrainSummary, Trainer};
use clap::Args;

use super::train::{fit_with_progress, stop_on_ctrl_c};
use crate::args::{DeviceArgs, Precision};

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the demo's data, models, metrics and curves.
    #[arg(long, default_value = "asl-demo")]
    out: PathBuf,
    /// Epochs of each training run (6: about 3 minutes for both runs on 2 cores).
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    /// Train on only the first N training images (a quicker demo).
    #[arg(long)]
    train_images: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The small TResNet the demo trains from scratch.
pub const DEMO_ARCH: &str = "tresnet_custom:1-1-1-1:0.25";

/// The demo's splits written under `out/data` as CSV + PNG, read back as datasets.
struct Splits {
    train: FileDataset,
    val: FileDataset,
    test: FileDataset,
    classes: Vec<String>,
}

fn write_splits(args: &DemoArgs) -> Result<Splits> {
    let demo = data::load()?;
    let data_dir = args.out.join("data");
    let write = |split: &data::DemoSplit, name: &str| {
        data::write_split(split, &data_dir.join(name))
            .with_context(|| format!("writing the demo data into {}", data_dir.display()))
    };
    let mut train_split = demo.train.clone();
    if let Some(n) = args.train_images {
        train_split.truncate(n.max(1));
    }
    let classes: Vec<String> = data::CLASSES.iter().map(|c| c.to_string()).collect();
    let read = |p: &Path| {
        let opts = ReadOptions {
            classes: Some(classes.clone()),
            ..ReadOptions::default()
        };
        read_dataset(p, &opts).with_context(|| format!("reading {}", p.display()))
    };
    Ok(Splits {
        train: read(&write(&train_split, "train")?)?,
        val: read(&write(&demo.val, "val")?)?,
        test: read(&write(&demo.test, "test")?)?,
        classes,
    })
}

/// The demo's recipe for one loss.
fn demo_config(
    epochs: usize,
    loss: AslConfig,
    autocast: Option<candle_core::DType>,
) -> TrainConfig {
    TrainConfig {
        arch: DEMO_ARCH.to_string(),
        image_size: data::IMAGE_SIDE as usize,
        epochs,
        batch_size: 32,
        lr: 4e-3,
        loss,
        ema_decay: Some(0.99),
        ema_warmup: true,
        // digits: no flips; Cutout would erase whole digits and make the labels wrong
        augment: AugmentConfig::none(),
        seed: 0,
        autocast,
        ..TrainConfig::recipe(DEMO_ARCH)
    }
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let device = args.device.device()?;
    let autocast = Precision::Auto.autocast(&device)?;
    let splits = write_splits(args)?;
    println!(
        "asl-cli demo: {} training and {} validation mosaics of handwritten digits ({} x {} px, \
         1-3 digits of 10 each: about 2 positives to 8 negatives per image)",
        splits.train.samples.len(),
        splits.val.samples.len(),
        data::IMAGE_SIDE,
        data::IMAGE_SIDE
    );
    let stop = stop_on_ctrl_c();
    let mut results = Vec::new();
    for (name, loss) in [("ASL", AslConfig::paper()), ("BCE", AslConfig::bce())] {
        let cfg = demo_config(args.epochs, loss, autocast);
        let out = args.out.join(name.to_ascii_lowercase());
        eprintln!(
            "training {DEMO_ARCH} from scratch with {name} ({} epochs)...",
            cfg.epochs
        );
        let opts = TrainOptions {
            device: device.clone(),
            ..TrainOptions::new(&out)
        };
        let mut trainer = Trainer::new(cfg, splits.classes.clone(), opts)?;
        let (train, val) = (splits.train.clone(), splits.val.clone());
        let summary = fit_with_progress(&mut trainer, train, val, &out, stop.clone())?;
        results.push((name, summary));
    }
    print_results(&results);
    let best = &results[0].1.best_path;
    tag_held_out(best, &splits, &device)?;
    println!(
        "\ndone in {:.0} s. Tag your own images with: asl-cli infer --model {} IMAGE...",
        started.elapsed().as_secs_f64(),
        best.display()
    );
    Ok(())
}

fn print_results(results: &[(&str, TrainSummary)]) {
    println!(
        "\n{:<6} {:>10} {:>10} {:>8}  model",
        "loss", "best mAP", "last mAP", "from"
    );
    for (name, s) in results {
        let last = s.epochs.last().map_or(f64::NAN, |e| {
            e.val_map_ema.unwrap_or(e.val_map).max(e.val_map)
        });
        println!(
            "{name:<6} {:>10.2} {:>10.2} {:>8}  {}",
            s.best_map,
            last,
            s.best_model,
            s.best_path.display()
        );
    }
}

/// The ASL model tags the held-out images, as `asl-cli infer` would.
fn tag_held_out(best: &Path, splits: &Splits, device: &candle_core::Device) -> Result<()> {
    let loaded = load_model(
        &ModelSource::File(best.to_path_buf()),
        &CfgOverrides::default(),
        &HubConfig::from_env(),
        device,
    )?;
    println!(
        "\nthe ASL model on held-out images (threshold {}):",
        loaded.cfg.threshold
    );
    let prep = Preprocess::new(&loaded.cfg);
    let size = prep.size as usize;
    for s in &splits.test.samples {
        let x = candle_core::Tensor::from_vec(prep.load(&s.image)?, (1, 3, size, size), device)?;
        let p = &loaded.scores(&x)?[0];
        let predicted: Vec<String> = p
            .iter()
            .enumerate()
            .filter(|(_, &v)| v as f64 >= loaded.cfg.threshold)
            .map(|(i, v)| format!("{} ({v:.2})", splits.classes[i]))
            .collect();
        let truth: Vec<&str> = s
            .labels
            .iter()
            .zip(&splits.classes)
            .filter(|(&l, _)| l == 1)
            .map(|(_, c)| c.as_str())
            .collect();
        println!(
            "  {:<14} digits {:<8} predicted: {}",
            s.image
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default(),
            truth.join(" "),
            if predicted.is_empty() {
                "(none)".to_string()
            } else {
                predicted.join(", ")
            }
        );
    }
    Ok(())
}
