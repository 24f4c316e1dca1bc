//! `asl-cli bench`: the speed of the inference path, or of one training step, on this machine.

use std::cell::RefCell;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use asl_core::{AslConfig, AsymmetricLoss};
use asl_tresnet::model::KindTimes;
use asl_tresnet::train::Adam;
use asl_tresnet::{TResNet, TResNetConfig};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;

use crate::args::{DeviceArgs, Precision, ReportFormat};

#[derive(Args)]
pub struct BenchArgs {
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
    pub threads: Option<usize>,
    /// Timed runs after two warm-up runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Classes of the random classifier.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Time a training step instead (forward in training mode, ASL, backward, Adam step).
    #[arg(long)]
    train: bool,
    /// Also time one more run layer type by layer type (convolution products, im2col, bias +
    /// activation, blur, SE, residual, pooling, head; with --train also each backward kind) and
    /// print where the time goes (CPU only).
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// With --train: f32, or bf16 autocast of the convolutions and the classifier (CUDA only),
    /// as `asl-cli train --precision`. auto: bf16 on CUDA, f32 on the CPU. Inference runs the
    /// folded f32 model whatever this says.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    precision: Precision,
}

/// What one timed run does: an inference pass, or a training step with its optimiser.
struct Workload {
    model: TResNet,
    x: Tensor,
    /// Adam and the random targets of a training step.
    train: Option<(RefCell<Adam>, Tensor)>,
    loss: AsymmetricLoss,
    device: Device,
}

impl Workload {
    fn new(args: &BenchArgs) -> Result<(Workload, Option<DType>)> {
        let cfg = TResNetConfig::from_arch(&args.arch, args.num_classes).with_context(|| {
            format!(
                "unknown architecture {:?} (known: {})",
                args.arch,
                TResNetConfig::ARCHS.join(", ")
            )
        })?;
        let device = args.device.device()?;
        if args.profile && !device.is_cpu() {
            bail!("--profile times the CPU engines: use it with --device cpu");
        }
        let autocast = if args.train {
            args.precision.autocast(&device)?
        } else {
            if args.precision == Precision::Bf16 {
                bail!("--precision bf16 is for --train (inference runs the folded f32 model)");
            }
            None
        };
        let vars = VarMap::new();
        let model = TResNet::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, &device))?
            .with_autocast(autocast)?;
        let s = args.input_size;
        let x = Tensor::rand(0f32, 1., (args.batch_size, 3, s, s), &device)?;
        TResNet::check_input(&x)?;
        // --train: one optimiser step of the training path (BatchNorm on batch statistics, ASL,
        // backward, Adam with weight decay), as `asl-cli train` runs it
        let (model, train) = if args.train {
            let y = Tensor::rand(0f32, 1., (args.batch_size, args.num_classes), &device)?
                .ge(0.8)?
                .to_dtype(DType::F32)?;
            (
                model,
                Some((RefCell::new(Adam::new(trainable(&vars)?, 1e-4)?), y)),
            )
        } else {
            drop(vars);
            (model.into_inference()?, None)
        };
        let loss = AsymmetricLoss::new(AslConfig::paper());
        let w = Workload {
            model,
            x,
            train,
            loss,
            device,
        };
        Ok((w, autocast))
    }

    /// One run's seconds.
    fn run(&self) -> Result<f64> {
        let t = Instant::now();
        match &self.train {
            Some((adam, y)) => {
                let (_, _, grads) = self
                    .model
                    .train_step(&self.x, &|logits| self.loss.forward(logits, y))?;
                let mut adam = adam.borrow_mut();
                let g = adam.grads_for(&grads);
                adam.step(&g, 1e-4, 0.9)?;
                self.device.synchronize()?; // CUDA runs asynchronously: wait for the step
            }
            None => {
                let y = self.model.forward_t(&self.x, false)?;
                y.to_vec2::<f32>()?; // wait for the result
            }
        }
        Ok(t.elapsed().as_secs_f64())
    }

    /// One more run, timed kind by kind: rows (kind, seconds) longest first, and their sum.
    fn profile(&self) -> Result<(Vec<(&'static str, f64)>, f64)> {
        let times: KindTimes = match &self.train {
            Some((_, y)) => {
                self.model
                    .train_step_profiled(&self.x, &|logits| self.loss.forward(logits, y))?
                    .3
            }
            None => self.model.forward_profiled(&self.x)?.1,
        };
        let total: f64 = times.iter().map(|(_, t)| t.as_secs_f64()).sum();
        let mut rows: Vec<(&str, f64)> = times.iter().map(|(k, t)| (*k, t.as_secs_f64())).collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok((rows, total))
    }
}

/// The parameters Adam updates (everything but the running statistics), with weight decay on
/// weights of rank > 1.
fn trainable(vars: &VarMap) -> Result<Vec<(String, Var, bool)>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?;
    Ok(data
        .iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .map(|(n, v)| (n.clone(), v.clone(), v.as_tensor().rank() > 1))
        .collect())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.batch_size == 0 || args.runs == 0 {
        bail!("--batch-size and --runs must be at least 1");
    }
    let (work, autocast) = Workload::new(args)?;
    for _ in 0..2 {
        work.run()?;
    }
    let mut times = (0..args.runs)
        .map(|_| work.run())
        .collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let profile = args.profile.then(|| work.profile()).transpose()?;
    let precision = autocast.map_or("f32".to_string(), |dt| format!("{dt:?}").to_lowercase());
    print(args, &times, &precision, profile.as_ref())
}

fn print(
    args: &BenchArgs,
    times: &[f64],
    precision: &str,
    profile: Option<&(Vec<(&'static str, f64)>, f64)>,
) -> Result<()> {
    let median = times[times.len() / 2];
    let ips = args.batch_size as f64 / median;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    let device = match args.device.device {
        crate::args::DeviceKind::Cpu => "cpu",
        crate::args::DeviceKind::Cuda => "cuda",
    };
    if args.format == ReportFormat::Json {
        let mut v = serde_json::json!({
            "arch": args.arch, "input_size": args.input_size, "batch_size": args.batch_size,
            "mode": if args.train { "train step" } else { "inference" },
            "device": device,
            "precision": precision,
            "threads": threads, "runs": args.runs, "median_s": median,
            "images_per_s": ips, "times_s": times,
        });
        if let Some((rows, total)) = profile {
            v["profile"] = rows
                .iter()
                .map(|(k, t)| serde_json::json!({"op": k, "seconds": t, "share": t / total}))
                .collect();
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} @{} batch {} ({}, {device}, {precision}): {:.2} images/s (median of {} runs: {:.1} ms; threads: {threads})",
        args.arch,
        args.input_size,
        args.batch_size,
        if args.train { "training step" } else { "inference" },
        ips,
        args.runs,
        median * 1e3
    );
    if let Some((rows, total)) = profile {
        println!(
            "\nwhere the time goes (one more run, {:.1} ms):",
            total * 1e3
        );
        for (k, t) in rows {
            println!("  {k:<22} {:>8.2} ms {:>5.1}%", t * 1e3, 100.0 * t / total);
        }
    }
    Ok(())
}
