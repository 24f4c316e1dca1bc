//! The fused CUDA ASL benchmark (forward + backward), printing JSON lines. Shared by
//! `examples/cuda_bench.rs` and the ignored test `fused_asl_gpu_benchmark` in `tests/cuda.rs`
//! (one executable to carry to the GPU machine).
//!
//! Per variant: a warm-up, then `iters` timed iterations, each between two device
//! synchronisations (median, p10, p90), and one batch of `iters` back-to-back iterations with one
//! synchronisation at the end (`ms_pipelined`, the mean). An iteration is what a training step
//! does: `forward` on a `Var`, `backward`, take the gradient. The byte floor is what any fused
//! kernel must move: read logits and targets once, write the gradient once (forward only: no
//! gradient); `floor_ms` is that at the 4.3 TB/s an H200 copies, `x_floor_median` the median over it.
//! `ASL_CUDA_SKIP_TARGET_CHECK` is toggled per variant (`target_check`): with the check, the
//! forward pass synchronises to read back one flag. The PyTorch reference is
//! `scripts/bench_asl_torch_cuda.py` (same sizes, same input distribution).

use std::time::Instant;

use asl_core::{AslConfig, AsymmetricLoss};
use candle_core::{DType, Device, Result, Tensor, Var};

/// What the H200 really copies, bytes per second (a device-to-device copy; the HBM3e peak is
/// 4.8e12): the floor a fused kernel can reach.
const COPY_BYTES_PER_S: f64 = 4.3e12;

/// What to time: `iters` timed iterations per variant, at each `(N, C)` of `sizes`.
pub struct Args {
    pub iters: usize,
    pub sizes: Vec<(usize, usize)>,
}

fn parse_sizes(v: &str) -> Vec<(usize, usize)> {
    v.split(',')
        .map(|s| {
            let (n, c) = s.split_once('x').expect("sizes as NxC,NxC");
            (n.parse().expect("N"), c.parse().expect("C"))
        })
        .collect()
}

impl Args {
    /// The defaults (200 iterations, 1024x9605 and 64x9605), overridden by `ASL_BENCH_ITERS` and
    /// `ASL_BENCH_SIZES` (e.g. `1024x9605,64x9605`), then by `--iters N` and `--sizes ...` in
    /// `argv`.
    pub fn parse(argv: &[String]) -> Args {
        let mut a = Args {
            iters: 200,
            sizes: vec![(1024, 9605), (64, 9605)],
        };
        if let Ok(v) = std::env::var("ASL_BENCH_ITERS") {
            a.iters = v.parse().expect("ASL_BENCH_ITERS=N");
        }
        if let Ok(v) = std::env::var("ASL_BENCH_SIZES") {
            a.sizes = parse_sizes(&v);
        }
        let mut i = 0;
        while i < argv.len() {
            match (argv[i].as_str(), argv.get(i + 1)) {
                ("--iters", Some(v)) => a.iters = v.parse().expect("--iters N"),
                ("--sizes", Some(v)) => a.sizes = parse_sizes(v),
                (other, _) => panic!("unknown argument {other} (--iters N, --sizes NxC,...)"),
            }
            i += 2;
        }
        a
    }
}

