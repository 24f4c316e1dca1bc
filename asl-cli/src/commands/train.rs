//! `asl-cli train`: fine-tune a TResNet on a dataset, with progress, curves and Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use asl_core::adaptive::AdaptiveAsymmetry;
use asl_core::AslConfig;
use asl_tresnet::augment::AugmentConfig;
use asl_tresnet::data::{self, Dataset, DatasetFormat, FileDataset};
use asl_tresnet::pretrained::{load_backbone, Backbone, ModelSource};
use asl_tresnet::train::{Callback, TrainConfig, TrainOptions, TrainSummary, Trainer};
use clap::{Args, ValueEnum};

use crate::args::{DeviceArgs, HubArgs, Precision};
use crate::data_args::DataArgs;
use crate::plots::Curves;
use crate::progress::TrainProgress;

/// `--loss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossKind {
    /// gamma_neg 4, gamma_pos 0, clip 0.05
    Asl,
    Bce,
    /// gamma 2
    Focal,
}

/// `--ema`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Training data: a COCO root, a VOC root, a .csv/.tsv (image,labels) or a .jsonl file.
    #[arg(long)]
    data: PathBuf,
    /// Validation data in any of the same formats (default: --val-split of --data).
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Without --val-data: this fraction of --data (drawn with --seed) validates.
    #[arg(long, default_value_t = 0.1)]
    val_split: f64,
    #[command(flatten)]
    dataset: DataArgs,
    /// Architecture (default: the pretrained model's, else tresnet_m); also
    /// `tresnet_custom:L1-L2-L3-L4:WIDTH` for small models.
    #[arg(long)]
    arch: Option<String>,
    /// Start from these weights (a registry name, hf:ORG/REPO or a file); their classifier is
    /// replaced by a new one for the dataset's classes. Without it the model starts from the
    /// reference's random initialisation (pretraining matters: expect much lower mAP).
    #[arg(long)]
    pretrained: Option<String>,
    /// Square image side (squish resize).
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Images per forward pass (the paper: 128; use --accumulate to reach it on small memory).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Batches summed into one optimiser step (an epoch's last step takes what is left).
    #[arg(long, default_value_t = 1)]
    accumulate: usize,
    /// Maximum learning rate of the OneCycle schedule.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// L2 weight decay on weights (not biases or BatchNorm).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// The loss; the gamma/clip options below override its settings.
    #[arg(long, value_enum, default_value_t = LossKind::Asl)]
    loss: LossKind,
    #[arg(long)]
    gamma_neg: Option<f64>,
    #[arg(long)]
    gamma_pos: Option<f64>,
    #[arg(long)]
    clip: Option<f64>,
    /// Detach the focal weight from the graph (the reference's default for ASL): true or false.
    #[arg(long)]
    detach_focal_weight: Option<bool>,
    /// Adaptive asymmetry (paper section 2.7): after every step, move gamma_neg (from
    /// --gamma-neg) toward this target gap between the mean probability the model gives
    /// positives (p) and negatives (1 - p); 0 = equally sure of both. The gap and gamma_neg are
    /// logged per epoch in metrics.csv.
    #[arg(long, allow_hyphen_values = true)]
    adaptive_gap: Option<f64>,
    /// Adaptive asymmetry: change of gamma_neg per step per unit of gap error.
    #[arg(long, default_value_t = 0.01, requires = "adaptive_gap")]
    adaptive_step: f64,
    /// Adaptive asymmetry: the largest gamma_neg allowed.
    #[arg(long, default_value_t = 8.0, requires = "adaptive_gap")]
    adaptive_gamma_max: f64,
    /// Arithmetic of the convolutions and the classifier: f32, or bf16 autocast (CUDA only;
    /// weights, optimiser, BatchNorm and the loss stay f32). auto: bf16 on CUDA, f32 on the CPU.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    precision: Precision,
    /// EMA of the weights and BatchNorm statistics.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    ema: Switch,
    #[arg(long, default_value_t = 0.9997)]
    ema_decay: f64,
    /// Ramp the EMA decay up over the first steps (useful for short runs).
    #[arg(long)]
    ema_warmup: bool,
    /// No Cutout / RandAugment.
    #[arg(long)]
    no_augment: bool,
    /// Also flip images horizontally at random (not in the reference).
    #[arg(long)]
    hflip: bool,
    /// Output folder: checkpoint.safetensors, best.safetensors, metrics.csv, curves.
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this folder exactly where it stopped (same options required; a
    /// larger --epochs extends a finished run).
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Skip batches whose loss is not finite (counted in the log) instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    /// Stop after this many optimiser steps (with a checkpoint; for quick trials).
    #[arg(long, hide = true)]
    max_steps: Option<usize>,
    #[command(flatten)]
    hub: HubArgs,
}

/// Reads one dataset, saying how many bad rows `--skip-bad` dropped.
fn read(path: &Path, args: &TrainArgs, split: Option<String>) -> Result<FileDataset> {
    let ds = data::read_dataset(path, &args.dataset.read_options(split))
        .with_context(|| format!("reading the dataset {}", path.display()))?;
    if !ds.skipped.is_empty() {
        eprintln!(
            "asl-cli: skipped {} bad rows of {} (--skip-bad)",
            ds.skipped.len(),
            path.display()
        );
    }
    Ok(ds)
}

/// The training and validation sets over the training set's classes.
fn datasets(args: &TrainArgs) -> Result<(FileDataset, FileDataset)> {
    // COCO and VOC roots: train on train / trainval, validate on val / test unless --split says
    let default_split = |p: &Path, train: bool| match data::detect_format(p) {
        Ok(DatasetFormat::Coco) => Some(if train { "train" } else { "val" }.to_string()),
        Ok(DatasetFormat::Voc) => Some(if train { "trainval" } else { "test" }.to_string()),
        _ => None,
    };
    let split = args.dataset.split.clone();
    let train = read(
        &args.data,
        args,
        split.or_else(|| default_split(&args.data, true)),
    )?;
    let (train, val) = match &args.val_data {
        Some(p) => (train, read(p, args, default_split(p, false))?),
        None => {
            if !(0.0..1.0).contains(&args.val_split) || train.samples.len() < 2 {
                bail!("--val-split must be in (0, 1) and the data must have at least 2 images");
            }
            train.split(args.val_split, args.seed)?
        }
    };
    let val = if val.classes != train.classes {
        val.align_to(&train.classes, args.dataset.skip_bad)
            .context("matching the validation labels to the training classes")?
    } else {
        val
    };
    Ok((train, val))
}

fn loss_config(args: &TrainArgs) -> AslConfig {
    let base = match args.loss {
        LossKind::Bce => AslConfig::bce(),
        LossKind::Focal => AslConfig::focal(2.0),
        LossKind::Asl => AslConfig::paper(),
    };
    AslConfig {
        gamma_neg: args.gamma_neg.unwrap_or(base.gamma_neg),
        gamma_pos: args.gamma_pos.unwrap_or(base.gamma_pos),
        clip: args.clip.unwrap_or(base.clip),
        detach_focal_weight: args.detach_focal_weight.unwrap_or(base.detach_focal_weight),
        ..base
    }
}

/// The run's configuration from the flags (`arch`: resolved from `--arch` or the backbone).
fn train_config(
    args: &TrainArgs,
    arch: String,
    device: &candle_core::Device,
) -> Result<TrainConfig> {
    Ok(TrainConfig {
        arch,
        image_size: args.image_size,
        epochs: args.epochs,
        batch_size: args.batch_size,
        accumulate: args.accumulate,
        lr: args.lr,
        weight_decay: args.weight_decay,
        loss: loss_config(args),
        adaptive: args.adaptive_gap.map(|target_gap| AdaptiveAsymmetry {
            target_gap,
            step: args.adaptive_step,
            gamma_max: args.adaptive_gamma_max,
        }),
        autocast: args.precision.autocast(device)?,
        ema_decay: (args.ema == Switch::On).then_some(args.ema_decay),
        ema_warmup: args.ema_warmup,
        augment: if args.no_augment {
            AugmentConfig::none()
        } else {
            AugmentConfig {
                hflip: args.hflip,
                ..AugmentConfig::default()
            }
        },
        seed: args.seed,
        skip_nonfinite: args.skip_nonfinite,
        skip_bad: args.dataset.skip_bad,
        ..TrainConfig::recipe("tresnet_m")
    })
}

/// The backbone of `--pretrained`, or a warning that the run starts from scratch.
fn backbone(args: &TrainArgs) -> Result<Option<Backbone>> {
    let Some(spec) = &args.pretrained else {
        eprintln!(
            "asl-cli: no --pretrained: training from the reference's random initialisation. \
             Pretraining matters (the paper starts from ImageNet weights; 21K pretraining adds \
             1-2 mAP): consider --pretrained tresnet_m.miil_in21k"
        );
        return Ok(None);
    };
    Ok(Some(load_backbone(
        &ModelSource::parse(spec)?,
        &args.hub.config(),
    )?))
}

/// Ctrl-C: the first finishes the step, writes a checkpoint and stops; the second quits. (A
/// handler may exist already when the trainer runs twice in one process, as in `demo`: then the
/// default applies.)
pub fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nasl-cli: stopping after this step (Ctrl-C again to quit at once)");
    });
    stop
}

