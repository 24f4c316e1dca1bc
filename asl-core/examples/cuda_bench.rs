//! Times the fused CUDA ASL (forward + backward) and prints JSON lines; see
//! `tests/cuda_common/bench.rs` for what is measured (the same code runs as the ignored test
//! `fused_asl_gpu_benchmark` of `tests/cuda.rs`).
//!
//! ```text
//! cargo build --release --features cuda -p asl-core --example cuda_bench
//! target/release/examples/cuda_bench [--iters 200] [--sizes 1024x9605,64x9605]
//! ```

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!(
        "cuda_bench needs the cuda feature: \
         cargo run --release --features cuda -p asl-core --example cuda_bench"
    );
    std::process::exit(2);
}

#[cfg(feature = "cuda")]
#[path = "../tests/cuda_common/bench.rs"]
mod bench;

#[cfg(feature = "cuda")]
fn main() -> candle_core::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    bench::run(&bench::Args::parse(&argv))
}
