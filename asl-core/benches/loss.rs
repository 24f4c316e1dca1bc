//! Criterion benches of the multi-label ASL: the fused kernel against the composed candle-ops
//! reference, forward + backward and forward only, at the COCO (128 x 80) and OpenImages
//! (64 x 9605, 1024 x 9605) sizes. Results and the comparison with PyTorch: docs/benchmarks.md.
//!
//! Run: `cargo bench -p asl-core --bench loss`

use asl_core::{AslConfig, AsymmetricLoss};
use candle_core::{Device, Tensor, Var};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

const SHAPES: [(usize, usize); 3] = [(128, 80), (64, 9605), (1024, 9605)];

fn inputs(n: usize, c: usize) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let logits = (Tensor::randn(0f32, 1f32, (n, c), &dev).unwrap() * 3.0).unwrap() - 2.0;
    let targets = Tensor::rand(0f32, 1f32, (n, c), &dev)
        .unwrap()
        .lt(0.05)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    (logits.unwrap(), targets)
}

fn bench(c: &mut Criterion) {
    let loss = AsymmetricLoss::new(AslConfig::default());
    let mut group = c.benchmark_group("asl-forward-backward");
    group.sample_size(20);
    for (n, k) in SHAPES {
        let (x, y) = inputs(n, k);
        let id = format!("{n}x{k}");
        group.bench_with_input(BenchmarkId::new("fused", &id), &(), |b, _| {
            let v = Var::from_tensor(&x).unwrap();
            b.iter(|| {
                let l = loss.forward(v.as_tensor(), &y).unwrap();
                black_box(l.backward().unwrap());
            })
        });
        // The composed reference takes seconds and ~9 GB at 1024 x 9605: fewest samples.
        group.sample_size(if n * k > 64 * 9605 { 10 } else { 20 });
        group.bench_with_input(BenchmarkId::new("composed", &id), &(), |b, _| {
            let v = Var::from_tensor(&x).unwrap();
            b.iter(|| {
                let l = loss.forward_composed(v.as_tensor(), &y).unwrap();
                black_box(l.backward().unwrap());
            })
        });
        group.sample_size(20);
        group.bench_with_input(BenchmarkId::new("fused-forward-only", &id), &(), |b, _| {
            b.iter(|| black_box(loss.forward(&x, &y).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
