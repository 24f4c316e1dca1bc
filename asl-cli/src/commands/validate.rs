//! `asl-cli validate`: the paper's evaluation of a model on a labelled dataset.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use asl_core::{MetricAccumulator, MetricsReport};
use asl_tresnet::data::{self, FileDataset, ReadOptions};
use asl_tresnet::pretrained::weights::{load_weights, save_safetensors};
use asl_tresnet::pretrained::{load_model, ModelSource, PretrainedCfg};
use candle_core::{Device, Tensor};
use clap::Args;

use super::infer::csv_field;
use crate::args::{DeviceArgs, HubArgs, ImageLimitArgs, ModelCfgArgs};
use crate::data_args::{DataArgs, DifficultArg};
use crate::plots;
use crate::progress::progress_bar;

#[derive(Args)]
pub struct ValidateArgs {
    /// The model: a registry name, a local .safetensors or .pth, or hf:ORG/REPO[@REV][:FILE].
    /// Not needed with --scores.
    #[arg(short, long, required_unless_present = "scores")]
    model: Option<String>,
    /// The dataset: a COCO root (annotations/instances_{split}2014.json, {split}2014/), a VOC
    /// root (Annotations/, ImageSets/Main/, JPEGImages/), a .csv/.tsv (image,labels) or a
    /// .jsonl ({"image": ..., "labels": [...]}) file.
    #[arg(long, required_unless_present = "annotations")]
    data: Option<PathBuf>,
    #[command(flatten)]
    dataset: DataArgs,
    /// COCO: an explicit instances JSON instead of a root (with --images).
    #[arg(long, requires = "images")]
    annotations: Option<PathBuf>,
    /// COCO: the image folder of --annotations.
    #[arg(long)]
    images: Option<PathBuf>,
    /// COCO: keep images without annotations (as all-negative); the paper drops them.
    #[arg(long)]
    keep_empty: bool,
    /// VOC objects marked difficult: ignore (neither positive nor negative; default), positive
    /// or negative.
    #[arg(long, value_enum, default_value_t = DifficultArg::Ignore)]
    difficult: DifficultArg,
    /// Threshold of CP/CR/CF1/OP/OR/OF1 (the paper validates at 0.8).
    #[arg(long, default_value_t = 0.8)]
    threshold: f64,
    #[command(flatten)]
    model_cfg: ModelCfgArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Print the per-class table (AP, positives, precision, recall, F1).
    #[arg(long)]
    per_class: bool,
    /// Write the full report as JSON to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write plots into this folder: per-class AP bar chart, precision-recall curves (PNG).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Write the raw scores as CSV (image, then one column per class), to recompute metrics
    /// elsewhere or later with --scores.
    #[arg(long)]
    save_scores: Option<PathBuf>,
    /// Compute the metrics from a --save-scores file instead of running a model.
    #[arg(long, conflicts_with = "model")]
    scores: Option<PathBuf>,
    /// Pick per-class thresholds that maximise F1 on this data and report the metrics at them.
    #[arg(long)]
    calibrate: bool,
    /// With --calibrate: write a copy of the model with the thresholds in its metadata (infer
    /// then uses them).
    #[arg(long, requires = "calibrate")]
    write_model: Option<PathBuf>,
    /// Replace an existing --write-model file.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    limits: ImageLimitArgs,
}

fn read_options(args: &ValidateArgs) -> ReadOptions {
    ReadOptions {
        annotations: args.annotations.clone(),
        images: args.images.clone(),
        keep_empty: args.keep_empty,
        difficult: args.difficult.into(),
        max_pixels: args.limits.max_pixels,
        ..args.dataset.read_options(args.dataset.split.clone())
    }
}

/// The scores of the dataset's samples, from a model or from a scores file, with the class
/// names, in sample order; samples whose image failed to decode are dropped (their indices
/// returned).
struct Scored {
    classes: Vec<String>,
    /// Row-major `[kept samples, classes]`.
    scores: Vec<f32>,
    /// Indices into the dataset's samples, in order.
    kept: Vec<usize>,
    model_name: String,
    metadata: Option<(PretrainedCfg, PathBuf)>,
    images_per_s: Option<f64>,
}