/// Trains `trainer` with the CLI's callbacks (progress, curves, Ctrl-C).
pub fn fit_with_progress(
    trainer: &mut Trainer,
    train: FileDataset,
    val: FileDataset,
    out: &Path,
    stop: Arc<AtomicBool>,
) -> Result<TrainSummary> {
    let mut progress = TrainProgress::new(stop);
    let mut curves = Curves::new(out);
    let train: Arc<dyn Dataset> = Arc::new(train);
    let val: Arc<dyn Dataset> = Arc::new(val);
    let callbacks: &mut [&mut dyn Callback] = &mut [&mut progress, &mut curves];
    Ok(trainer.fit(train, val, callbacks)?)
}

fn print_summary(s: &TrainSummary, out: &Path) {
    if s.interrupted {
        eprintln!(
            "asl-cli: stopped; the checkpoint is in {} (continue with --resume {})",
            out.display(),
            out.display()
        );
    }
    if s.best_map.is_finite() {
        println!(
            "best validation mAP {:.2} ({} model) -> {}",
            s.best_map,
            s.best_model,
            s.best_path.display()
        );
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let out = args
        .resume
        .clone()
        .or_else(|| args.out.clone())
        .context("--out is required")?;
    let (train, val) = datasets(args)?;
    let device = args.device.device()?;
    let backbone = backbone(args)?;
    let arch = match (&args.arch, &backbone) {
        (Some(a), _) => a.clone(),
        (None, Some(b)) => b.arch.clone(),
        (None, None) => "tresnet_m".to_string(),
    };
    let cfg = train_config(args, arch, &device)?;
    let opts = TrainOptions {
        device,
        max_steps: args.max_steps,
        ..TrainOptions::new(&out)
    };
    let classes = train.classes.clone();
    let mut trainer = if args.resume.is_some() {
        Trainer::resume(cfg, classes, opts)?
    } else {
        let mut t = Trainer::new(cfg, classes, opts)?;
        if let Some(b) = &backbone {
            t.load_backbone(b)?;
        }
        t
    };
    eprintln!(
        "asl-cli: training {} on {} images ({} classes), validating on {}; output in {}",
        trainer.config().arch,
        train.samples.len(),
        train.classes.len(),
        val.samples.len(),
        out.display()
    );
    let summary = fit_with_progress(&mut trainer, train, val, &out, stop_on_ctrl_c())?;
    print_summary(&summary, &out);
    Ok(())
}
