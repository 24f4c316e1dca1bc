//! The CUDA kernels checked on the CPU (no GPU, no `cuda` feature needed).
//!
//! 1. A Rust transcription of `kernels/asl_math.cuh` (the per-element formula) and of the
//!    launch geometry and reduction order of `kernels/asl.cu` (`transcription.rs`) is compared
//!    with the fused CPU kernel for every configuration, reduction and target kind.
//! 2. `asl_math.cuh` itself is compiled with the host C++ compiler (`$CXX`, else `c++`) and must
//!    agree bit for bit with the transcription (same libm, no FMA contraction): so the header the
//!    GPU runs is exactly the math checked in 1.
//! 3. `asl.cu` itself, every kernel, runs under a host emulation of CUDA's execution model
//!    (`emulated.rs`, `tests/cuda_emu/`), launched from the same plans `src/cuda.rs` launches
//!    from (`asl_core::cuda_launch`): outputs bit for bit against the transcription, argument
//!    sizes, buffer bounds, and independence from the order the threads run in.
//!
//! 2 and 3 are skipped, with a message, when no C++ compiler can be run; `ASL_REQUIRE_CXX=1`
//! (set by `.ci/run`) makes that a failure.
//!
//! What stays for a GPU (`tests/cuda.rs`): the device's own libm rounding and conversions, the
//! driver, real concurrency and speed.

#[path = "../cuda_common/mod.rs"]
mod cuda_common;
mod cxx;
mod emulated;
mod transcription;

use asl_core::{AslConfig, AslSingleLabel, AsymmetricLoss, SingleLabelConfig};
use candle_core::{DType, Device, Tensor, Var};
use cuda_common::{grad_err, loss_err, norm_err, rel, Rng, TargetKind};
use num_traits::Float;
use transcription::*;

// ---------------------------------------------------------------------------------------------
// The CPU kernel (the crate's public API), for comparison.

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The CPU kernel's loss and gradient (of the loss's sum, as the transcription's upstream is 1).
fn cpu_multilabel(
    cfg: AslConfig,
    x: &[f64],
    y: &[f64],
    cols: usize,
    dt: DType,
) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / cols;
    let logits = Tensor::from_vec(x.to_vec(), (rows, cols), &Device::Cpu)
        .unwrap()
        .to_dtype(dt)
        .unwrap();
    let targets = Tensor::from_vec(y.to_vec(), (rows, cols), &Device::Cpu)
        .unwrap()
        .to_dtype(dt)
        .unwrap();
    let v = Var::from_tensor(&logits).unwrap();
    let loss = AsymmetricLoss::new(cfg)
        .forward(v.as_tensor(), &targets)
        .unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();
    (values(&loss), values(grads.get(&v).unwrap()))
}

fn to<F: Float>(v: &[f64]) -> Vec<F> {
    v.iter().map(|&a| cast(a)).collect()
}

fn back<F: Float>(v: &[F]) -> Vec<f64> {
    v.iter().map(|a| a.to_f64().expect("float")).collect()
}

/// Whether the CPU kernel computes these f32 inputs with its SIMD block kernel (`fast.rs`: hard
/// targets, integer exponents up to 15), whose own `exp`/`log` differ from libm by about an ulp;
/// elsewhere it runs `asl_element` with libm, exactly the transcription's operations.
fn cpu_takes_simd_path(cfg: &AslConfig, kind: TargetKind) -> bool {
    let int = |g: f64| (0..=15).contains(&small_int(g));
    kind == TargetKind::Hard && int(cfg.gamma_pos) && int(cfg.gamma_neg)
}