fn run_model(args: &ValidateArgs, ds: &mut FileDataset, model: &str) -> Result<Scored> {
    let device = args.device.device()?;
    let explicit = args.model_cfg.overrides()?;
    let loaded = load_model(
        &ModelSource::parse(model)?,
        &explicit,
        &args.hub.config(),
        &device,
    )?;
    let meta = loaded.cfg.clone();
    let taken = std::mem::take(ds);
    *ds = taken
        .align_to(&meta.class_names, args.dataset.skip_bad)
        .context("matching the dataset's labels to the model's classes")?;
    let k = meta.num_classes;
    let size = meta.input_size;
    let progress = progress_bar(ds.samples.len() as u64);
    let start = Instant::now();
    let mut scores = Vec::with_capacity(ds.samples.len() * k);
    let mut kept = Vec::with_capacity(ds.samples.len());
    let paths: Vec<PathBuf> = ds.samples.iter().map(|s| s.image.clone()).collect();
    let loader = data::loader(
        paths,
        size as u32,
        meta.resize,
        args.batch_size,
        2,
        args.limits.max_pixels,
    );
    let mut failed = 0usize;
    for batch in loader {
        for (i, e) in &batch.failed {
            if !args.dataset.skip_bad {
                bail!(
                    "{} ({}): {e}; pass --skip-bad to skip unreadable images",
                    ds.samples[*i].origin,
                    ds.samples[*i].image.display()
                );
            }
            failed += 1;
            progress.suspend(|| eprintln!("asl-cli: skipped {}: {e}", ds.samples[*i].origin));
        }
        let n = batch.indices.len();
        if n > 0 {
            let x = Tensor::from_vec(batch.inputs, (n, 3, size, size), &device)?;
            for row in loaded.scores(&x)? {
                scores.extend_from_slice(&row);
            }
            kept.extend_from_slice(&batch.indices);
        }
        progress.inc((n + batch.failed.len()) as u64);
    }
    progress.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    if failed > 0 {
        eprintln!("asl-cli: {failed} images could not be decoded and were skipped");
    }
    Ok(Scored {
        classes: meta.class_names.clone(),
        scores,
        images_per_s: Some(kept.len() as f64 / seconds.max(1e-9)),
        kept,
        model_name: model.to_string(),
        metadata: Some((meta, loaded.path)),
    })
}

/// Reads a --save-scores file and matches its rows to the dataset's samples by image path.
fn read_scores(path: &Path, ds: &mut FileDataset, skip_bad: bool) -> Result<Scored> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading scores file {}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .with_context(|| format!("{} is empty", path.display()))?;
    let header = data::split_csv_line(header, ',')
        .map_err(|e| anyhow::anyhow!("{}:1: {e}", path.display()))?;
    if header.first().map(String::as_str) != Some("image") || header.len() < 2 {
        bail!(
            "{}:1: expected a header `image,<class>,...` as written by --save-scores",
            path.display()
        );
    }
    let classes: Vec<String> = header[1..].to_vec();
    let taken = std::mem::take(ds);
    *ds = taken
        .align_to(&classes, skip_bad)
        .context("matching the dataset's labels to the scores file's classes")?;
    let mut rows = std::collections::HashMap::new();
    for (i, line) in lines {
        let fields = data::split_csv_line(line, ',')
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        if fields.len() != classes.len() + 1 {
            bail!(
                "{}:{}: {} fields, expected {}",
                path.display(),
                i + 1,
                fields.len(),
                classes.len() + 1
            );
        }
        let values = fields[1..]
            .iter()
            .map(|f| f.trim().parse::<f32>())
            .collect::<std::result::Result<Vec<f32>, _>>()
            .with_context(|| format!("{}:{}: a score is not a number", path.display(), i + 1))?;
        rows.insert(fields[0].clone(), values);
    }
    let mut scores = Vec::with_capacity(ds.samples.len() * classes.len());
    let mut kept = Vec::with_capacity(ds.samples.len());
    for (i, s) in ds.samples.iter().enumerate() {
        match rows.get(&s.image.display().to_string()) {
            Some(v) => {
                scores.extend_from_slice(v);
                kept.push(i);
            }
            None if skip_bad => {}
            None => bail!(
                "{} has no scores for {} ({}); pass --skip-bad to evaluate the images it has",
                path.display(),
                s.image.display(),
                s.origin
            ),
        }
    }
    Ok(Scored {
        classes,
        scores,
        kept,
        model_name: format!("scores from {}", path.display()),
        metadata: None,
        images_per_s: None,
    })
}

