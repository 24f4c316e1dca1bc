//! `asl-cli infer`: label images with a model.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use asl_cli::images;
use asl_tresnet::hub::HubConfig;
use asl_tresnet::pretrained::{load_model, ModelSource, Settings};
use asl_tresnet::registry::Activation;
use asl_tresnet::weights::{ModelMetadata, ResizeMode};
use candle_core::{Device, Tensor};
use clap::Args;
use rayon::prelude::*;

/// File extensions picked up when walking a directory (explicit file arguments are read
/// whatever their name).
const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "jfif",
];

#[derive(Args)]
pub struct InferArgs {
    /// Images: files, directories (walked recursively for image files), glob patterns
    /// ("photos/*.jpg", quoted), or `-` to read one path per line from standard input.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// The model: a registry name (`asl-cli models`), a local .safetensors or original .pth,
    /// or hf:ORG/REPO[@REVISION][:FILE].
    #[arg(short, long)]
    model: String,
    /// Architecture, for a file without metadata (default: inferred from the tensor shapes).
    #[arg(long)]
    arch: Option<String>,
    /// Class names for a file without them: a text file (one per line) or a built-in list
    /// (coco, voc, nus-wide, imagenet-1k, imagenet-21k-p).
    #[arg(long)]
    classes: Option<String>,
    /// Input size (default: the model's; 224 for a file without metadata).
    #[arg(long)]
    input_size: Option<usize>,
    /// Resize: squish to S x S (the ASL models) or crop (shorter side to S / 0.875, centre
    /// crop; timm's ImageNet models). Default: the model's.
    #[arg(long, value_parser = ["squish", "crop"])]
    resize: Option<String>,
    /// Report labels scoring at or above this (default: the model's, 0.7 for the ASL models).
    #[arg(long)]
    threshold: Option<f64>,
    /// At most this many labels per image, highest first (default: all above the threshold;
    /// 5 for single-label ImageNet models).
    #[arg(long)]
    top_k: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Output: a readable table, JSON Lines (one object per image) or CSV.
    #[arg(long, value_parser = ["text", "json", "csv"], default_value = "text")]
    format: String,
    /// Also print every class's score (JSON: a `scores` array in class order; CSV: one column
    /// per class).
    #[arg(long)]
    all_scores: bool,
    /// Write each image with its labels drawn on it into this directory (PNG).
    #[arg(long)]
    annotate: Option<PathBuf>,
    /// Stop at the first image that cannot be read (default: report it, go on, exit 1).
    #[arg(long)]
    strict: bool,
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_parser = ["cpu", "cuda"], default_value = "cpu")]
    device: String,
    /// Use only the local hub cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = images::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

/// A decoded, resized image as model input, and the decoded image itself for `--annotate`.
type Prepared = std::result::Result<(Vec<f32>, Option<image::RgbImage>), images::ImageError>;

/// One image's result.
struct Prediction {
    image: String,
    /// (class index, score), highest first.
    labels: Vec<(usize, f32)>,
    scores: Vec<f32>,
}

pub(crate) fn device(name: &str) -> Result<Device> {
    match name {
        "cuda" if cfg!(feature = "cuda") => Ok(Device::new_cuda(0)?),
        "cuda" => bail!(
            "this asl-cli was built without CUDA; rebuild with `cargo build --release -p asl-cli \
             --features cuda` (needs the CUDA toolkit) or use --device cpu"
        ),
        _ => Ok(Device::Cpu),
    }
}

/// The autocast dtype of `--precision` (`auto`, `f32` or `bf16`) on `device`: `auto` is bf16 on
/// CUDA and f32 on the CPU; `bf16` on the CPU is an error (candle's CPU matrix product has no
/// bf16).
pub(crate) fn autocast_for(precision: &str, device: &Device) -> Result<Option<candle_core::DType>> {
    match (precision, device.is_cuda()) {
        ("bf16", false) => bail!(
            "--precision bf16 needs --device cuda (candle's CPU matrix product has no bf16); \
             use --precision f32 on the CPU"
        ),
        ("bf16", true) | ("auto", true) => Ok(Some(candle_core::DType::BF16)),
        ("auto" | "f32", _) => Ok(None),
        (other, _) => bail!("unknown precision {other:?} (auto, f32 or bf16)"),
    }
}

/// Expands the inputs into image paths, in order. Errors for arguments that name nothing.
fn expand_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for arg in inputs {
        if arg == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading paths from standard input")?;
                let line = line.trim();
                if !line.is_empty() {
                    out.push(PathBuf::from(line));
                }
            }
            continue;
        }
        let path = Path::new(arg);
        if path.is_dir() {
            let before = out.len();
            walk(path, &mut out).with_context(|| format!("reading directory {arg}"))?;
            if out.len() == before {
                bail!(
                    "directory {arg} holds no image files ({})",
                    IMAGE_EXTENSIONS.join(", ")
                );
            }
        } else if path.exists() || !arg.contains(['*', '?', '[']) {
            out.push(path.to_path_buf()); // a missing file is reported with the images
        } else {
            let mut matched: Vec<PathBuf> = glob::glob(arg)
                .with_context(|| format!("bad pattern {arg:?}"))?
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                bail!("pattern {arg:?} matches no files");
            }
            matched.sort();
            out.extend(matched);
        }
    }
    if out.is_empty() {
        bail!("no images given");
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|e| {
            IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
        }) {
            out.push(p);
        }
    }
    Ok(())
}

