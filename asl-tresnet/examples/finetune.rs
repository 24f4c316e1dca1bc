//! Fine-tunes a small TResNet on an in-memory dataset (the embedded digit mosaics) with a
//! callback of its own: one line per epoch, and an early stop at 90 mAP.
//! `cargo run --release -p asl-tresnet --example finetune -- [OUT] [EPOCHS] [IMAGES]`
use std::sync::Arc;

use asl_tresnet::augment::AugmentConfig;
use asl_tresnet::data::{demo, Dataset};
use asl_tresnet::train::{Event, Flow, TrainConfig, TrainOptions, Trainer};

fn main() -> asl_tresnet::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "finetune-run".into());
    let epochs = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let images = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let digits = demo::load()?;
    let mut train = digits.train.clone();
    train.images.truncate(images);
    train.labels.truncate(images);
    let (train, val) = (train.to_dataset()?, digits.val.to_dataset()?);
    let cfg = TrainConfig {
        image_size: 32,
        epochs,
        batch_size: 32,
        lr: 4e-3,
        ema_warmup: true,
        augment: AugmentConfig::none(),
        ..TrainConfig::recipe("tresnet_custom:1-1-1-1:0.25")
    };
    let mut trainer = Trainer::new(cfg, train.classes().to_vec(), TrainOptions::new(&out))?;
    let mut report = |event: &Event<'_>| -> asl_tresnet::Result<Flow> {
        let Event::EpochEnded(history) = event else {
            return Ok(Flow::Continue);
        };
        let e = &history[history.len() - 1];
        println!(
            "epoch {}: loss {:.3}, mAP {:.2}",
            e.epoch, e.train_loss, e.val_map
        );
        Ok(if e.val_map > 90.0 {
            Flow::Stop
        } else {
            Flow::Continue
        })
    };
    let summary = trainer.fit(Arc::new(train), Arc::new(val), &mut [&mut report])?;
    println!(
        "best mAP {:.2}: {}",
        summary.best_map,
        summary.best_path.display()
    );
    Ok(())
}