fn csv_row(first: &str, rest: impl Iterator<Item = String>) -> String {
    let mut fields = vec![csv_field(first)];
    fields.extend(rest);
    fields.join(",")
}

fn save_scores(path: &Path, ds: &FileDataset, s: &Scored) -> Result<()> {
    let k = s.classes.len();
    let mut text = csv_row("image", s.classes.iter().map(|c| csv_field(c)));
    text.push('\n');
    for (row, &i) in s.scores.chunks_exact(k).zip(&s.kept) {
        text.push_str(&csv_row(
            &ds.samples[i].image.display().to_string(),
            row.iter().map(|v| v.to_string()),
        ));
        text.push('\n');
    }
    crate::write_file(path, text.as_bytes())
}

fn report_json(r: &MetricsReport, classes: &[String]) -> serde_json::Value {
    let num = |v: f64| {
        if v.is_finite() {
            serde_json::json!(v)
        } else {
            serde_json::Value::Null
        }
    };
    serde_json::json!({
        "num_images": r.num_samples,
        "num_classes": r.num_classes,
        "threshold": num(r.threshold),
        "map": r.map,
        "map_definition": "paper: mean AP over all classes, a class without positives counts as 0",
        "map_macro": r.map_macro,
        "map_macro_definition": "mean AP over the classes with at least one positive",
        "classes_with_positives": r.classes_with_positives,
        "cp": r.cp, "cr": r.cr,
        "cf1": r.cf1,
        "cf1_definition": "2 * CP * CR / (CP + CR)",
        "cf1_mean_of_f1": r.cf1_mean_of_f1,
        "op": r.op, "or": r.or, "of1": r.of1,
        "per_class": r.per_class.iter().zip(classes).map(|(m, name)| serde_json::json!({
            "name": name, "ap": m.ap, "positives": m.positives, "negatives": m.negatives,
            "threshold": num(m.threshold),
            "tp": m.true_positives, "fp": m.false_positives, "fn": m.false_negatives,
            "precision": m.precision, "recall": m.recall, "f1": m.f1,
        })).collect::<Vec<_>>(),
    })
}

fn print_summary(out: &mut impl Write, r: &MetricsReport, at: &str) -> Result<()> {
    writeln!(
        out,
        "mAP {:.2}  (paper definition: all {} classes; {} have positives)",
        r.map, r.num_classes, r.classes_with_positives
    )?;
    writeln!(
        out,
        "macro mAP {:.2}  (classes with positives only)",
        r.map_macro
    )?;
    writeln!(
        out,
        "{at}: CP {:.2}  CR {:.2}  CF1 {:.2}  (CF1 = 2 CP CR / (CP + CR); mean of per-class F1: {:.2})",
        r.cp, r.cr, r.cf1, r.cf1_mean_of_f1
    )?;
    writeln!(
        out,
        "{at}: OP {:.2}  OR {:.2}  OF1 {:.2}",
        r.op, r.or, r.of1
    )?;
    Ok(())
}