#[test]
fn the_kernel_math_and_reduction_order_match_the_cpu_kernel() {
    let g = geometry();
    // 5015 elements: 3 tiles, the last one partial.
    let (rows, cols) = (5, 1003);
    // f32: loss, gradient (CPU libm path), gradient (CPU SIMD path), gradient normwise, scalar
    // (reduced) loss.
    let mut worst = [0f64; 5];
    let mut worst64 = [0f64; 2];
    for seed in [7, 8] {
        let mut rng = Rng::new(seed);
        let x = cuda_common::logits(rows * cols, &mut rng);
        for kind in [TargetKind::Hard, TargetKind::Soft, TargetKind::Mixed] {
            let y = cuda_common::targets(kind, rows * cols, &mut rng);
            for (name, base) in cuda_common::multilabel_configs() {
                for reduction in cuda_common::REDUCTIONS {
                    let cfg = AslConfig { reduction, ..base };
                    // f32: the inputs rounded to f32 first, as the f32 tensors hold them.
                    let x32: Vec<f32> = to(&x);
                    let y32: Vec<f32> = to(&y);
                    let emu = ml_kernel(&x32, &y32, cols, &cfg, &g);
                    let (cl, cg) = cpu_multilabel(cfg, &back(&x32), &back(&y32), cols, DType::F32);
                    let el = loss_err(&back(&emu.loss), &cl);
                    let eg = grad_err(&back(&emu.grad), &cg);
                    let en = norm_err(&back(&emu.grad), &cg);
                    let simd = cpu_takes_simd_path(&cfg, kind);
                    // Against the CPU's libm path: 1e-6 element by element (in practice the
                    // same bits). Against its SIMD path, whose exp/log differ from libm by about
                    // an ulp: 1e-6 normwise; element by element those ulps are amplified where
                    // p - clip cancels (there f32 itself is ~1e-5 from the exact gradient, both
                    // kernels alike).
                    let tol = if simd { 2e-5 } else { 1e-6 };
                    // A scalar loss: relative error; per element: as the gradient.
                    let (el, eln) = (el, norm_err(&back(&emu.loss), &cl));
                    let loss_tol = if cl.len() == 1 { 1e-6 } else { tol };
                    assert!(
                        el <= loss_tol && eln <= 1e-6 && en <= 1e-6 && eg <= tol,
                        "{name} {reduction:?} {kind:?} f32: loss error {el:e}, gradient error \
                         {eg:e} (normwise {en:e}; CPU SIMD path: {simd})"
                    );
                    worst[0] = worst[0].max(el);
                    if cl.len() == 1 {
                        worst[4] = worst[4].max(el);
                    }
                    let slot = if simd { 2 } else { 1 };
                    worst[slot] = worst[slot].max(eg);
                    worst[3] = worst[3].max(en);

                    let emu = ml_kernel(&x, &y, cols, &cfg, &g);
                    let (cl, cg) = cpu_multilabel(cfg, &x, &y, cols, DType::F64);
                    let (el, eg) = (loss_err(&emu.loss, &cl), grad_err(&emu.grad, &cg));
                    assert!(
                        el <= 1e-12 && eg <= 1e-12,
                        "{name} {reduction:?} {kind:?} f64: loss error {el:e}, gradient error \
                         {eg:e}"
                    );
                    worst64[0] = worst64[0].max(el);
                    worst64[1] = worst64[1].max(eg);
                }
            }
        }
    }
    println!(
        "kernel transcription vs CPU kernel, worst relative error: f32 loss {:.2e} (reduced) / \
         {:.2e} (per element), f32 gradient {:.2e} (CPU libm path) / {:.2e} (CPU SIMD path) / \
         {:.2e} (normwise), f64 loss {:.2e} gradient {:.2e}",
        worst[4], worst[0], worst[1], worst[2], worst[3], worst64[0], worst64[1]
    );
}

