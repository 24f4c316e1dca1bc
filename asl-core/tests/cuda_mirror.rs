//! The CUDA kernels' math, checked on the CPU (no GPU, no `cuda` feature needed).
//!
//! 1. A Rust transcription of `kernels/asl_math.cuh` (the per-element formula) and of the
//!    launch geometry and reduction order of `kernels/asl.cu` (per-thread sums over a fixed tile,
//!    shuffle trees, the fixed-order partial sums; the geometry is read from the `.cu` file) is
//!    compared with the fused CPU kernel for every configuration, reduction and target kind.
//! 2. `asl_math.cuh` itself is compiled with the host C++ compiler (`$CXX`, else `c++`) and must
//!    agree bit for bit with the transcription (same libm, no FMA contraction): so the header the
//!    GPU runs is exactly the math checked in 1. Skipped, with a message, when no C++ compiler
//!    can be run; `ASL_REQUIRE_CXX=1` makes that a failure.
//!
//! What stays for a GPU (`tests/cuda.rs`): the device's own libm rounding, the dtype
//! conversions, and the launches themselves.

mod cuda_common;

use asl_core::{AslConfig, AslSingleLabel, AsymmetricLoss, Reduction, SingleLabelConfig};
use candle_core::{DType, Device, Tensor, Var};
use cuda_common::{grad_err, norm_err, rel, Rng, TargetKind};
use num_traits::Float;

// ---------------------------------------------------------------------------------------------
// The launch geometry, read from the kernel source.

const CU_SOURCE: &str = include_str!("../kernels/asl.cu");

fn define(name: &str) -> usize {
    let prefix = format!("#define {name} ");
    CU_SOURCE
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("asl.cu has no numeric #define {name}"))
}

struct Geometry {
    ml_threads: usize,
    ml_elems: usize,
    red_threads: usize,
    sl_threads: usize,
}

fn geometry() -> Geometry {
    Geometry {
        ml_threads: define("ASL_ML_THREADS"),
        ml_elems: define("ASL_ML_ELEMS"),
        red_threads: define("ASL_RED_THREADS"),
        sl_threads: define("ASL_SL_THREADS"),
    }
}

// ---------------------------------------------------------------------------------------------
// asl_math.cuh, transcribed.

/// `AslPrm<F>` as `cuda.rs` fills it (from `kernel::AslParams::new`).
#[derive(Clone, Copy, Debug)]
struct Prm<F> {
    gamma_pos: F,
    gamma_neg: F,
    clip: F,
    ln_eps: F,
    focal: bool,
    detach: bool,
    gamma_pos_int: i32,
    gamma_neg_int: i32,
}

fn small_int(g: f64) -> i32 {
    if g.fract() == 0.0 && (0.0..=64.0).contains(&g) {
        g as i32
    } else {
        -1
    }
}

fn cast<F: Float>(v: f64) -> F {
    F::from(v).expect("representable")
}

impl<F: Float> Prm<F> {
    fn new(cfg: &AslConfig) -> Self {
        Prm {
            gamma_pos: cast(cfg.gamma_pos),
            gamma_neg: cast(cfg.gamma_neg),
            clip: cast(cfg.clip),
            ln_eps: cast::<F>(cfg.eps).ln(),
            focal: cfg.gamma_pos > 0.0 || cfg.gamma_neg > 0.0,
            detach: cfg.detach_focal_weight,
            gamma_pos_int: small_int(cfg.gamma_pos),
            gamma_neg_int: small_int(cfg.gamma_neg),
        }
    }
}

fn asl_powi<F: Float>(mut b: F, mut n: i32) -> F {
    let mut r = F::one();
    loop {
        if n & 1 != 0 {
            r = r * b;
        }
        n /= 2;
        if n == 0 {
            break;
        }
        b = b * b;
    }
    r
}

fn asl_pow_known<F: Float>(b: F, g: F, gi: i32) -> F {
    if gi >= 0 {
        asl_powi(b, gi)
    } else {
        b.powf(g)
    }
}

fn asl_log_one_minus<F: Float>(q: F, p_m: F) -> F {
    if q > cast(0.75) {
        (-p_m).ln_1p()
    } else {
        q.ln()
    }
}