/// A class list given on the command line: a built-in list's name or a file, one name per line.
pub(crate) fn class_list(spec: &str) -> Result<Vec<String>> {
    if let Some(list) = asl_tresnet::classes::builtin(spec) {
        return Ok(list);
    }
    Ok(std::fs::read_to_string(spec)
        .with_context(|| {
            format!(
                "--classes {spec:?} is neither a built-in list ({}) nor a readable file",
                asl_tresnet::classes::BUILTIN.join(", ")
            )
        })?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The resize mode a `--resize squish|crop` flag names (crop: timm's crop_pct 0.875).
pub(crate) fn resize_flag(flag: &str) -> ResizeMode {
    match flag {
        "squish" => ResizeMode::Squish,
        _ => ResizeMode::Crop { crop_pct: 0.875 },
    }
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub(crate) fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn explicit_settings(args: &InferArgs) -> Result<Settings> {
    let class_names = args.classes.as_deref().map(class_list).transpose()?;
    Ok(Settings {
        arch: args.arch.clone(),
        class_names,
        input_size: args.input_size,
        resize: args.resize.as_deref().map(crate::infer::resize_flag),
        threshold: args.threshold,
        activation: None,
        class_thresholds: None,
    })
}

/// Scores from logits `[N, K]`.
pub(crate) fn scores(logits: &Tensor, activation: Activation) -> Result<Vec<Vec<f32>>> {
    let logits = logits.to_dtype(candle_core::DType::F32)?;
    let p = match activation {
        Activation::Sigmoid => candle_nn::ops::sigmoid(&logits)?,
        Activation::Softmax => candle_nn::ops::softmax_last_dim(&logits)?,
    };
    Ok(p.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}

/// The labels of one image: at or above their class's threshold, highest first, at most
/// `top_k`.
fn select(scores: &[f32], thresholds: &[f64], top_k: Option<usize>) -> Vec<(usize, f32)> {
    // compared in f32, so that a score printed as 0.7 passes --threshold 0.7
    let mut idx: Vec<(usize, f32)> = scores
        .iter()
        .copied()
        .zip(thresholds)
        .enumerate()
        .filter(|(_, (s, &t))| *s >= t as f32)
        .map(|(i, (s, _))| (i, s))
        .collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = top_k {
        idx.truncate(k);
    }
    idx
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

struct Printer<'a> {
    format: &'a str,
    all_scores: bool,
    meta: &'a ModelMetadata,
    header_done: bool,
}

impl Printer<'_> {
    fn print(&mut self, out: &mut impl Write, p: &Prediction) -> Result<()> {
        let names = &self.meta.class_names;
        match self.format {
            "json" => {
                let labels: Vec<_> = p
                    .labels
                    .iter()
                    .map(|&(i, s)| serde_json::json!({"name": names[i], "index": i, "score": s}))
                    .collect();
                let mut v = serde_json::json!({"image": p.image, "labels": labels});
                if self.all_scores {
                    v["scores"] = serde_json::json!(p.scores);
                }
                writeln!(out, "{v}")?;
            }
            "csv" => {
                if self.all_scores {
                    if !self.header_done {
                        let cols: Vec<String> = names.iter().map(|n| csv_field(n)).collect();
                        writeln!(out, "image,{}", cols.join(","))?;
                    }
                    let cols: Vec<String> = p.scores.iter().map(|s| s.to_string()).collect();
                    writeln!(out, "{},{}", csv_field(&p.image), cols.join(","))?;
                } else {
                    if !self.header_done {
                        writeln!(out, "image,label,score")?;
                    }
                    for &(i, s) in &p.labels {
                        writeln!(out, "{},{},{s}", csv_field(&p.image), csv_field(&names[i]))?;
                    }
                }
                self.header_done = true;
            }
            _ => {
                writeln!(out, "{}", p.image)?;
                let width = p.labels.iter().map(|&(i, _)| names[i].len()).max();
                for &(i, s) in &p.labels {
                    writeln!(out, "  {:<w$}  {s:.3}", names[i], w = width.unwrap_or(0))?;
                }
                if p.labels.is_empty() {
                    let best = p
                        .scores
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1));
                    match best {
                        Some((i, s)) => match &self.meta.class_thresholds {
                            Some(_) => writeln!(
                                out,
                                "  (no label at or above its calibrated threshold; best: {} {s:.3})",
                                names[i]
                            )?,
                            None => writeln!(
                                out,
                                "  (no label at or above {}; best: {} {s:.3})",
                                self.meta.threshold, names[i]
                            )?,
                        },
                        None => writeln!(out, "  (no classes)")?,
                    }
                }
                if self.all_scores {
                    for (i, s) in p.scores.iter().enumerate() {
                        writeln!(out, "    {i:>5} {:<30} {s:.4}", names[i])?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A file name in `dir` for the annotated copy of `image`, not used before in this run.
fn annotated_path(
    dir: &Path,
    image: &Path,
    used: &mut std::collections::HashSet<PathBuf>,
) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "image".into());
    let mut candidate = dir.join(format!("{stem}.png"));
    let mut n = 1;
    while used.contains(&candidate) {
        candidate = dir.join(format!("{stem}-{n}.png"));
        n += 1;
    }
    used.insert(candidate.clone());
    candidate
}

/// Runs `infer`; `Ok(false)` when some images could not be read.
pub fn run(args: &InferArgs) -> Result<bool> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(t) = args.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold must be in [0, 1], got {t}");
        }
    }
    let paths = expand_inputs(&args.inputs)?;
    let device = device(&args.device)?;
    let mut hub = HubConfig::from_env();
    hub.offline |= args.offline;
    let source = ModelSource::parse(&args.model)?;
    let loaded = load_model(&source, &explicit_settings(args)?, &hub, &device)?;
    let meta = &loaded.metadata;
    let size = meta.input_size;
    let thresholds = meta
        .class_thresholds
        .clone()
        .unwrap_or_else(|| vec![meta.threshold; meta.num_classes]);
    let top_k = args.top_k.or(match meta.activation {
        Activation::Softmax => Some(5),
        Activation::Sigmoid => None,
    });
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating --annotate directory {}", dir.display()))?;
    }
    let progress = progress_bar(paths.len() as u64);
    if paths.len() <= args.batch_size {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printer = Printer {
        format: &args.format,
        all_scores: args.all_scores,
        meta,
        header_done: false,
    };
    let mut failed = 0usize;
    let mut used_names = std::collections::HashSet::new();
    for chunk in paths.chunks(args.batch_size) {
        // decode and resize in parallel; keep the decoded image for --annotate
        let prepared: Vec<Prepared> = chunk
            .par_iter()
            .map(|p| {
                let img = images::load_rgb(p, args.max_pixels)?;
                let input = images::to_chw(&images::resize(&img, size as u32, meta.resize));
                Ok((input, args.annotate.is_some().then_some(img)))
            })
            .collect();
        let mut batch = Vec::with_capacity(chunk.len() * 3 * size * size);
        let mut ok = Vec::new();
        for (path, r) in chunk.iter().zip(prepared) {
            match r {
                Ok((input, img)) => {
                    batch.extend_from_slice(&input);
                    ok.push((path, img));
                }
                Err(e) => {
                    failed += 1;
                    if args.strict {
                        out.flush()?;
                        bail!("{e} (--strict: stopping)");
                    }
                    progress.suspend(|| eprintln!("asl-cli: skipped: {e}"));
                }
            }
        }
        if !ok.is_empty() {
            let x = Tensor::from_vec(batch, (ok.len(), 3, size, size), &device)?;
            let logits = loaded.model.forward_t(&x, false)?;
            for ((path, img), scores) in ok.into_iter().zip(scores(&logits, meta.activation)?) {
                let p = Prediction {
                    image: path.display().to_string(),
                    labels: select(&scores, &thresholds, top_k),
                    scores,
                };
                progress.suspend(|| printer.print(&mut out, &p))?;
                if let (Some(dir), Some(img)) = (&args.annotate, img) {
                    let labels: Vec<(String, f32)> = p
                        .labels
                        .iter()
                        .map(|&(i, s)| (meta.class_names[i].clone(), s))
                        .collect();
                    let dest = annotated_path(dir, path, &mut used_names);
                    images::annotate(&img, &labels)
                        .save(&dest)
                        .with_context(|| format!("writing {}", dest.display()))?;
                }
            }
        }
        out.flush()?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if failed > 0 {
        eprintln!(
            "asl-cli: {failed} of {} images could not be read (see above)",
            paths.len()
        );
    }
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_thresholded_sorted_and_cut() {
        let s = [0.2, 0.9, 0.7, 0.95, 0.7];
        let t = |v: f64| vec![v; 5];
        let all = vec![(3, 0.95), (1, 0.9), (2, 0.7), (4, 0.7)];
        assert_eq!(select(&s, &t(0.7), None), all);
        assert_eq!(select(&s, &t(0.7), Some(2)), vec![(3, 0.95), (1, 0.9)]);
        assert_eq!(select(&s, &t(0.99), None), vec![]);
        // per-class thresholds
        let per = [0.1, 0.95, 0.5, 0.99, 0.7];
        assert_eq!(select(&s, &per, None), vec![(2, 0.7), (4, 0.7), (0, 0.2)]);
    }

    #[test]
    fn csv_fields_are_quoted() {
        assert_eq!(csv_field("dog"), "dog");
        assert_eq!(csv_field("tench, Tinca tinca"), "\"tench, Tinca tinca\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