#[test]
fn the_partial_sums_reduce_over_more_than_one_pass() {
    // More tiles than the partial-sum block has threads: each thread sums several partials.
    let g = geometry();
    let cols = 1000;
    let rows = (g.red_threads + 37) * g.ml_threads * g.ml_elems / cols + 1;
    let mut rng = Rng::new(11);
    let x = cuda_common::logits(rows * cols, &mut rng);
    let y = cuda_common::targets(TargetKind::Mixed, rows * cols, &mut rng);
    let cfg = AslConfig::default();
    let x32: Vec<f32> = to(&x);
    let y32: Vec<f32> = to(&y);
    let emu = ml_kernel(&x32, &y32, cols, &cfg, &g);
    let (cl, cg) = cpu_multilabel(cfg, &back(&x32), &back(&y32), cols, DType::F32);
    let (el, eg) = (
        rel(emu.loss[0] as f64, cl[0]),
        grad_err(&back(&emu.grad), &cg),
    );
    println!("{rows}x{cols}: loss error {el:e}, gradient error {eg:e}");
    assert!(el <= 1e-6 && eg <= 1e-6, "loss {el:e} grad {eg:e}");
}

#[test]
fn the_single_label_kernel_math_matches_the_cpu_kernel() {
    let g = geometry();
    let mut worst = [0f64; 4];
    for (rows, k) in [(6, 10), (4, 1000), (2, 9605)] {
        let mut rng = Rng::new(k as u64);
        let x: Vec<f64> = (0..rows * k)
            .map(|i| (rng.uniform() - 0.5) * if i % 7 == 0 { 60.0 } else { 8.0 })
            .collect();
        let classes: Vec<usize> = (0..rows).map(|_| rng.below(k)).collect();
        let t = Tensor::from_vec(
            classes.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            rows,
            &Device::Cpu,
        )
        .unwrap();
        for (name, base) in cuda_common::single_label_configs() {
            for reduction in cuda_common::REDUCTIONS {
                let cfg = SingleLabelConfig { reduction, ..base };
                // The exact reference: the CPU kernel in f64.
                let cpu = |dt: DType| {
                    let logits = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dt)
                        .unwrap();
                    let v = Var::from_tensor(&logits).unwrap();
                    let loss = AslSingleLabel::new(cfg).forward(v.as_tensor(), &t).unwrap();
                    let grads = loss.sum_all().unwrap().backward().unwrap();
                    (values(&loss), values(grads.get(&v).unwrap()))
                };
                let (cl, cg) = cpu(DType::F64);
                let emu = sl_kernel(&x, &classes, k, &cfg, &g);
                let (el, eg) = (loss_err(&emu.loss, &cl), grad_err(&emu.grad, &cg));
                assert!(
                    el <= 1e-12 && eg <= 1e-12,
                    "{name} {reduction:?} K={k} f64: loss {el:e} grad {eg:e}"
                );
                worst[2] = worst[2].max(el);
                worst[3] = worst[3].max(eg);
                // f32: against the f64 kernel on the same (f32-rounded) logits; the f32 CPU
                // kernel sums exp(x - max) sequentially in f32, the GPU in f64.
                let x32: Vec<f32> = to(&x);
                let emu = sl_kernel(&x32, &classes, k, &cfg, &g);
                let (el, eg) = (
                    loss_err(&back(&emu.loss), &cl),
                    grad_err(&back(&emu.grad), &cg),
                );
                assert!(
                    el <= 1e-5 && eg <= 1e-5,
                    "{name} {reduction:?} K={k} f32: loss {el:e} grad {eg:e}"
                );
                worst[0] = worst[0].max(el);
                worst[1] = worst[1].max(eg);
            }
        }
    }
    println!(
        "single-label transcription vs CPU kernel (f64), worst relative error: f32 loss {:.2e} \
         grad {:.2e}, f64 loss {:.2e} grad {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
}

// ---------------------------------------------------------------------------------------------
// asl_math.cuh compiled for the host, against the transcription.

const DRIVER: &str = r#"
#include "asl_math.cuh"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

template <typename T> static T get(FILE *f) {
    T v;
    if (fread(&v, sizeof v, 1, f) != 1) { fprintf(stderr, "short input\n"); exit(2); }
    return v;
}
template <typename T> static void put(FILE *f, T v) { fwrite(&v, sizeof v, 1, f); }