fn print_per_class(out: &mut impl Write, r: &MetricsReport, classes: &[String]) -> Result<()> {
    let w = classes
        .iter()
        .map(|c| c.len())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    writeln!(
        out,
        "\n{:>5}  {:<w$}  {:>7}  {:>6}  {:>9}  {:>7}  {:>7}  {:>7}",
        "index", "class", "AP", "pos", "threshold", "P", "R", "F1"
    )?;
    for (i, (m, name)) in r.per_class.iter().zip(classes).enumerate() {
        let name: String = name.chars().take(w).collect();
        writeln!(
            out,
            "{i:>5}  {name:<w$}  {:>7.2}  {:>6}  {:>9.4}  {:>7.2}  {:>7.2}  {:>7.2}",
            m.ap, m.positives, m.threshold, m.precision, m.recall, m.f1
        )?;
    }
    Ok(())
}

fn write_plots(
    dir: &Path,
    acc: &MetricAccumulator,
    r: &MetricsReport,
    classes: &[String],
    scores: &[f32],
    labels: &[f32],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // highest AP first
    let mut by_ap: Vec<usize> = (0..classes.len()).collect();
    by_ap.sort_by(|&a, &b| r.per_class[b].ap.total_cmp(&r.per_class[a].ap));
    let names: Vec<String> = by_ap.iter().map(|&c| classes[c].clone()).collect();
    let ap: Vec<f64> = by_ap.iter().map(|&c| r.per_class[c].ap).collect();
    let title = format!(
        "AP per class (mAP {:.2}, {} images)",
        r.map,
        acc.num_samples()
    );
    let chart = plots::bar_chart(&title, "AP (%)", &names, &ap, (0.0, 100.0));
    plots::save_png(&chart, &dir.join("ap_per_class.png"))?;
    // PR curves of the classes with the most positives (at most 10 in one chart)
    let k = classes.len();
    let mut order: Vec<usize> = (0..k).filter(|&c| r.per_class[c].positives > 0).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(r.per_class[c].positives));
    order.truncate(10);
    let series: Vec<plots::Series> = order
        .iter()
        .map(|&c| {
            let s: Vec<f32> = scores.iter().skip(c).step_by(k).copied().collect();
            let l: Vec<i8> = labels.iter().skip(c).step_by(k).map(|&v| v as i8).collect();
            plots::Series {
                name: format!("{} (AP {:.1})", classes[c], r.per_class[c].ap),
                points: asl_core::metrics::precision_recall_curve(&s, &l),
            }
        })
        .collect();
    let chart = plots::line_chart(
        "Precision-recall (classes with the most positives)",
        "recall",
        "precision",
        &series,
        Some((0.0, 1.0)),
        Some((0.0, 1.0)),
    );
    plots::save_png(&chart, &dir.join("pr_curves.png"))?;
    Ok(())
}

pub fn run(args: &ValidateArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!("--threshold must be in [0, 1], got {}", args.threshold);
    }
    if let Some(p) = &args.write_model {
        crate::args::check_new_file(p, args.force)?;
    }
    let data_path = args
        .data
        .clone()
        .or_else(|| args.annotations.clone())
        .context("--data is required")?;
    let mut ds = data::read_dataset(&data_path, &read_options(args))
        .with_context(|| format!("reading the dataset {}", data_path.display()))?;
    let scored = match (&args.scores, &args.model) {
        (Some(path), _) => read_scores(path, &mut ds, args.dataset.skip_bad)?,
        (None, Some(model)) => run_model(args, &mut ds, model)?,
        (None, None) => bail!("give --model (or --scores)"),
    };
    report_skipped(&ds);
    let labels: Vec<f32> = scored
        .kept
        .iter()
        .flat_map(|&i| ds.samples[i].labels.iter().map(|&l| l as f32))
        .collect();
    let mut acc = MetricAccumulator::new(scored.classes.len());
    acc.push_slices(&scored.scores, &labels)
        .context("collecting the scores")?;
    if acc.num_samples() == 0 {
        bail!("no image could be evaluated");
    }
    let report = acc.compute(args.threshold);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let quiet = args.json.as_deref() == Some(Path::new("-"));
    if !quiet {
        print_report(&mut out, args, &data_path, &report, &scored)?;
    }
    let calibrated = match args.calibrate {
        true => Some(calibrate(&mut out, args, &acc, &scored, quiet)?),
        false => None,
    };
    if let Some(path) = &args.json {
        let mut v = report_json(&report, &scored.classes);
        v["data"] = serde_json::json!(data_path.display().to_string());
        v["model"] = serde_json::json!(scored.model_name);
        v["images_per_s"] = serde_json::json!(scored.images_per_s);
        v["skipped_rows"] = serde_json::json!(ds.skipped.len());
        if let Some(r) = &calibrated {
            v["calibrated"] = report_json(r, &scored.classes);
        }
        let text = serde_json::to_string_pretty(&v)?;
        if quiet {
            writeln!(out, "{text}")?;
        } else {
            crate::write_file(path, text.as_bytes())?;
        }
    }
    if let Some(path) = &args.save_scores {
        save_scores(path, &ds, &scored)?;
    }
    if let Some(dir) = &args.plots {
        write_plots(dir, &acc, &report, &scored.classes, &scored.scores, &labels)?;
    }
    Ok(())
}

