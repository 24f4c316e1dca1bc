//! `asl-cli`: multi-label image classification with ASL and TResNet, from the command line.
//! Argument parsing, printing and charts only; the work is done by `asl-tresnet` and `asl-core`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod args;
mod commands;
mod data_args;
mod plots;
mod progress;

use commands::{bench, convert, demo, infer, models, train, validate};

/// Writes a file atomically, naming it in the error.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    asl_tresnet::write_atomic(path, |w| w.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

#[derive(Parser)]
#[command(
    name = "asl-cli",
    version,
    about = "Multi-label image classification with the Asymmetric Loss (ASL) and TResNet",
    long_about = "Multi-label image classification with the Asymmetric Loss (ASL) and TResNet.\n\n\
                  Start with the demo (no network needed), then label, evaluate and fine-tune \
                  on your own images.\n\n\
                  Example: asl-cli infer --model tresnet_l-coco photo.jpg"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a TResNet checkpoint (the ASL paper's original .pth, or timm safetensors) to an
    /// asl-rs safetensors file: timm naming plus metadata (architecture, classes, input size,
    /// resize mode, threshold, source).
    Convert(convert::ConvertArgs),
    /// Label images with a pretrained or fine-tuned model: a registry name (see `models`), a
    /// local file or a hub repo. Example: asl-cli infer --model tresnet_l-coco photo.jpg
    Infer(infer::InferArgs),
    /// Evaluate a model on a labelled dataset (MS-COCO, Pascal VOC, CSV/TSV, JSON Lines): mAP as
    /// the paper computes it, macro mAP, CP/CR/CF1/OP/OR/OF1 at a threshold; per-class table,
    /// JSON report, plots, raw scores, per-class threshold calibration.
    Validate(validate::ValidateArgs),
    /// Fine-tune a TResNet with ASL on your own multi-label data (the paper's recipe: Adam,
    /// OneCycle, EMA, Cutout + RandAugment), resumable; writes best.safetensors for infer.
    Train(train::TrainArgs),
    /// List the pretrained registry: every name `--model` accepts, with its dataset, classes,
    /// input size, reported accuracy, hub repo and whether that repo is public today.
    Models(models::ModelsArgs),
    /// Measure the inference path's speed on this machine (random weights, eval, fp32): images
    /// per second, warm-up excluded, median of several runs.
    Bench(bench::BenchArgs),
    /// The main job on an embedded default, no network needed: train a small TResNet from
    /// scratch on bundled handwritten-digit mosaics with ASL and with BCE, compare their mAP,
    /// and tag held-out images with the ASL model (a few minutes on 2 cores).
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Bench(a) => a.threads,
        Command::Train(a) => a.workers,
        Command::Demo(a) => a.workers,
        _ => None,
    };
    if let Some(t) = threads {
        // Before any thread pool exists: candle's gemm and our kernels read it once.
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
    }
    let result = match &cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Models(args) => models::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Train(args) => train::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Infer(args) => match infer::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asl-cli: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
