//! Fine-tune a TResNet with ASL from Rust: the paper's recipe in a few lines.
//!
//! cargo run --release -p asl-cli --example finetune -- train.csv val.csv [pretrained]
//!
//! `train.csv` / `val.csv`: `image,labels` (space-separated labels, image paths relative to the
//! file). `pretrained`: a registry name, `hf:ORG/REPO` or a weight file (default: none, i.e.
//! the reference's random initialisation).

use anyhow::{Context, Result};
use asl_cli::data::{read_dataset, ReadOptions};
use asl_cli::train::{fit, TrainConfig, TrainOptions};
use asl_tresnet::pretrained::{locate, ModelSource};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (train, val) = match args.as_slice() {
        [t, v, ..] => (t, v),
        _ => anyhow::bail!("usage: finetune TRAIN.csv VAL.csv [PRETRAINED]"),
    };
    let train = read_dataset(train.as_ref(), &ReadOptions::default())?;
    // the validation labels in the training set's class order
    let val =
        read_dataset(val.as_ref(), &ReadOptions::default())?.align_to(&train.classes, false)?;

    let mut opts = TrainOptions::new("runs/finetune");
    if let Some(spec) = args.get(2) {
        let hub = asl_tresnet::hub::HubConfig::from_env();
        let (path, _) = locate(&ModelSource::parse(spec)?, &hub)?;
        let weights = asl_tresnet::weights::load_weights(&path, &candle_core::Device::Cpu)?;
        opts.pretrained = Some(weights.tensors);
    }
    // the recipe: Adam + OneCycle, ASL (4, 0, 0.05), EMA, Cutout + RandAugment, squish 224
    let cfg = TrainConfig {
        epochs: 10,
        batch_size: 16,
        accumulate: 8, // 128 images per step, as the paper
        ..TrainConfig::recipe("tresnet_m")
    };
    let summary = fit(&cfg, &train, &val, &opts).context("training")?;
    for e in &summary.epochs {
        println!(
            "epoch {}: loss {:.3}, mAP {:.2}",
            e.epoch, e.train_loss, e.val_map
        );
    }
    println!(
        "best mAP {:.2} ({} model): {}",
        summary.best_map,
        summary.best_model,
        summary.best_path.display()
    );
    Ok(())
}