/// Logits uniform in [-6, 6), targets 1 with probability 2% (as the PyTorch script).
fn inputs(n: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let x = (0..n * c).map(|_| next() * 12.0 - 6.0).collect();
    let y = (0..n * c).map(|_| (next() < 0.02) as u8 as f32).collect();
    (x, y)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

struct Variant {
    name: &'static str,
    logits: DType,
    targets: DType,
    grad: bool,
    check: bool,
}

/// Runs the benchmark on CUDA device 0, printing one JSON line per variant and size.
pub fn run(a: &Args) -> Result<()> {
    let dev = Device::new_cuda(0)?;
    let loss_fn = AsymmetricLoss::new(AslConfig::default());
    let variants = [
        Variant {
            name: "fwd+bwd",
            logits: DType::F32,
            targets: DType::F32,
            grad: true,
            check: true,
        },
        Variant {
            name: "fwd+bwd",
            logits: DType::F32,
            targets: DType::F32,
            grad: true,
            check: false,
        },
        Variant {
            name: "fwd+bwd",
            logits: DType::F32,
            targets: DType::U8,
            grad: true,
            check: true,
        },
        Variant {
            name: "fwd+bwd",
            logits: DType::BF16,
            targets: DType::U8,
            grad: true,
            check: true,
        },
        Variant {
            name: "fwd",
            logits: DType::F32,
            targets: DType::F32,
            grad: false,
            check: true,
        },
        Variant {
            name: "fwd",
            logits: DType::F32,
            targets: DType::F32,
            grad: false,
            check: false,
        },
    ];
    for &(n, c) in &a.sizes {
        let (xv, yv) = inputs(n, c);
        let x32 = Tensor::from_vec(xv, (n, c), &Device::Cpu)?;
        let y32 = Tensor::from_vec(yv, (n, c), &Device::Cpu)?;
        for v in &variants {
            let x = x32.to_dtype(v.logits)?.to_device(&dev)?;
            let y = y32.to_dtype(v.targets)?.to_device(&dev)?;
            let xvar = Var::from_tensor(&x)?;
            // The loss once on the CPU, to show the GPU computes the same.
            let cpu_loss = loss_fn
                .forward(&x32.to_dtype(v.logits)?, &y32.to_dtype(v.targets)?)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            if v.check {
                std::env::remove_var("ASL_CUDA_SKIP_TARGET_CHECK");
            } else {
                std::env::set_var("ASL_CUDA_SKIP_TARGET_CHECK", "1");
            }
            let step = || -> Result<Tensor> {
                if v.grad {
                    let loss = loss_fn.forward(xvar.as_tensor(), &y)?;
                    let grads = loss.backward()?;
                    let _g = grads.get(&xvar).expect("gradient");
                    Ok(loss)
                } else {
                    loss_fn.forward(&x, &y)
                }
            };
            let gpu_loss = step()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            for _ in 0..10 {
                step()?;
            }
            dev.synchronize()?;
            let mut times = Vec::with_capacity(a.iters);
            for _ in 0..a.iters {
                dev.synchronize()?;
                let t = Instant::now();
                step()?;
                dev.synchronize()?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let t = Instant::now();
            for _ in 0..a.iters {
                step()?;
            }
            dev.synchronize()?;
            let pipelined = t.elapsed().as_secs_f64() * 1e3 / a.iters as f64;
            times.sort_by(|p, q| p.total_cmp(q));
            let median = percentile(&times, 0.5);
            let el = n * c;
            let (lb, tb) = (v.logits.size_in_bytes(), v.targets.size_in_bytes());
            let floor = el * (lb + tb + if v.grad { lb } else { 0 });
            println!(
                "{{\"bench\":\"asl-rs-cuda\",\"variant\":\"{}\",\"n\":{n},\"c\":{c},\
                 \"logits\":\"{:?}\",\"targets\":\"{:?}\",\"target_check\":{},\
                 \"iters\":{},\"ms_median\":{median:.5},\"ms_p10\":{:.5},\"ms_p90\":{:.5},\
                 \"ms_pipelined\":{pipelined:.5},\"floor_bytes\":{floor},\
                 \"floor_ms\":{:.5},\"gbps_median\":{:.1},\"gbps_pipelined\":{:.1},\
                 \"x_floor_median\":{:.2},\"loss\":{gpu_loss:e},\"cpu_loss\":{cpu_loss:e},\
                 \"loss_rel_err_vs_cpu\":{:.2e}}}",
                v.name,
                v.logits,
                v.targets,
                v.check,
                a.iters,
                percentile(&times, 0.1),
                percentile(&times, 0.9),
                floor as f64 / COPY_BYTES_PER_S * 1e3,
                floor as f64 / (median * 1e-3) / 1e9,
                floor as f64 / (pipelined * 1e-3) / 1e9,
                median / (floor as f64 / COPY_BYTES_PER_S * 1e3),
                ((gpu_loss - cpu_loss) / cpu_loss).abs(),
            );
        }
        std::env::remove_var("ASL_CUDA_SKIP_TARGET_CHECK");
    }
    Ok(())
}