/// Lists the bad rows `--skip-bad` dropped (the first ten) on stderr.
fn report_skipped(ds: &FileDataset) {
    if ds.skipped.is_empty() {
        return;
    }
    eprintln!(
        "asl-cli: skipped {} bad rows (--skip-bad):",
        ds.skipped.len()
    );
    for b in ds.skipped.iter().take(10) {
        eprintln!("  {b}");
    }
    if ds.skipped.len() > 10 {
        eprintln!("  ... and {} more", ds.skipped.len() - 10);
    }
}

/// The readable report at the threshold.
fn print_report(
    out: &mut impl Write,
    args: &ValidateArgs,
    data_path: &Path,
    report: &MetricsReport,
    scored: &Scored,
) -> Result<()> {
    writeln!(
        out,
        "{}: {} images, {} classes ({})",
        data_path.display(),
        report.num_samples,
        scored.classes.len(),
        scored.model_name
    )?;
    print_summary(out, report, &format!("at threshold {}", args.threshold))?;
    if let Some(ips) = scored.images_per_s {
        writeln!(out, "{ips:.1} images/s")?;
    }
    if args.per_class {
        print_per_class(out, report, &scored.classes)?;
    }
    Ok(())
}

/// `--calibrate`: per-class thresholds of best F1, the report at them, and with
/// `--write-model` a copy of the model holding them.
fn calibrate(
    out: &mut impl Write,
    args: &ValidateArgs,
    acc: &MetricAccumulator,
    scored: &Scored,
    quiet: bool,
) -> Result<MetricsReport> {
    let thresholds: Vec<f64> = acc
        .calibrate()
        .into_iter()
        .map(|t| t.unwrap_or(args.threshold))
        .collect();
    let r = acc.compute_per_class(&thresholds);
    if !quiet {
        writeln!(out, "\ncalibrated per-class thresholds (best F1 on this data; classes without positives keep {}):", args.threshold)?;
        print_summary(out, &r, "at calibrated thresholds")?;
        if args.per_class {
            print_per_class(out, &r, &scored.classes)?;
        }
    }
    if let Some(dest) = &args.write_model {
        let (meta, path) = scored
            .metadata
            .as_ref()
            .context("--write-model needs --model (not --scores)")?;
        let loaded = load_weights(path, &Device::Cpu)?;
        let tensors: std::collections::HashMap<_, _> = loaded
            .tensors
            .into_iter()
            .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
            .collect();
        let meta = PretrainedCfg {
            class_thresholds: Some(thresholds),
            ..meta.clone()
        };
        save_safetensors(dest, &tensors, &meta)
            .with_context(|| format!("writing {}", dest.display()))?;
        if !quiet {
            writeln!(
                out,
                "wrote {} (per-class thresholds in its metadata; `asl-cli infer` uses them)",
                dest.display()
            )?;
        }
    }
    Ok(r)
}
