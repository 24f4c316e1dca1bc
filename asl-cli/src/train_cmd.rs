//! `asl-cli train` and `asl-cli demo`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use asl_cli::augment::AugmentConfig;
use asl_cli::data::{self, Dataset, DatasetFormat, ReadOptions};
use asl_cli::train::{fit, TrainConfig, TrainOptions, TrainSummary};
use asl_core::AslConfig;
use clap::Args;

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
    /// Dataset format (default: detected).
    #[arg(long, value_parser = ["coco", "voc", "csv", "jsonl"])]
    format: Option<String>,
    /// COCO/VOC split of --data (default: train for COCO, trainval for VOC; --val-data is read
    /// as val for COCO, test for VOC).
    #[arg(long)]
    split: Option<String>,
    /// CSV/TSV: the separator between labels (default: space).
    #[arg(long)]
    label_sep: Option<char>,
    /// CSV/TSV/JSONL: image paths relative to this folder (default: the file's folder).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Skip bad rows and unreadable images (counted) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
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
    /// Batches summed into one optimiser step.
    #[arg(long, default_value_t = 1)]
    accumulate: usize,
    /// Maximum learning rate of the OneCycle schedule.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// L2 weight decay on weights (not biases or BatchNorm).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// asl (gamma_neg 4, gamma_pos 0, clip 0.05), bce, or focal (gamma 2); the gamma/clip
    /// options below override.
    #[arg(long, value_parser = ["asl", "bce", "focal"], default_value = "asl")]
    loss: String,
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
    #[arg(long, value_parser = ["auto", "f32", "bf16"], default_value = "auto")]
    precision: String,
    /// EMA of the weights and BatchNorm statistics: on or off.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    ema: String,
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
    /// Continue the run in this folder exactly where it stopped (same options required).
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_parser = ["cpu", "cuda"], default_value = "cpu")]
    device: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Skip batches whose loss is not finite (counted in the log) instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    /// Stop after this many optimiser steps (with a checkpoint; for quick trials).
    #[arg(long, hide = true)]
    max_steps: Option<usize>,
    /// Use only the local hub cache for --pretrained.
    #[arg(long)]
    offline: bool,
}

fn read(path: &std::path::Path, args: &TrainArgs, split: Option<String>) -> Result<Dataset> {
    let opts = ReadOptions {
        // clap allows only the names DatasetFormat parses
        format: args.format.as_deref().and_then(|f| f.parse().ok()),
        split,
        label_sep: args.label_sep,
        image_root: args.image_root.clone(),
        skip_bad: args.skip_bad,
        ..ReadOptions::default()
    };
    let ds = data::read_dataset(path, &opts)
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

/// Splits `ds` into (train, val) with `fraction` of it (at least one sample) validating.
fn split(ds: Dataset, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
    if !(0.0..1.0).contains(&fraction) || ds.samples.len() < 2 {
        bail!("--val-split must be in (0, 1) and the data must have at least 2 images");
    }
    let n = ds.samples.len();
    let n_val = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
    let mut idx: Vec<usize> = (0..n).collect();
    // a fixed permutation for the seed (independent of the training order)
    let mut state = seed ^ 0x5eed_5eed;
    for i in (1..n).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        idx.swap(i, (state >> 33) as usize % (i + 1));
    }
    let val_set: std::collections::HashSet<usize> = idx[..n_val].iter().copied().collect();
    let (mut train, mut val) = (ds.clone(), ds);
    train.samples = train
        .samples
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !val_set.contains(i))
        .map(|(_, s)| s)
        .collect();
    val.samples = val
        .samples
        .into_iter()
        .enumerate()
        .filter(|(i, _)| val_set.contains(i))
        .map(|(_, s)| s)
        .collect();
    Ok((train, val))
}

fn loss_config(args: &TrainArgs) -> AslConfig {
    let base = match args.loss.as_str() {
        "bce" => AslConfig::bce(),
        "focal" => AslConfig::focal(2.0),
        _ => AslConfig::paper(),
    };
    AslConfig {
        gamma_neg: args.gamma_neg.unwrap_or(base.gamma_neg),
        gamma_pos: args.gamma_pos.unwrap_or(base.gamma_pos),
        clip: args.clip.unwrap_or(base.clip),
        detach_focal_weight: args.detach_focal_weight.unwrap_or(base.detach_focal_weight),
        ..base
    }
}

