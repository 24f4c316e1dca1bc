//! The transcription of `kernels/asl_math.cuh` and `kernels/asl.cu` in Rust: the per-element
//! math, and the launch geometry and reduction order (per-thread sums over a fixed tile, shuffle
//! trees, the fixed-order partial sums; the geometry is read from the `.cu` file).

use asl_core::{AslConfig, Reduction, SingleLabelConfig};
use num_traits::Float;
// ---------------------------------------------------------------------------------------------
// The launch geometry, read from the kernel source.

const CU_SOURCE: &str = include_str!("../../kernels/asl.cu");

pub fn define(name: &str) -> usize {
    let prefix = format!("#define {name} ");
    CU_SOURCE
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("asl.cu has no numeric #define {name}"))
}

pub struct Geometry {
    pub ml_threads: usize,
    pub ml_elems: usize,
    pub red_threads: usize,
    pub sl_threads: usize,
}

pub fn geometry() -> Geometry {
    Geometry {
        ml_threads: define("ASL_ML_THREADS"),
        ml_elems: define("ASL_ML_ELEMS"),
        red_threads: define("ASL_RED_THREADS"),
        sl_threads: define("ASL_SL_THREADS"),
    }
}

// ---------------------------------------------------------------------------------------------
// asl_math.cuh, transcribed.

/// `AslPrm<F>` as `cuda.rs` fills it (from `math::AslParams::new`).
#[derive(Clone, Copy, Debug)]
pub struct Prm<F> {
    pub gamma_pos: F,
    pub gamma_neg: F,
    pub clip: F,
    pub ln_eps: F,
    pub focal: bool,
    pub detach: bool,
    pub gamma_pos_int: i32,
    pub gamma_neg_int: i32,
}

pub fn small_int(g: f64) -> i32 {
    if g.fract() == 0.0 && (0.0..=64.0).contains(&g) {
        g as i32
    } else {
        -1
    }
}

pub fn cast<F: Float>(v: f64) -> F {
    F::from(v).expect("representable")
}

impl<F: Float> Prm<F> {
    pub fn new(cfg: &AslConfig) -> Self {
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

pub fn asl_powi<F: Float>(mut b: F, mut n: i32) -> F {
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

pub fn asl_pow_known<F: Float>(b: F, g: F, gi: i32) -> F {
    if gi >= 0 {
        asl_powi(b, gi)
    } else {
        b.powf(g)
    }
}

pub fn asl_log_one_minus<F: Float>(q: F, p_m: F) -> F {
    if q > cast(0.75) {
        (-p_m).ln_1p()
    } else {
        q.ln()
    }
}

pub fn asl_clamp<F: Float>((v, d): (F, F), ln_eps: F) -> (F, F) {
    if v < ln_eps {
        (ln_eps, F::zero())
    } else {
        (v, d)
    }
}

pub fn asl_element<F: Float>(x: F, y: F, prm: &Prm<F>) -> (F, F) {
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
pub fn asl_sl_terms<F: Float>(
    is_target: bool,
    l: F,
    p: F,
    gp: F,
    gn: F,
    gpi: i32,
    gni: i32,
) -> (F, F) {
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
// asl.cu's reductions and kernels, transcribed.

/// `asl_warp_reduce<AslSum>`: lane 0's value after the shuffle-down tree (offsets 16, 8, 4, 2,
/// 1; a lane whose source is out of range reads itself).
pub fn warp_sum(lanes: &[f64; 32]) -> f64 {
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
pub fn block_sum(per_thread: &[f64]) -> f64 {
    assert_eq!(per_thread.len() % 32, 0);
    let mut lanes = [0f64; 32];
    for (w, chunk) in per_thread.chunks(32).enumerate() {
        lanes[w] = warp_sum(chunk.try_into().expect("32 lanes"));
    }
    warp_sum(&lanes)
}

/// `asl_block_max` (fmax ignores NaN, as the kernel's does; the result does not depend on the
/// order).
pub fn block_max<F: Float>(per_thread: &[F]) -> F {
    per_thread.iter().fold(F::neg_infinity(), |m, &v| m.max(v))
}

/// `asl_sum_partials_*`: thread t sums partials t, t + R, ... from 0.0, then the block tree.
pub fn sum_partials(partials: &[f64], red_threads: usize, scale: f64) -> f64 {
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
pub struct MlOut<F> {
    pub loss: Vec<F>,
    pub grad: Vec<F>,
}

pub fn ml_kernel<F: Float>(
    x: &[F],
    y: &[F],
    cols: usize,
    cfg: &AslConfig,
    g: &Geometry,
) -> MlOut<F> {
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
pub trait ScaleForTest {
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
pub fn sl_kernel<F: Float>(
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
