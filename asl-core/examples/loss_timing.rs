//! Times the fused and composed multi-label ASL (forward + backward, and forward only) and
//! measures their peak extra heap use, printing one JSON object per shape. Used by
//! `scripts/bench_vs_pytorch.py`, which times PyTorch in the same run; see docs/benchmarks.md.
//!
//! `cargo run --release -p asl-tests --example loss_timing -- [REPS] [NxC ...]`

use std::time::Instant;

use asl_core::{AslConfig, AsymmetricLoss};
use asl_test_support::alloc::{peak_heap_during, CountingAlloc};
use candle_core::{DType, Device, Tensor, Var};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Median wall time (ms) of `f` over `reps` runs after 3 warm-up runs, and the peak extra heap
/// (bytes above what was live before) during one run.
fn measure(reps: usize, mut f: impl FnMut()) -> (f64, usize) {
    for _ in 0..3 {
        f();
    }
    let ((), peak) = peak_heap_during(&mut f);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], peak)
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(30);
    let shapes: Vec<(usize, usize)> = args
        .iter()
        .skip(1)
        .filter_map(|s| {
            let (n, c) = s.split_once('x')?;
            Some((n.parse().ok()?, c.parse().ok()?))
        })
        .collect();
    let shapes = if shapes.is_empty() {
        vec![(128, 80), (64, 9605), (1024, 9605)]
    } else {
        shapes
    };
    let loss = AsymmetricLoss::new(AslConfig::default());
    for (n, c) in shapes {
        let dev = Device::Cpu;
        let x = ((Tensor::randn(0f32, 1f32, (n, c), &dev)? * 3.0)? - 2.0)?;
        let y = Tensor::rand(0f32, 1f32, (n, c), &dev)?
            .lt(0.05)?
            .to_dtype(DType::F32)?;
        let v = Var::from_tensor(&x)?;
        let fwd_bwd = |composed: bool| {
            let l = if composed {
                loss.forward_composed(v.as_tensor(), &y)
            } else {
                loss.forward(v.as_tensor(), &y)
            }
            .expect("forward");
            std::hint::black_box(l.backward().expect("backward"));
        };
        let (fused_ms, fused_peak) = measure(reps, || fwd_bwd(false));
        let (fwd_ms, fwd_peak) = measure(reps, || {
            std::hint::black_box(loss.forward(&x, &y).expect("forward"));
        });
        // The composed reference is slow and memory-hungry: fewer repetitions, and skipped at
        // the largest size unless asked for.
        let composed = if n * c <= 64 * 9605 || std::env::var("ASL_BENCH_COMPOSED").is_ok() {
            let (ms, peak) = measure(reps.div_ceil(5), || fwd_bwd(true));
            format!("{ms:.4}, \"composed_peak_bytes\": {peak}")
        } else {
            "null, \"composed_peak_bytes\": null".into()
        };
        println!(
            "{{\"shape\": [{n}, {c}], \"fused_fwd_bwd_ms\": {fused_ms:.4}, \"fused_fwd_bwd_peak_bytes\": {fused_peak}, \
             \"fused_fwd_only_ms\": {fwd_ms:.4}, \"fused_fwd_only_peak_bytes\": {fwd_peak}, \
             \"composed_fwd_bwd_ms\": {composed}, \"threads\": {}}}",
            rayon::current_num_threads()
        );
    }
    Ok(())
}