fn asl_clamp<F: Float>((v, d): (F, F), ln_eps: F) -> (F, F) {
    if v < ln_eps {
        (ln_eps, F::zero())
    } else {
        (v, d)
    }
}

fn asl_element<F: Float>(x: F, y: F, prm: &Prm<F>) -> (F, F) {
    let zero = F::zero();
    let one = F::one();
    let e = (-x.abs()).exp();
    let inv = one / (one + e);
    let x_pos = x >= zero;
    let p = if x_pos { inv } else { e * inv };
    let sn = if x_pos { e * inv } else { inv };
    let log_p = || {
        let l = e.ln_1p();
        if x_pos {
            -l
        } else {
            x - l
        }
    };
    let log_sn = || {
        let l = e.ln_1p();
        if x_pos {
            -x - l
        } else {
            -l
        }
    };
    let p_m = if prm.clip > zero {
        (p - prm.clip).max(zero)
    } else {
        p
    };
    let negative_log = || -> Option<(F, F)> {
        if prm.clip > zero {
            let q = sn + prm.clip;
            if q > one {
                return None;
            }
            return Some(asl_clamp(
                (asl_log_one_minus(q, p_m), -p * sn / q),
                prm.ln_eps,
            ));
        }
        Some(asl_clamp((log_sn(), -p), prm.ln_eps))
    };

    let (a, da, w, mut dw);
    if y == zero {
        let Some(neg) = negative_log() else {
            return (zero, zero);
        };
        (a, da) = neg;
        if !prm.focal {
            return (-a, -da);
        }
        if prm.gamma_neg == zero {
            (w, dw) = (one, zero);
        } else if p_m == zero {
            (w, dw) = (zero, zero);
        } else {
            w = asl_pow_known(p_m, prm.gamma_neg, prm.gamma_neg_int);
            dw = prm.gamma_neg * w * (p / p_m) * sn;
        }
    } else if y == one {
        (a, da) = asl_clamp((log_p(), sn), prm.ln_eps);
        if !prm.focal {
            return (-a, -da);
        }
        w = asl_pow_known(sn, prm.gamma_pos, prm.gamma_pos_int);
        dw = -prm.gamma_pos * p * w;
    } else {
        let pos = asl_clamp((log_p(), sn), prm.ln_eps);
        let neg = negative_log().unwrap_or((zero, zero));
        a = y * pos.0 + (one - y) * neg.0;
        da = y * pos.1 + (one - y) * neg.1;
        if !prm.focal {
            return (-a, -da);
        }
        let above_clip = prm.clip <= zero || p > prm.clip;
        let base = y * sn + (one - y) * p_m;
        let gamma = y * prm.gamma_pos + (one - y) * prm.gamma_neg;
        let dbase = -y * p * sn + if above_clip { (one - y) * p * sn } else { zero };
        w = base.powf(gamma);
        dw = if gamma == zero || dbase == zero || base == zero {
            zero
        } else {
            gamma * w * (dbase / base)
        };
    }
    if prm.detach {
        dw = zero;
    }
    (-a * w, -(da * w + a * dw))
}

#[allow(clippy::too_many_arguments)]
fn asl_sl_terms<F: Float>(is_target: bool, l: F, p: F, gp: F, gn: F, gpi: i32, gni: i32) -> (F, F) {
    let zero = F::zero();
    let one = F::one();
    if is_target {
        if gp == zero {
            return (one, zero);
        }
        let q = -l.exp_m1();
        let w = asl_pow_known(q, gp, gpi);
        let l_over_q = if q == zero { -one } else { l / q };
        return (w, -gp * p * w * l_over_q);
    }
    let w = asl_pow_known(p, gn, gni);
    (w, l * gn * w)
}

// ---------------------------------------------------------------------------------------------
// asl.cu's reductions and kernels, emulated.

/// `asl_warp_sum`: lane 0's value after the shuffle-down tree (offsets 16, 8, 4, 2, 1; a lane
/// whose source is out of range reads itself).
fn warp_sum(lanes: &[f64; 32]) -> f64 {
    let mut v = *lanes;
    let mut o = 16;
    while o > 0 {
        let old = v;
        for lane in 0..32 {
            let src = if lane + o < 32 {
                old[lane + o]
            } else {
                old[lane]
            };
            v[lane] = old[lane] + src;
        }
        o /= 2;
    }
    v[0]
}