template <typename F> static void run(FILE *in, FILE *out) {
    const uint32_t ncfg = get<uint32_t>(in);
    std::vector<AslPrm<F>> prms(ncfg);
    for (auto &p : prms) {
        p.gamma_pos = get<F>(in);
        p.gamma_neg = get<F>(in);
        p.clip = get<F>(in);
        p.ln_eps = get<F>(in);
        p.focal = get<int32_t>(in) != 0;
        p.detach = get<int32_t>(in) != 0;
        p.gamma_pos_int = get<int32_t>(in);
        p.gamma_neg_int = get<int32_t>(in);
    }
    const uint32_t n = get<uint32_t>(in);
    std::vector<F> x(n), y(n);
    for (auto &v : x) v = get<F>(in);
    for (auto &v : y) v = get<F>(in);
    for (const auto &p : prms) {
        for (uint32_t i = 0; i < n; i++) {
            const AslPair<F> r = asl_element(x[i], y[i], p);
            put(out, r.v);
            put(out, r.d);
        }
    }
    const uint32_t m = get<uint32_t>(in);
    for (uint32_t i = 0; i < m; i++) {
        const bool is_t = get<int32_t>(in) != 0;
        const int32_t gpi = get<int32_t>(in);
        const int32_t gni = get<int32_t>(in);
        const F l = get<F>(in), p = get<F>(in), gp = get<F>(in), gn = get<F>(in);
        const AslPair<F> r = asl_sl_terms(is_t, l, p, gp, gn, gpi, gni);
        put(out, r.v);
        put(out, r.d);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    FILE *in = fopen(argv[1], "rb");
    FILE *out = fopen(argv[2], "wb");
    if (!in || !out) return 2;
    run<float>(in, out);
    run<double>(in, out);
    fclose(out);
    return 0;
}
"#;

/// Little-endian bytes of the values the driver reads, and the transcription's answers.
trait Bits: Float {
    fn push(self, out: &mut Vec<u8>);
    fn read(b: &[u8]) -> Self;
    fn bits(self) -> u64;
}
impl Bits for f32 {
    fn push(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
    fn read(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().expect("4 bytes"))
    }
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
}
impl Bits for f64 {
    fn push(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
    fn read(b: &[u8]) -> Self {
        f64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
    fn bits(self) -> u64 {
        self.to_bits()
    }
}

/// One single-label terms case: (is_target, l, p, gp, gn, gpi, gni).
type SlCase = (bool, f64, f64, f64, f64, i32, i32);

/// Writes the driver's input for compute type F; returns the expected output.
fn driver_case<F: Bits>(
    cfgs: &[AslConfig],
    x: &[f64],
    y: &[f64],
    sl: &[SlCase],
    input: &mut Vec<u8>,
) -> Vec<F> {
    let mut expected = Vec::new();
    input.extend((cfgs.len() as u32).to_le_bytes());
    let prms: Vec<Prm<F>> = cfgs.iter().map(Prm::new).collect();
    for p in &prms {
        for v in [p.gamma_pos, p.gamma_neg, p.clip, p.ln_eps] {
            v.push(input);
        }
        for v in [
            p.focal as i32,
            p.detach as i32,
            p.gamma_pos_int,
            p.gamma_neg_int,
        ] {
            input.extend(v.to_le_bytes());
        }
    }
    let (x, y): (Vec<F>, Vec<F>) = (to(x), to(y));
    input.extend((x.len() as u32).to_le_bytes());
    for &v in x.iter().chain(&y) {
        v.push(input);
    }
    for p in &prms {
        for (&xi, &yi) in x.iter().zip(&y) {
            let (l, d) = asl_element(xi, yi, p);
            expected.extend([l, d]);
        }
    }
    input.extend((sl.len() as u32).to_le_bytes());
    for &(is_t, l, p, gp, gn, gpi, gni) in sl {
        for v in [is_t as i32, gpi, gni] {
            input.extend(v.to_le_bytes());
        }
        let (l, p, gp, gn): (F, F, F, F) = (cast(l), cast(p), cast(gp), cast(gn));
        for v in [l, p, gp, gn] {
            v.push(input);
        }
        let (w, d) = asl_sl_terms(is_t, l, p, gp, gn, gpi, gni);
        expected.extend([w, d]);
    }
    expected
}

fn compare<F: Bits>(what: &str, got: &[u8], expected: &[F]) -> usize {
    let size = std::mem::size_of::<F>();
    let want_bytes = std::mem::size_of_val(expected);
    assert!(
        got.len() >= want_bytes,
        "{what}: the driver wrote {} bytes, expected {want_bytes}",
        got.len(),
    );
    for (i, (chunk, &want)) in got.chunks(size).zip(expected).enumerate() {
        let have = F::read(chunk);
        // Same bits, or both NaN (NaN payloads may differ between compilers).
        assert!(
            have.bits() == want.bits() || (have.is_nan() && want.is_nan()),
            "{what}: output {i} is {:?} in C++, {:?} in the transcription",
            have.to_f64(),
            want.to_f64()
        );
    }
    want_bytes
}

#[test]
fn the_cuda_header_compiled_for_the_host_equals_the_transcription() {
    let dir = std::env::temp_dir().join(format!("asl-cuda-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, exe) = (dir.join("driver.cpp"), dir.join("driver"));
    std::fs::write(&src, DRIVER).unwrap();
    if cxx::compile(&src, &[cxx::kernels_dir()], &exe).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    let mut rng = Rng::new(3);
    let n = 4000;
    let mut x = cuda_common::logits(n, &mut rng);
    // Boundaries: p exactly at the clip, huge and tiny logits, NaN and infinities.
    x.extend([
        0.0,
        -0.0,
        (0.05f64 / 0.95).ln(),
        88.0,
        -88.0,
        104.0,
        -104.0,
        1e-30,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    let extra = x.len() - n;
    let mut y = cuda_common::targets(TargetKind::Mixed, n, &mut rng);
    y.extend((0..extra).map(|i| [0.0, 1.0, 0.5][i % 3]));
    let cfgs: Vec<AslConfig> = cuda_common::multilabel_configs()
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let mut sl: Vec<SlCase> = Vec::new();
    for (_, c) in cuda_common::single_label_configs() {
        for _ in 0..200 {
            let l = -(rng.uniform() * 30.0).powi(2) / 10.0;
            let gpi = small_int(c.gamma_pos);
            let gni = small_int(c.gamma_neg);
            sl.push((true, l, l.exp(), c.gamma_pos, c.gamma_neg, gpi, gni));
            sl.push((false, l, l.exp(), c.gamma_pos, c.gamma_neg, gpi, gni));
        }
        sl.push((
            true,
            0.0,
            1.0,
            c.gamma_pos,
            c.gamma_neg,
            small_int(c.gamma_pos),
            -1,
        ));
    }

    let mut input = Vec::new();
    let e32 = driver_case::<f32>(&cfgs, &x, &y, &sl, &mut input);
    let e64 = driver_case::<f64>(&cfgs, &x, &y, &sl, &mut input);
    let (inp, outp) = (dir.join("in.bin"), dir.join("out.bin"));
    std::fs::write(&inp, &input).unwrap();
    let ran = std::process::Command::new(&exe)
        .arg(&inp)
        .arg(&outp)
        .status()
        .unwrap();
    assert!(ran.success(), "the driver failed");
    let out = std::fs::read(&outp).unwrap();
    let used = compare("f32", &out, &e32);
    let used = used + compare("f64", &out[used..], &e64);
    assert_eq!(used, out.len(), "the driver wrote more than expected");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "asl_math.cuh ({}) equals the transcription bit for bit: {} f32 and {} f64 values",
        cxx::compiler(),
        e32.len(),
        e64.len()
    );
}