fn print_summary(s: &TrainSummary, out: &std::path::Path) {
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
    // COCO and VOC roots: train on train / trainval, validate on val / test unless --split says
    let default_split = |p: &std::path::Path, train: bool| match data::detect_format(p) {
        Ok(DatasetFormat::Coco) => Some(if train { "train" } else { "val" }.to_string()),
        Ok(DatasetFormat::Voc) => Some(if train { "trainval" } else { "test" }.to_string()),
        _ => None,
    };
    let train_split = args
        .split
        .clone()
        .or_else(|| default_split(&args.data, true));
    let mut train = read(&args.data, args, train_split)?;
    let mut val = match &args.val_data {
        Some(p) => Some(read(p, args, default_split(p, false))?),
        None => None,
    };
    if val.is_none() {
        let (t, v) = split(train, args.val_split, args.seed)?;
        train = t;
        val = Some(v);
    }
    let mut val = val.context("no validation data")?;
    if val.classes != train.classes {
        val = val
            .align_to(&train.classes, args.skip_bad)
            .context("matching the validation labels to the training classes")?;
    }
    let device = crate::infer::device(&args.device)?;
    let autocast = crate::infer::autocast_for(&args.precision, &device)?;
    let pretrained = match &args.pretrained {
        None => {
            eprintln!(
                "asl-cli: no --pretrained: training from the reference's random initialisation. \
                 Pretraining matters (the paper starts from ImageNet weights; 21K pretraining adds \
                 1-2 mAP): consider --pretrained tresnet_m.miil_in21k"
            );
            None
        }
        Some(spec) => {
            let mut hub = asl_tresnet::hub::HubConfig::from_env();
            hub.offline |= args.offline;
            let source = asl_tresnet::pretrained::ModelSource::parse(spec)?;
            let (path, _) = asl_tresnet::pretrained::locate(&source, &hub)?;
            let loaded = asl_tresnet::weights::load_weights(&path, &candle_core::Device::Cpu)?;
            Some(loaded.tensors)
        }
    };
    let arch = match (&args.arch, &pretrained) {
        (Some(a), _) => a.clone(),
        (None, Some(t)) => asl_tresnet::weights::config_for_tensors(t, None)?.0,
        (None, None) => "tresnet_m".to_string(),
    };
    let cfg = TrainConfig {
        arch,
        image_size: args.image_size,
        epochs: args.epochs,
        batch_size: args.batch_size,
        accumulate: args.accumulate,
        lr: args.lr,
        weight_decay: args.weight_decay,
        loss: loss_config(args),
        adaptive: args
            .adaptive_gap
            .map(|target_gap| asl_core::adaptive::AdaptiveAsymmetry {
                target_gap,
                step: args.adaptive_step,
                gamma_max: args.adaptive_gamma_max,
            }),
        autocast,
        ema_decay: (args.ema == "on").then_some(args.ema_decay),
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
        skip_bad: args.skip_bad,
        ..TrainConfig::recipe("tresnet_m")
    };
    let mut opts = TrainOptions::new(out.clone());
    opts.resume = args.resume.is_some();
    opts.pretrained = pretrained;
    opts.device = device;
    opts.max_steps = args.max_steps;
    let stop = opts.stop.clone();
    // First Ctrl-C: finish the step, write a checkpoint, stop. (A handler may exist already
    // when the trainer runs twice in one process, as in `demo`: then the default applies.)
    let _ = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nasl-cli: stopping after this step (Ctrl-C again to quit at once)");
    });
    eprintln!(
        "asl-cli: training {} on {} images ({} classes), validating on {}; output in {}",
        cfg.arch,
        train.samples.len(),
        train.classes.len(),
        val.samples.len(),
        out.display()
    );
    let summary = fit(&cfg, &train, &val, &opts)?;
    print_summary(&summary, &out);
    Ok(())
}

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
    /// cpu, or cuda (needs a build with `--features cuda`; trains with bf16 autocast).
    #[arg(long, value_parser = ["cpu", "cuda"], default_value = "cpu")]
    device: String,
}

/// The small TResNet the demo trains from scratch.
pub const DEMO_ARCH: &str = "tresnet_custom:1-1-1-1:0.25";