/// `asl_block_sum` over one value per thread (a multiple of 32 threads).
fn block_sum(per_thread: &[f64]) -> f64 {
    assert_eq!(per_thread.len() % 32, 0);
    let mut lanes = [0f64; 32];
    for (w, chunk) in per_thread.chunks(32).enumerate() {
        lanes[w] = warp_sum(chunk.try_into().expect("32 lanes"));
    }
    warp_sum(&lanes)
}

/// `asl_block_max` (fmax ignores NaN, as the kernel's does; the result does not depend on the
/// order).
fn block_max<F: Float>(per_thread: &[F]) -> F {
    per_thread.iter().fold(F::neg_infinity(), |m, &v| m.max(v))
}

/// `asl_sum_partials_*`: thread t sums partials t, t + R, ... from 0.0, then the block tree.
fn sum_partials(partials: &[f64], red_threads: usize, scale: f64) -> f64 {
    let per_thread: Vec<f64> = (0..red_threads)
        .map(|t| {
            partials
                .iter()
                .skip(t)
                .step_by(red_threads)
                .fold(0.0, |acc, &v| acc + v)
        })
        .collect();
    block_sum(&per_thread) * scale
}

/// What `asl_ml_*` and `asl_sum_partials_*` produce: the loss (scalar or per element) and the
/// gradient, in the compute type.
struct MlOut<F> {
    loss: Vec<F>,
    grad: Vec<F>,
}

fn ml_kernel<F: Float>(x: &[F], y: &[F], cols: usize, cfg: &AslConfig, g: &Geometry) -> MlOut<F> {
    let n = x.len();
    let rows = n / cols;
    let prm = Prm::<F>::new(cfg);
    let scale = cfg.reduction.scale_for_test(rows, n);
    let grad_scale: F = cast(scale);
    let tile = g.ml_threads * g.ml_elems;
    let blocks = n.div_ceil(tile);
    let mut grad = vec![F::zero(); n];
    let mut per_el = vec![F::zero(); n];
    let mut partials = vec![0f64; blocks];
    for (b, partial) in partials.iter_mut().enumerate() {
        let mut acc = vec![0f64; g.ml_threads];
        for (t, acc) in acc.iter_mut().enumerate() {
            for k in 0..g.ml_elems {
                let i = b * tile + k * g.ml_threads + t;
                if i >= n {
                    continue;
                }
                let tv = y[i];
                let (l, d) = if tv >= F::zero() && tv <= F::one() {
                    asl_element(x[i], tv, &prm)
                } else {
                    (F::nan(), F::nan())
                };
                *acc += l.to_f64().expect("float");
                grad[i] = d * grad_scale;
                per_el[i] = l;
            }
        }
        *partial = block_sum(&acc);
    }
    let loss = if cfg.reduction == Reduction::None {
        per_el
    } else {
        vec![cast(sum_partials(&partials, g.red_threads, scale))]
    };
    MlOut { loss, grad }
}

/// The reduction's scale as `Reduction::scale` computes it (that one is crate-private).
trait ScaleForTest {
    fn scale_for_test(self, rows: usize, total: usize) -> f64;
}
impl ScaleForTest for Reduction {
    fn scale_for_test(self, rows: usize, total: usize) -> f64 {
        match self {
            Reduction::Sum | Reduction::None => 1.0,
            Reduction::Mean => 1.0 / total as f64,
            Reduction::BatchMean => 1.0 / rows as f64,
        }
    }
}

