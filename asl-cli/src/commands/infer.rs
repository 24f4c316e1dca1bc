//! `asl-cli infer`: label images with a model.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use asl_tresnet::images::{self, Preprocess, RgbImage};
use asl_tresnet::pretrained::{load_model, Activation, ModelSource, PretrainedCfg};
use candle_core::Tensor;
use clap::{Args, ValueEnum};
use rayon::prelude::*;

use crate::args::{DeviceArgs, HubArgs, ImageLimitArgs, ModelCfgArgs};
use crate::plots::annotate;
use crate::progress::progress_bar;

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
    #[command(flatten)]
    model_cfg: ModelCfgArgs,
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
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
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
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    limits: ImageLimitArgs,
}

/// `infer --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Csv,
}

/// A decoded, resized image as model input, and the decoded image itself for `--annotate`.
type Prepared = std::result::Result<(Vec<f32>, Option<RgbImage>), images::ImageError>;

/// One image's result.
struct Prediction {
    image: String,
    /// (class index, score), highest first.
    labels: Vec<(usize, f32)>,
    scores: Vec<f32>,
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

/// A CSV field, quoted when it has to be.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Prints predictions in the chosen format, one image at a time.
struct Printer<'a> {
    format: OutputFormat,
    all_scores: bool,
    cfg: &'a PretrainedCfg,
    header_done: bool,
}

impl Printer<'_> {
    fn print(&mut self, out: &mut impl Write, p: &Prediction) -> Result<()> {
        match self.format {
            OutputFormat::Json => self.json(out, p),
            OutputFormat::Csv => self.csv(out, p),
            OutputFormat::Text => self.text(out, p),
        }
    }

    fn json(&self, out: &mut impl Write, p: &Prediction) -> Result<()> {
        let names = &self.cfg.class_names;
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
        Ok(())
    }

    fn csv(&mut self, out: &mut impl Write, p: &Prediction) -> Result<()> {
        let names = &self.cfg.class_names;
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
        Ok(())
    }

    fn text(&self, out: &mut impl Write, p: &Prediction) -> Result<()> {
        let names = &self.cfg.class_names;
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
                Some((i, s)) => match &self.cfg.class_thresholds {
                    Some(_) => writeln!(
                        out,
                        "  (no label at or above its calibrated threshold; best: {} {s:.3})",
                        names[i]
                    )?,
                    None => writeln!(
                        out,
                        "  (no label at or above {}; best: {} {s:.3})",
                        self.cfg.threshold, names[i]
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
        Ok(())
    }
}

/// A file name in `dir` for the annotated copy of `image`, not used before in this run.
fn annotated_path(dir: &Path, image: &Path, used: &mut HashSet<PathBuf>) -> PathBuf {
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
    let mut tagger = Tagger::new(args)?;
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
    let mut failed = 0usize;
    for chunk in paths.chunks(args.batch_size) {
        failed += tagger.chunk(chunk, &mut out, &progress)?;
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

/// The loaded model and what `infer` does with each batch of images.
struct Tagger<'a> {
    args: &'a InferArgs,
    loaded: asl_tresnet::pretrained::LoadedModel,
    device: candle_core::Device,
    prep: Preprocess,
    top_k: Option<usize>,
    used_names: HashSet<PathBuf>,
    header_done: bool,
}

impl<'a> Tagger<'a> {
    fn new(args: &'a InferArgs) -> Result<Self> {
        let device = args.device.device()?;
        let overrides = asl_tresnet::pretrained::CfgOverrides {
            threshold: args.threshold,
            ..args.model_cfg.overrides()?
        };
        let source = ModelSource::parse(&args.model)?;
        let loaded = load_model(&source, &overrides, &args.hub.config(), &device)?;
        let prep = Preprocess::new(&loaded.cfg).with_max_pixels(args.limits.max_pixels);
        let top_k = args.top_k.or(match loaded.cfg.activation {
            Activation::Softmax => Some(5),
            Activation::Sigmoid => None,
        });
        Ok(Tagger {
            args,
            loaded,
            device,
            prep,
            top_k,
            used_names: HashSet::new(),
            header_done: false,
        })
    }

    /// Decodes, tags and prints one chunk of images; returns how many could not be read.
    fn chunk(
        &mut self,
        chunk: &[PathBuf],
        out: &mut impl Write,
        progress: &indicatif::ProgressBar,
    ) -> Result<usize> {
        // decode and resize in parallel; keep the decoded image for --annotate
        let keep = self.args.annotate.is_some();
        let prepared: Vec<Prepared> = chunk
            .par_iter()
            .map(|p| {
                let img = images::load_rgb(p, self.prep.max_pixels)?;
                Ok((self.prep.apply(&img), keep.then_some(img)))
            })
            .collect();
        let size = self.prep.size as usize;
        let mut batch = Vec::with_capacity(chunk.len() * 3 * size * size);
        let mut ok = Vec::new();
        let mut failed = 0;
        for (path, r) in chunk.iter().zip(prepared) {
            match r {
                Ok((input, img)) => {
                    batch.extend_from_slice(&input);
                    ok.push((path, img));
                }
                Err(e) => {
                    failed += 1;
                    if self.args.strict {
                        out.flush()?;
                        bail!("{e} (--strict: stopping)");
                    }
                    progress.suspend(|| eprintln!("asl-cli: skipped: {e}"));
                }
            }
        }
        if !ok.is_empty() {
            let x = Tensor::from_vec(batch, (ok.len(), 3, size, size), &self.device)?;
            let scores = self.loaded.scores(&x)?;
            for ((path, img), scores) in ok.into_iter().zip(scores) {
                self.emit(path, img, scores, out, progress)?;
            }
        }
        Ok(failed)
    }

    /// Prints one image's prediction and writes its annotated copy.
    fn emit(
        &mut self,
        path: &Path,
        img: Option<RgbImage>,
        scores: Vec<f32>,
        out: &mut impl Write,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        let p = Prediction {
            image: path.display().to_string(),
            labels: self.loaded.labels(&scores, self.top_k),
            scores,
        };
        let mut printer = Printer {
            format: self.args.format,
            all_scores: self.args.all_scores,
            cfg: &self.loaded.cfg,
            header_done: self.header_done,
        };
        progress.suspend(|| printer.print(out, &p))?;
        self.header_done = printer.header_done;
        if let (Some(dir), Some(img)) = (&self.args.annotate, img) {
            let labels: Vec<(String, f32)> = p
                .labels
                .iter()
                .map(|&(i, s)| (self.loaded.cfg.class_names[i].clone(), s))
                .collect();
            let dest = annotated_path(dir, path, &mut self.used_names);
            annotate(&img, &labels)
                .save(&dest)
                .with_context(|| format!("writing {}", dest.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted() {
        assert_eq!(csv_field("dog"), "dog");
        assert_eq!(csv_field("tench, Tinca tinca"), "\"tench, Tinca tinca\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