/// `asl-cli demo`: the embedded digit-mosaic dataset, a small TResNet trained from scratch with
/// ASL and with BCE, both mAPs side by side, the ASL model tagging held-out images.
pub fn demo(args: &DemoArgs) -> Result<()> {
    use asl_cli::demo_data;
    let started = std::time::Instant::now();
    let device = crate::infer::device(&args.device)?;
    let autocast = crate::infer::autocast_for("auto", &device)?;
    let demo = demo_data::load()?;
    let data_dir = args.out.join("data");
    let write = |split: &demo_data::DemoSplit, name: &str| {
        demo_data::write_split(split, &data_dir.join(name))
            .with_context(|| format!("writing the demo data into {}", data_dir.display()))
    };
    let mut train_split = demo.train.clone();
    if let Some(n) = args.train_images {
        train_split.images.truncate(n.max(1));
        train_split.labels.truncate(n.max(1));
    }
    let (train_csv, val_csv, test_csv) = (
        write(&train_split, "train")?,
        write(&demo.val, "val")?,
        write(&demo.test, "test")?,
    );
    let classes: Vec<String> = demo_data::CLASSES.iter().map(|c| c.to_string()).collect();
    let read = |p: &std::path::Path| {
        data::read_dataset(
            p,
            &ReadOptions {
                classes: Some(classes.clone()),
                ..ReadOptions::default()
            },
        )
        .with_context(|| format!("reading {}", p.display()))
    };
    let (train, val) = (read(&train_csv)?, read(&val_csv)?);
    println!(
        "asl-cli demo: {} training and {} validation mosaics of handwritten digits ({} x {} px, \
         1-3 digits of 10 each: about 2 positives to 8 negatives per image)",
        train.samples.len(),
        val.samples.len(),
        demo_data::IMAGE_SIDE,
        demo_data::IMAGE_SIDE
    );
    let mut results = Vec::new();
    for (name, loss) in [("ASL", AslConfig::paper()), ("BCE", AslConfig::bce())] {
        let cfg = TrainConfig {
            arch: DEMO_ARCH.to_string(),
            image_size: demo_data::IMAGE_SIDE as usize,
            epochs: args.epochs,
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
        };
        let out = args.out.join(name.to_ascii_lowercase());
        eprintln!(
            "training {DEMO_ARCH} from scratch with {name} ({} epochs)...",
            cfg.epochs
        );
        let opts = TrainOptions {
            device: device.clone(),
            ..TrainOptions::new(&out)
        };
        let summary = fit(&cfg, &train, &val, &opts)?;
        results.push((name, summary));
    }
    println!(
        "\n{:<6} {:>10} {:>10} {:>8}  model",
        "loss", "best mAP", "last mAP", "from"
    );
    for (name, s) in &results {
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
    // the ASL model tags the held-out images, as `asl-cli infer` would
    let best = &results[0].1.best_path;
    let loaded = asl_tresnet::pretrained::load_model(
        &asl_tresnet::pretrained::ModelSource::File(best.clone()),
        &asl_tresnet::pretrained::Settings::default(),
        &asl_tresnet::hub::HubConfig::from_env(),
        &device,
    )?;
    let test = read(&test_csv)?;
    println!(
        "\nthe ASL model on held-out images (threshold {}):",
        loaded.metadata.threshold
    );
    let size = loaded.metadata.input_size;
    for s in &test.samples {
        let x = asl_cli::images::prepare(
            &s.image,
            size as u32,
            loaded.metadata.resize,
            asl_cli::images::DEFAULT_MAX_PIXELS,
        )?;
        let x = candle_core::Tensor::from_vec(x, (1, 3, size, size), &device)?;
        let p = candle_nn::ops::sigmoid(&loaded.model.forward_t(&x, false)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let predicted: Vec<String> = p
            .iter()
            .enumerate()
            .filter(|(_, &v)| v as f64 >= loaded.metadata.threshold)
            .map(|(i, v)| format!("{} ({v:.2})", classes[i]))
            .collect();
        let truth: Vec<&str> = s
            .labels
            .iter()
            .zip(&classes)
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
    println!(
        "\ndone in {:.0} s. Tag your own images with: asl-cli infer --model {} IMAGE...",
        started.elapsed().as_secs_f64(),
        best.display()
    );
    Ok(())
}