/// `asl_sl_*` and the partial sum: loss (scalar or per row) and gradient.
fn sl_kernel<F: Float>(
    x: &[F],
    classes: &[usize],
    k: usize,
    cfg: &SingleLabelConfig,
    g: &Geometry,
) -> MlOut<F> {
    let rows = classes.len();
    let scale = match cfg.reduction {
        Reduction::Mean | Reduction::BatchMean => 1.0 / rows as f64,
        Reduction::Sum | Reduction::None => 1.0,
    };
    let grad_scale: F = cast(scale);
    let (gp, gn): (F, F) = (cast(cfg.gamma_pos), cast(cfg.gamma_neg));
    let (gpi, gni) = (small_int(cfg.gamma_pos), small_int(cfg.gamma_neg));
    let s_target: F = cast(1.0 - cfg.eps + cfg.eps / k as f64);
    let s_other: F = cast(cfg.eps / k as f64);
    let th = g.sl_threads;
    let mut grad = vec![F::zero(); rows * k];
    let mut row_losses = vec![F::zero(); rows];
    for (row, &target) in classes.iter().enumerate() {
        let xr = &x[row * k..(row + 1) * k];
        let strided = |t: usize| (t..k).step_by(th);
        let m: Vec<F> = (0..th)
            .map(|t| strided(t).fold(F::neg_infinity(), |m, j| m.max(xr[j])))
            .collect();
        let max = block_max(&m);
        let se: Vec<f64> = (0..th)
            .map(|t| {
                strided(t).fold(0.0, |acc, j| {
                    acc + (xr[j] - max).exp().to_f64().expect("float")
                })
            })
            .collect();
        let sum_exp: F = cast(block_sum(&se));
        let lse = max + sum_exp.ln();
        let term = |j: usize| {
            let l = xr[j] - lse;
            let p = l.exp();
            let is_t = j == target;
            let s = if is_t { s_target } else { s_other };
            let (w, d) = asl_sl_terms(is_t, l, p, gp, gn, gpi, gni);
            (l, p, s, w, d)
        };
        let mut loss = vec![0f64; th];
        let mut c_sum = vec![0f64; th];
        for t in 0..th {
            for j in strided(t) {
                let (l, _, s, w, d) = term(j);
                if s != F::zero() {
                    loss[t] += (s * l * w).to_f64().expect("float");
                    c_sum[t] += (s * (w + d)).to_f64().expect("float");
                }
            }
        }
        let cs: F = cast(block_sum(&c_sum));
        for j in 0..k {
            let (_, p, s, w, d) = term(j);
            let cj = if s == F::zero() {
                F::zero()
            } else {
                s * (w + d)
            };
            grad[row * k + j] = -(cj - p * cs) * grad_scale;
        }
        row_losses[row] = -cast::<F>(block_sum(&loss));
    }
    let loss = if cfg.reduction == Reduction::None {
        row_losses
    } else {
        let partials: Vec<f64> = row_losses
            .iter()
            .map(|v| v.to_f64().expect("float"))
            .collect();
        vec![cast(sum_partials(&partials, g.red_threads, scale))]
    };
    MlOut { loss, grad }
}

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

/// The CPU kernel's loss and gradient (of the loss's sum, as the emulation's upstream is 1).
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

/// The largest error of the losses, relative to the largest loss value (per element for
/// `Reduction::None`, where many element losses are exactly or nearly 0).
fn loss_err(a: &[f64], b: &[f64]) -> f64 {
    if a.len() == 1 {
        rel(a[0], b[0])
    } else {
        grad_err(a, b)
    }
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
        "kernel emulation vs CPU kernel, worst relative error: f32 loss {:.2e} (reduced) / \
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
        "single-label emulation vs CPU kernel (f64), worst relative error: f32 loss {:.2e} \
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
    let kernels = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let (src, exe) = (dir.join("driver.cpp"), dir.join("driver"));
    std::fs::write(&src, DRIVER).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = std::process::Command::new(&cxx)
        .args([
            "-std=c++17",
            "-O2",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-I",
        ])
        .arg(&kernels)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output();
    let built = match built {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            assert!(
                std::env::var_os("ASL_REQUIRE_CXX").is_none(),
                "cannot run the C++ compiler {cxx:?}: {e}"
            );
            eprintln!("SKIPPED: cannot run the C++ compiler {cxx:?} ({e}); set CXX");
            return;
        }
    };
    assert!(
        built.status.success(),
        "{cxx} failed on asl_math.cuh:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );

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
        "asl_math.cuh ({cxx}) equals the transcription bit for bit: {} f32 and {} f64 values",
        e32.len(),
        e64.len()
    );
}
