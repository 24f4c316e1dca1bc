//! `asl-cli`: multi-label image classification with ASL and TResNet, from the command line.
//! Argument parsing and user-facing output only; the work is done by the library crates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use asl_tresnet::pretrained::{describe, file_hints, Settings};
use asl_tresnet::registry::Activation;
use asl_tresnet::weights::{
    config_for_tensors, load_weights, save_safetensors, ModelMetadata, ResizeMode, SourceFormat,
};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};

mod infer;
mod train_cmd;
mod validate;

/// Writes a file atomically (see [`asl_cli::files::write_atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    asl_cli::files::write_atomic(path, |w| w.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

#[derive(Parser)]
#[command(
    name = "asl-cli",
    version,
    about = "Multi-label image classification with the Asymmetric Loss (ASL) and TResNet",
    long_about = "Multi-label image classification with the Asymmetric Loss (ASL) and TResNet.\n\n\
                  Start with `asl-cli demo` (no network needed), then `infer`, `validate` and \
                  `train` on your own images.\n\n\
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
    Convert(ConvertArgs),
    /// Label images with a pretrained or fine-tuned model: a registry name (see `models`), a
    /// local file or a hub repo. Example: asl-cli infer --model tresnet_l-coco photo.jpg
    Infer(infer::InferArgs),
    /// Evaluate a model on a labelled dataset (MS-COCO, Pascal VOC, CSV/TSV, JSON Lines): mAP as
    /// the paper computes it, macro mAP, CP/CR/CF1/OP/OR/OF1 at a threshold; per-class table,
    /// JSON report, plots, raw scores, per-class threshold calibration.
    Validate(validate::ValidateArgs),
    /// Fine-tune a TResNet with ASL on your own multi-label data (the paper's recipe: Adam,
    /// OneCycle, EMA, Cutout + RandAugment), resumable; writes best.safetensors for infer.
    Train(train_cmd::TrainArgs),
    /// List the pretrained registry: every name `--model` accepts, with its dataset, classes,
    /// input size, reported accuracy, hub repo and whether that repo is public today.
    Models(ModelsArgs),
    /// Measure the inference path's speed on this machine (random weights, eval, fp32): images
    /// per second, warm-up excluded, median of several runs.
    Bench(BenchArgs),
    /// The main job on an embedded default, no network needed: train a small TResNet from
    /// scratch on bundled handwritten-digit mosaics with ASL and with BCE, compare their mAP,
    /// and tag held-out images with the ASL model (a few minutes on 2 cores).
    Demo(train_cmd::DemoArgs),
}

#[derive(Args)]
struct ModelsArgs {
    /// Output format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    format: String,
}

#[derive(Args)]
struct BenchArgs {
    /// Architecture: tresnet_m, tresnet_l, tresnet_xl or tresnet_v2_l.
    #[arg(long, default_value = "tresnet_m")]
    arch: String,
    /// Square input side in pixels (a multiple of 4).
    #[arg(long, default_value_t = 224)]
    input_size: usize,
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Worker threads (default: all cores; sets RAYON_NUM_THREADS for candle and our kernels).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs after two warm-up runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Classes of the random classifier.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Output format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    format: String,
    /// Time a training step instead (forward in training mode, ASL, backward, Adam step).
    #[arg(long)]
    train: bool,
    /// Also time one more run layer type by layer type (convolution products, im2col, bias +
    /// activation, blur, SE, residual, pooling, head; with --train also each backward kind) and
    /// print where the time goes (CPU only).
    #[arg(long)]
    profile: bool,
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_parser = ["cpu", "cuda"], default_value = "cpu")]
    device: String,
    /// With --train: f32, or bf16 autocast of the convolutions and the classifier (CUDA only),
    /// as `asl-cli train --precision`. auto: bf16 on CUDA, f32 on the CPU. Inference runs the
    /// folded f32 model whatever this says.
    #[arg(long, value_parser = ["auto", "f32", "bf16"], default_value = "auto")]
    precision: String,
}

