//! Fine-tunes on in-memory digit mosaics; a callback stops at 90 mAP. Args: OUT EPOCHS IMAGES
use asl_tresnet::augment::AugmentConfig;
use asl_tresnet::data::{demo, Dataset};
use asl_tresnet::train::{Event, Flow, TrainConfig, TrainOptions, Trainer};
use std::sync::Arc;

fn main() -> asl_tresnet::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let out = args.get(1).map_or("finetune-run", String::as_str);
    let (epochs, images) = (arg(2, 3), arg(3, 2000));
    let mut digits = demo::load()?;
    digits.train.truncate(images);
    let (train, val) = (digits.train.to_dataset()?, digits.val.to_dataset()?);
    let cfg = TrainConfig {
        image_size: 32,
        epochs,
        batch_size: 32,
        lr: 4e-3,
        ema_warmup: true,
        augment: AugmentConfig::none(),
        ..TrainConfig::recipe("tresnet_custom:1-1-1-1:0.25")
    };
    let mut trainer = Trainer::new(cfg, train.classes().to_vec(), TrainOptions::new(out))?;
    let mut report = |event: &Event<'_>| -> asl_tresnet::Result<Flow> {
        if let Event::EpochEnded(history) = event {
            let e = &history[history.len() - 1];
            let (n, loss, map) = (e.epoch, e.train_loss, e.val_map);
            println!("epoch {n}: loss {loss:.3}, mAP {map:.2}");
            if map > 90.0 {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    };
    let summary = trainer.fit(Arc::new(train), Arc::new(val), &mut [&mut report])?;
    let (map, path) = (summary.best_map, summary.best_path.display());
    println!("best mAP {map:.2}: {path}");
    Ok(())
}
