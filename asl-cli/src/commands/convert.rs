//! `asl-cli convert`: a TResNet checkpoint to the project's safetensors format.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use asl_tresnet::pretrained::config::TIMM_CROP_PCT;
use asl_tresnet::pretrained::keys::head_from_tensors;
use asl_tresnet::pretrained::weights::{
    load_weights, save_safetensors, LoadedWeights, SourceFormat,
};
use asl_tresnet::pretrained::{
    classes, file_hints, resolve, Activation, CfgOverrides, PretrainedCfg, ResizeMode,
};
use candle_core::Device;
use clap::Args;

use crate::args::{check_new_file, class_list, ActivationArg, ResizeArg};

#[derive(Args)]
pub struct ConvertArgs {
    /// The checkpoint: an original ASL `.pth` (zip pickle; read without executing code), a timm
    /// `model.safetensors`, or an asl-rs file (its metadata is updated, nothing re-converted).
    input: PathBuf,
    /// Where to write the asl-rs safetensors file.
    #[arg(short, long)]
    output: PathBuf,
    /// Architecture: tresnet_m, tresnet_l, tresnet_xl or tresnet_v2_l. Default: the input's
    /// metadata, else inferred from the tensor names and shapes.
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
    #[arg(long, value_enum)]
    resize: Option<ResizeArg>,
    /// Default decision threshold on the scores (the ASL reference infers at 0.7).
    #[arg(long)]
    threshold: Option<f64>,
    /// How scores are read: sigmoid (multi-label, the ASL models) or softmax (single-label,
    /// timm's ImageNet models). Default: the input's metadata, else softmax for a timm file
    /// with ImageNet's 1000 or 11221 classes (which also get the ImageNet names), else sigmoid.
    #[arg(long, value_enum)]
    activation: Option<ActivationArg>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The class list of `--classes`, which must have `expected` names.
fn class_names(spec: &str, expected: usize) -> Result<Vec<String>> {
    let names = class_list(spec)?;
    if names.len() != expected {
        bail!(
            "--classes {spec:?} has {} names but the model has {expected} classes",
            names.len()
        );
    }
    Ok(names)
}

/// What the flags say.
fn explicit(args: &ConvertArgs, k: usize) -> Result<CfgOverrides> {
    Ok(CfgOverrides {
        arch: args.arch.clone(),
        class_names: args
            .classes
            .as_deref()
            .map(|spec| class_names(spec, k))
            .transpose()?,
        input_size: args.input_size,
        resize: args.resize.map(ResizeMode::from),
        threshold: args.threshold,
        activation: args.activation.map(Activation::from),
        ..CfgOverrides::default()
    })
}

/// What the file says when its metadata does not: a paper checkpoint under its original name
/// gets its registry entry's settings; otherwise the model zoo's sizes (224 for tresnet_m, 448
/// for the others); timm files are centre-crop models, and with ImageNet's 1000 or 11221
/// classes single-label (softmax) classifiers.
fn fallback(args: &ConvertArgs, loaded: &LoadedWeights, arch: &str, k: usize) -> CfgOverrides {
    let timm = loaded.format == SourceFormat::TimmSafetensors;
    let imagenet = timm && (k == 1000 || k == 11221);
    let fallback = CfgOverrides {
        input_size: Some(if arch == "tresnet_m" { 224 } else { 448 }),
        resize: timm.then_some(ResizeMode::Crop {
            crop_pct: TIMM_CROP_PCT,
        }),
        activation: imagenet.then_some(Activation::Softmax),
        class_names: match (timm, k) {
            (true, 1000) => classes::builtin("imagenet-1k"),
            (true, 11221) => classes::builtin("imagenet-21k-p"),
            _ => None,
        },
        ..CfgOverrides::default()
    };
    file_hints(&args.input).or(fallback)
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    check_new_file(&args.output, args.force)?;
    let loaded = load_weights(&args.input, &Device::Cpu)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let k = head_from_tensors(&loaded.tensors)?.0;
    let explicit = explicit(args, k)?;
    let checking = || format!("checking {}", args.input.display());
    // the architecture the flags or the file's metadata name, else inferred
    let arch_hint = explicit
        .arch
        .clone()
        .or_else(|| loaded.metadata.as_ref().map(|m| m.arch.clone()));
    let (arch, _) =
        asl_tresnet::pretrained::keys::config_for_tensors(&loaded.tensors, arch_hint.as_deref())
            .with_context(checking)?;
    let hints = fallback(args, &loaded, &arch, k);
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
    let (_, meta) = resolve(&loaded, &explicit, &hints, &source).with_context(checking)?;
    let format = loaded.format;
    let tensors: HashMap<_, _> = loaded
        .tensors
        .into_iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .collect();
    save_safetensors(&args.output, &tensors, &meta)
        .with_context(|| format!("writing {}", args.output.display()))?;
    report(args, &meta, format, tensors.len(), &args.output)
}

fn report(
    args: &ConvertArgs,
    meta: &PretrainedCfg,
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
    if args.json {
        let v = serde_json::json!({
            "input": args.input, "input_format": format, "output": out, "bytes": bytes,
            "tensors": n, "arch": meta.arch, "num_classes": meta.num_classes,
            "input_size": meta.input_size, "resize": meta.resize.to_string(),
            "threshold": meta.threshold, "activation": meta.activation.name(),
            "first_classes": meta.class_names.iter().take(5).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    let first: Vec<&str> = meta
        .class_names
        .iter()
        .take(5)
        .map(String::as_str)
        .collect();
    println!(
        "wrote {} ({:.1} MB, {n} tensors)\n  from: {} ({format})\n  arch: {}, {} classes ({}{})\n  \
         input: {} px, resize {}, threshold {} on {} scores",
        out.display(),
        bytes as f64 / 1e6,
        args.input.display(),
        meta.arch,
        meta.num_classes,
        first.join(", "),
        if meta.num_classes > 5 { ", ..." } else { "" },
        meta.input_size,
        meta.resize,
        meta.threshold,
        meta.activation.name()
    );
    Ok(())
}
