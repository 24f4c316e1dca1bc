//! Heap use of the fused loss, measured with a counting global allocator: the forward pass
//! allocates no per-element temporary, and forward + backward allocates one gradient buffer
//! besides the two that candle's backward machinery always adds (a zero-initialised gradient
//! slot and the sum written into it). One test in this binary, so nothing else allocates
//! concurrently.

use asl_core::{AslConfig, AsymmetricLoss};
use asl_test_support::alloc::{peak_heap_during, CountingAlloc};
use candle_core::{DType, Device, Tensor, Var};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn peak_during(f: impl FnOnce()) -> usize {
    peak_heap_during(f).1
}

#[test]
fn fused_loss_allocates_only_the_gradient_buffer() {
    let (n, c) = (128, 9605);
    let elems = n * c * 4;
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 3., (n, c), &dev).unwrap();
    let y = Tensor::rand(0f32, 1., (n, c), &dev)
        .unwrap()
        .lt(0.05)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let v = Var::from_tensor(&x).unwrap();
    let loss = AsymmetricLoss::new(AslConfig::default());
    // Warm up rayon's pool and candle's lazies.
    loss.forward(v.as_tensor(), &y).unwrap().backward().unwrap();

    let forward_only = peak_during(|| {
        loss.forward(&x, &y).unwrap();
    });
    assert!(
        forward_only < 1 << 20,
        "forward without a graph: {forward_only} bytes"
    );

    let forward_in_graph = peak_during(|| {
        std::hint::black_box(loss.forward(v.as_tensor(), &y).unwrap());
    });
    assert!(
        forward_in_graph < elems + (1 << 20),
        "forward in a graph: {forward_in_graph} bytes for {elems} bytes of logits"
    );

    let forward_backward = peak_during(|| {
        let l = loss.forward(v.as_tensor(), &y).unwrap();
        std::hint::black_box(l.backward().unwrap());
    });
    assert!(
        forward_backward < 3 * elems + (1 << 20),
        "forward + backward: {forward_backward} bytes for {elems} bytes of logits"
    );

    // The composed reference, for scale: dozens of [N, C] temporaries.
    let composed = peak_during(|| {
        let l = loss.forward_composed(v.as_tensor(), &y).unwrap();
        std::hint::black_box(l.backward().unwrap());
    });
    assert!(
        composed > 10 * forward_backward,
        "composed {composed} vs fused {forward_backward}"
    );
}
