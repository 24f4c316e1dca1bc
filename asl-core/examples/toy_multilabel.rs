//! Trains a small MLP on synthetic multi-label data (few positives per sample, as in real
//! multi-label sets) with binary cross-entropy and with ASL, and reports the paper's mAP and the
//! threshold metrics on held-out data. No network, no files.
//!
//! `cargo run --release -p asl-core --example toy_multilabel`

use asl_core::{AslConfig, AsymmetricLoss, MetricAccumulator};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{linear, seq, Activation, Optimizer, VarBuilder, VarMap};

const FEATURES: usize = 32;
const CLASSES: usize = 20;

/// Inputs and multi-hot labels from a fixed random "teacher": a label is on when its score is in
/// the top few percent, so positives are rare.
fn data(n: usize, teacher: &Tensor, dev: &Device) -> Result<(Tensor, Tensor)> {
    let x = Tensor::randn(0f32, 1., (n, FEATURES), dev)?;
    let scores = x.matmul(teacher)?;
    let threshold = scores.flatten_all()?.to_vec1::<f32>()?;
    let mut sorted = threshold.clone();
    sorted.sort_by(f32::total_cmp);
    let cut = sorted[sorted.len() * 92 / 100];
    let y = scores.ge(cut)?.to_dtype(DType::F32)?;
    Ok((x, y))
}

/// Trains with one loss and prints its metrics; `threshold` is where CP/CR/F1 are measured
/// (ASL pushes probabilities up, so its customary threshold is higher: the reference uses 0.8).
fn train(
    name: &str,
    cfg: AslConfig,
    threshold: f64,
    train: &(Tensor, Tensor),
    val: &(Tensor, Tensor),
) -> Result<()> {
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
    let model = seq()
        .add(linear(FEATURES, 64, vb.pp("hidden"))?)
        .add(Activation::Relu)
        .add(linear(64, CLASSES, vb.pp("head"))?);
    let mut opt = candle_nn::AdamW::new_lr(vars.all_vars(), 3e-3)?;
    let loss = AsymmetricLoss::new(cfg);
    let batches = train.0.dim(0)? / 128;
    for _epoch in 0..15 {
        for b in 0..batches {
            let x = train.0.narrow(0, b * 128, 128)?;
            let y = train.1.narrow(0, b * 128, 128)?;
            opt.backward_step(&loss.forward(&model.forward(&x)?, &y)?)?;
        }
    }
    let mut metrics = MetricAccumulator::new(CLASSES);
    let probs = candle_nn::ops::sigmoid(&model.forward(&val.0)?)?;
    metrics.push(&probs, &val.1)?;
    let r = metrics.compute(threshold);
    let positives = val.1.sum(D::Minus1)?.mean_all()?.to_scalar::<f32>()?;
    println!(
        "{name:>5}: mAP {:.2}  at {threshold}: CP {:.1}  CR {:.1}  CF1 {:.1}  OF1 {:.1}  \
         ({} samples, {positives:.1} positives each)",
        r.map, r.cp, r.cr, r.cf1, r.of1, r.num_samples
    );
    Ok(())
}

/// Public so that a test can run the README's first command as a smoke test.
pub fn main() -> Result<()> {
    let dev = Device::Cpu;
    let teacher = Tensor::randn(0f32, 1., (FEATURES, CLASSES), &dev)?;
    let train_set = data(4096, &teacher, &dev)?;
    let val_set = data(2048, &teacher, &dev)?;
    train("BCE", AslConfig::bce(), 0.5, &train_set, &val_set)?;
    train("focal", AslConfig::focal(2.0), 0.5, &train_set, &val_set)?;
    train("ASL", AslConfig::paper(), 0.8, &train_set, &val_set)?;
    Ok(())
}