#[derive(Args)]
struct ConvertArgs {
    /// The checkpoint: an original ASL `.pth` (zip pickle; read without executing code), a timm
    /// `model.safetensors`, or an asl-rs file (its metadata is updated, nothing re-converted).
    input: PathBuf,
    /// Where to write the asl-rs safetensors file.
    #[arg(short, long)]
    output: PathBuf,
    /// Architecture: tresnet_m, tresnet_l, tresnet_xl or tresnet_v2_l. Default: inferred from
    /// the tensor names and shapes.
    #[arg(long)]
    arch: Option<String>,
    /// Class names: a text file (one name per line) or a built-in list: coco, voc, nus-wide.
    /// Default: the names stored in the checkpoint, else class_0..class_{K-1}.
    #[arg(long)]
    classes: Option<String>,
    /// Input size the model expects (square). Default: the input file's metadata, else 224
    /// for tresnet_m and 448 for the others (the ASL models' sizes).
    #[arg(long)]
    input_size: Option<usize>,
    /// Resize mode: `squish` (ASL multi-label models) or `crop` (timm ImageNet models,
    /// crop_pct 0.875). Default: squish for .pth, crop for timm safetensors.
    #[arg(long, value_parser = ["squish", "crop"])]
    resize: Option<String>,
    /// Default decision threshold on the scores (the ASL reference infers at 0.7).
    #[arg(long)]
    threshold: Option<f64>,
    /// How scores are read: sigmoid (multi-label, the ASL models) or softmax (single-label,
    /// timm's ImageNet models). Default: the input's metadata, else softmax for a timm file
    /// with ImageNet's 1000 or 11221 classes (which also get the ImageNet names), else sigmoid.
    #[arg(long, value_parser = ["sigmoid", "softmax"])]
    activation: Option<String>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn class_names(spec: &str, expected: usize) -> Result<Vec<String>> {
    let names = infer::class_list(spec)?;
    if names.len() != expected {
        bail!(
            "--classes {spec:?} has {} names but the model has {expected} classes",
            names.len()
        );
    }
    Ok(names)
}

fn convert(args: &ConvertArgs) -> Result<()> {
    if args.output.exists() && !args.force {
        bail!(
            "{} exists; pass --force to replace it",
            args.output.display()
        );
    }
    let loaded = load_weights(&args.input, &Device::Cpu)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let (arch, _) = config_for_tensors(&loaded.tensors, args.arch.as_deref())
        .with_context(|| format!("checking {}", args.input.display()))?;
    let k = asl_tresnet::weights::head_from_tensors(&loaded.tensors)?.0;
    let explicit = Settings {
        arch: args.arch.clone(),
        class_names: args
            .classes
            .as_deref()
            .map(|spec| class_names(spec, k))
            .transpose()?,
        input_size: args.input_size,
        resize: args.resize.as_deref().map(infer::resize_flag),
        threshold: args.threshold,
        activation: args.activation.as_deref().and_then(Activation::parse),
        class_thresholds: None,
    };
    // A paper checkpoint under its original name gets its registry entry's settings; otherwise
    // the model zoo's sizes (224 for tresnet_m, 448 for the others); timm files are centre-crop
    // models, and with ImageNet's 1000 or 11221 classes single-label (softmax) classifiers.
    let timm = loaded.format == SourceFormat::TimmSafetensors;
    let imagenet = timm && (k == 1000 || k == 11221);
    let fallback = Settings {
        input_size: Some(if arch == "tresnet_m" { 224 } else { 448 }),
        resize: timm.then_some(ResizeMode::Crop { crop_pct: 0.875 }),
        activation: imagenet.then_some(Activation::Softmax),
        class_names: if k == 1000 && timm {
            asl_tresnet::classes::builtin("imagenet-1k")
        } else if k == 11221 && timm {
            asl_tresnet::classes::builtin("imagenet-21k-p")
        } else {
            None
        },
        ..Settings::default()
    };
    let hints = file_hints(&args.input).or(fallback);
    let file_name = args
        .input
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let source = match loaded.format {
        SourceFormat::OriginalPth => {
            format!("{file_name} (original ASL .pth, InPlaceABN gammas converted)")
        }
        _ => format!("{file_name} (timm safetensors)"),
    };
    let (_, meta) = describe(&loaded, &explicit, &hints, &source)
        .with_context(|| format!("checking {}", args.input.display()))?;
    let tensors: std::collections::HashMap<_, _> = loaded
        .tensors
        .into_iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .collect();
    save_safetensors(&args.output, &tensors, &meta)
        .with_context(|| format!("writing {}", args.output.display()))?;
    report(args, &meta, loaded.format, tensors.len(), &args.output)
}

fn report(
    args: &ConvertArgs,
    meta: &ModelMetadata,
    format: SourceFormat,
    n: usize,
    out: &Path,
) -> Result<()> {
    let bytes = std::fs::metadata(out)?.len();
    let format = match format {
        SourceFormat::OriginalPth => "original ASL .pth",
        SourceFormat::TimmSafetensors => "timm safetensors",
        SourceFormat::AslSafetensors => "asl-rs safetensors (metadata updated)",
    };
    let resize = match meta.resize {
        ResizeMode::Squish => "squish".to_string(),
        ResizeMode::Crop { crop_pct } => format!("crop {crop_pct}"),
    };
    if args.json {
        let v = serde_json::json!({
            "input": args.input, "input_format": format, "output": out, "bytes": bytes,
            "tensors": n, "arch": meta.arch, "num_classes": meta.num_classes,
            "input_size": meta.input_size, "resize": resize, "threshold": meta.threshold,
            "activation": meta.activation.name(),
            "first_classes": meta.class_names.iter().take(5).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        let first: Vec<&str> = meta
            .class_names
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        println!(
            "wrote {} ({:.1} MB, {n} tensors)\n  from: {} ({format})\n  arch: {}, {} classes ({}{})\n  \
             input: {} px, resize {resize}, threshold {} on {} scores",
            out.display(),
            bytes as f64 / 1e6,
            args.input.display(),
            meta.arch,
            meta.num_classes,
            first.join(", "),
            if meta.num_classes > 5 { ", ..." } else { "" },
            meta.input_size,
            meta.threshold,
            meta.activation.name()
        );
    }
    Ok(())
}

fn bench(args: &BenchArgs) -> Result<()> {
    use candle_core::{DType, Tensor};
    let cfg =
        asl_tresnet::TResNetConfig::from_arch(&args.arch, args.num_classes).with_context(|| {
            format!(
                "unknown architecture {:?} (known: {})",
                args.arch,
                asl_tresnet::TResNetConfig::ARCHS.join(", ")
            )
        })?;
    if args.batch_size == 0 || args.runs == 0 {
        bail!("--batch-size and --runs must be at least 1");
    }
    let dev = infer::device(&args.device)?;
    if args.profile && !dev.is_cpu() {
        bail!("--profile times the CPU engines: use it with --device cpu");
    }
    let autocast = if args.train {
        infer::autocast_for(&args.precision, &dev)?
    } else {
        if args.precision == "bf16" {
            bail!("--precision bf16 is for --train (inference runs the folded f32 model)");
        }
        None
    };
    let vars = candle_nn::VarMap::new();
    let model = asl_tresnet::TResNet::new(
        &cfg,
        candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &dev),
    )?
    .with_autocast(autocast)?;
    let x = Tensor::rand(
        0f32,
        1.,
        (args.batch_size, 3, args.input_size, args.input_size),
        &dev,
    )?;
    asl_tresnet::TResNet::check_input(&x)?;
    // --train: one optimiser step of the training path (BatchNorm on batch statistics, ASL,
    // backward, Adam with weight decay), as `asl-cli train` runs it
    let train = if args.train {
        let params: Vec<(String, candle_core::Var, bool)> = {
            let data = vars
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
            data.iter()
                .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
                .map(|(n, v)| (n.clone(), v.clone(), v.as_tensor().rank() > 1))
                .collect()
        };
        let y = Tensor::rand(0f32, 1., (args.batch_size, args.num_classes), &dev)?
            .ge(0.8)?
            .to_dtype(DType::F32)?;
        let adam = asl_cli::train::Adam::new(params, 1e-4)?;
        Some((std::cell::RefCell::new(adam), y))
    } else {
        None
    };
    let model = if args.train {
        model
    } else {
        drop(vars);
        model.into_inference()?
    };
    let loss = asl_core::AsymmetricLoss::new(asl_core::AslConfig::paper());
    let run = || -> Result<f64> {
        let t = std::time::Instant::now();
        match &train {
            Some((adam, y)) => {
                let (_, _, grads) = model.train_step(&x, &|logits| loss.forward(logits, y))?;
                let mut adam = adam.borrow_mut();
                let g: Vec<Option<Tensor>> = adam.grads_for(&grads);
                adam.step(&g, 1e-4, 0.9)?;
                dev.synchronize()?; // CUDA runs asynchronously: wait for the step
            }
            None => {
                let y = model.forward_t(&x, false)?;
                y.to_vec2::<f32>()?; // wait for the result
            }
        }
        Ok(t.elapsed().as_secs_f64())
    };
    for _ in 0..2 {
        run()?;
    }
    let mut times = (0..args.runs)
        .map(|_| run())
        .collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let ips = args.batch_size as f64 / median;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    let precision = autocast.map_or("f32".to_string(), |dt| format!("{dt:?}").to_lowercase());
    let profile = if args.profile {
        let times = match &train {
            Some((_, y)) => {
                model
                    .train_step_profiled(&x, &|logits| loss.forward(logits, y))?
                    .3
            }
            None => model.forward_profiled(&x)?.1,
        };
        let total: f64 = times.iter().map(|(_, t)| t.as_secs_f64()).sum();
        let mut rows: Vec<(&str, f64)> = times.iter().map(|(k, t)| (*k, t.as_secs_f64())).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        Some((rows, total))
    } else {
        None
    };
    if args.format == "json" {
        let mut v = serde_json::json!({
            "arch": args.arch, "input_size": args.input_size, "batch_size": args.batch_size,
            "mode": if args.train { "train step" } else { "inference" },
            "device": args.device,
            "precision": precision,
            "threads": threads, "runs": args.runs, "median_s": median,
            "images_per_s": ips, "times_s": times,
        });
        if let Some((rows, total)) = &profile {
            v["profile"] = rows
                .iter()
                .map(|(k, t)| serde_json::json!({"op": k, "seconds": t, "share": t / total}))
                .collect();
        }
        println!("{v}");
    } else {
        println!(
            "{} @{} batch {} ({}, {}, {precision}): {:.2} images/s (median of {} runs: {:.1} ms; threads: {threads})",
            args.arch,
            args.input_size,
            args.batch_size,
            if args.train { "training step" } else { "inference" },
            args.device,
            ips,
            args.runs,
            median * 1e3
        );
        if let Some((rows, total)) = &profile {
            println!(
                "\nwhere the time goes (one more run, {:.1} ms):",
                total * 1e3
            );
            for (k, t) in rows {
                println!("  {k:<22} {:>8.2} ms {:>5.1}%", t * 1e3, 100.0 * t / total);
            }
        }
    }
    Ok(())
}

fn models(args: &ModelsArgs) -> Result<()> {
    use asl_tresnet::registry::REGISTRY;
    let resize = |r: ResizeMode| match r {
        ResizeMode::Squish => "squish".to_string(),
        ResizeMode::Crop { crop_pct } => format!("crop {crop_pct}"),
    };
    if args.format == "json" {
        let rows: Vec<_> = REGISTRY
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name, "arch": p.arch, "dataset": p.dataset,
                    "classes": p.classes, "num_classes": p.num_classes,
                    "input_size": p.input_size, "resize": resize(p.resize),
                    "activation": p.activation.name(), "threshold": p.threshold,
                    "reported": {"metric": p.reported.metric, "value": p.reported.value,
                                 "source": p.reported.source},
                    "repo": p.repo(), "file": p.file, "license": p.license,
                    "public": p.public, "original_file": p.original_file,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<32} {:<16} {:>7} {:>5} {:<10} {:>12}  {:<7} repo",
        "name", "dataset", "classes", "size", "resize", "reported", "public"
    );
    for p in REGISTRY {
        println!(
            "{:<32} {:<16} {:>7} {:>5} {:<10} {:>12}  {:<7} {}",
            p.name,
            p.dataset,
            p.num_classes,
            p.input_size,
            resize(p.resize),
            format!("{} {:.1}", p.reported.metric, p.reported.value),
            if p.public { "yes" } else { "no" },
            p.repo()
        );
    }
    println!(
        "\nRepos marked `no` do not exist on the hub yet: convert the paper's checkpoint with \
         `asl-cli convert` and upload it (see the README), or set {}=YOUR_ORG.",
        asl_tresnet::registry::ORG_ENV
    );
    Ok(())
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
        Command::Convert(args) => convert(args),
        Command::Bench(args) => bench(args),
        Command::Models(args) => models(args),
        Command::Validate(args) => validate::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::Demo(args) => train_cmd::demo(args),
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
