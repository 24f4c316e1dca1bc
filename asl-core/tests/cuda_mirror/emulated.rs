//! `kernels/asl.cu` itself, every kernel, run on the CPU under a host emulation of CUDA's
//! execution model (`tests/cuda_emu/`: blocks of cooperative threads, barriers, warp shuffles;
//! f16/bf16 conversions with round-to-nearest-even), launched from the same plans
//! (`asl_core::cuda_launch`) that `src/cuda.rs` hands to the driver.
//!
//! Checked: every output buffer bit for bit against the Rust transcription of the kernels
//! (itself checked against the CPU kernel in `main.rs`), the first-bad-target flag, that every
//! argument has its parameter's exact size, that no kernel writes outside its buffers, and that
//! the results do not depend on the order the threads of a block run in.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use asl_core::cuda_launch::{self as plan, Arg, Launch, LossPlan};
use asl_core::{AslConfig, Reduction, SingleLabelConfig};
use candle_core::DType;
use half::{bf16, f16};
use num_traits::Float;

use super::cuda_common::{self, Rng, TargetKind};
use super::cxx;
use super::transcription::{self as tr, geometry};

// ---------------------------------------------------------------------------------------------
// The emulator: built once per test run, fed one request per sequence of launches.

/// The driver executable, built once (cached in the target dir under a hash of its sources and
/// the compiler); `None` when no C++ compiler can be run (skipped, with a message).
fn driver() -> Option<&'static PathBuf> {
    static DRIVER: OnceLock<Option<PathBuf>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            use std::hash::{Hash, Hasher};
            let emu = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_emu");
            let kernels = cxx::kernels_dir();
            let sources = [
                emu.join("driver.cpp"),
                emu.join("emu.h"),
                emu.join("include/cuda_fp16.h"),
                emu.join("include/cuda_bf16.h"),
                kernels.join("asl.cu"),
                kernels.join("asl_math.cuh"),
            ];
            let mut h = std::collections::hash_map::DefaultHasher::new();
            cxx::compiler().hash(&mut h);
            for s in &sources {
                std::fs::read(s)
                    .unwrap_or_else(|e| panic!("{}: {e}", s.display()))
                    .hash(&mut h);
            }
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let exe = dir.join(format!("asl-cuda-emu-{:016x}", h.finish()));
            if exe.is_file() {
                return Some(exe);
            }
            let tmp = dir.join(format!("asl-cuda-emu-build-{}", std::process::id()));
            let includes = [emu.join("include"), emu.clone(), kernels];
            cxx::compile(&sources[0], &includes, &tmp)?;
            std::fs::rename(&tmp, &exe).unwrap();
            Some(exe)
        })
        .as_ref()
}

/// How the threads of a block take turns between barriers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    Forward = 0,
    Reverse = 1,
    Shuffled = 2,
}

/// Host buffers and a sequence of launches over them (a buffer is its index).
#[derive(Default)]
struct Emu {
    /// (bytes, fill: 0 = the bytes, 1 = garbage 0xFF, 2 = zeros)
    bufs: Vec<(Vec<u8>, usize, u8)>,
    launches: Vec<Launch<usize>>,
}

impl Emu {
    fn input(&mut self, bytes: Vec<u8>) -> usize {
        let len = bytes.len();
        self.bufs.push((bytes, len, 0));
        self.bufs.len() - 1
    }

    /// An uninitialised output (`dev.alloc`): filled with garbage, which every element the
    /// kernel fails to write keeps.
    fn output(&mut self, len: usize) -> usize {
        self.bufs.push((Vec::new(), len, 1));
        self.bufs.len() - 1
    }

    /// `dev.alloc_zeros`.
    fn zeroed(&mut self, len: usize) -> usize {
        self.bufs.push((Vec::new(), len, 2));
        self.bufs.len() - 1
    }

    /// As `cuda.rs`'s `run`: a launch of 0 blocks is not made.
    fn launch(&mut self, l: Launch<usize>) {
        if l.blocks > 0 {
            self.launches.push(l);
        }
    }

    fn request(&self, order: Order, seed: u64) -> Vec<u8> {
        let mut r = b"ASLEMU1\0".to_vec();
        r.extend((order as u32).to_le_bytes());
        r.extend(seed.to_le_bytes());
        r.extend((self.bufs.len() as u32).to_le_bytes());
        for (bytes, len, fill) in &self.bufs {
            r.extend((*len as u64).to_le_bytes());
            r.push(*fill);
            if *fill == 0 {
                r.extend(bytes);
            }
        }
        r.extend((self.launches.len() as u32).to_le_bytes());
        for l in &self.launches {
            r.extend((l.kernel.len() as u32).to_le_bytes());
            r.extend(l.kernel.as_bytes());
            r.extend(l.blocks.to_le_bytes());
            r.extend(l.threads.to_le_bytes());
            r.extend((l.args.len() as u32).to_le_bytes());
            for a in &l.args {
                let value = |r: &mut Vec<u8>, b: &[u8]| {
                    r.push(2);
                    r.extend((b.len() as u32).to_le_bytes());
                    r.extend(b);
                };
                match a {
                    Arg::Buf(i) => {
                        r.push(0);
                        r.extend((*i as u32).to_le_bytes());
                    }
                    Arg::Null => r.push(1),
                    Arg::U64(v) => value(&mut r, &v.to_le_bytes()),
                    Arg::I32(v) => value(&mut r, &v.to_le_bytes()),
                    Arg::F32(v) => value(&mut r, &v.to_le_bytes()),
                    Arg::F64(v) => value(&mut r, &v.to_le_bytes()),
                }
            }
        }
        r
    }

    /// Runs the launches; every buffer's bytes after them, or the driver's error message.
    fn try_run(&self, order: Order, seed: u64) -> Option<Result<Vec<Vec<u8>>, String>> {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let exe = driver()?;
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let stem = format!("asl-cuda-emu-{}-{call}", std::process::id());
        let (req, resp) = (
            dir.join(format!("{stem}.in")),
            dir.join(format!("{stem}.out")),
        );
        std::fs::write(&req, self.request(order, seed)).unwrap();
        let out = std::process::Command::new(exe)
            .arg(&req)
            .arg(&resp)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&req);
        if !out.status.success() {
            let _ = std::fs::remove_file(&resp);
            return Some(Err(format!(
                "driver exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let bytes = std::fs::read(&resp).unwrap();
        let _ = std::fs::remove_file(&resp);
        let total: usize = self.bufs.iter().map(|b| b.1).sum();
        assert_eq!(bytes.len(), total, "driver output size");
        let mut rest = &bytes[..];
        Some(Ok(self
            .bufs
            .iter()
            .map(|&(_, len, _)| {
                let (b, r) = rest.split_at(len);
                rest = r;
                b.to_vec()
            })
            .collect()))
    }

    /// As `try_run`, panicking on a driver error.
    fn run(&self, order: Order) -> Option<Vec<Vec<u8>>> {
        self.try_run(order, 1)
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Values in each dtype's bytes.

fn size(dt: DType) -> usize {
    dt.size_in_bytes()
}

/// `v` (representable, or rounded to nearest) in `dt`'s little-endian bytes.
fn encode(dt: DType, v: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * size(dt));
    for &x in v {
        match dt {
            DType::U8 => out.push(x as i64 as u8),
            DType::U32 => out.extend((x as i64 as u32).to_le_bytes()),
            DType::I64 => out.extend((x as i64).to_le_bytes()),
            // Through f32: the values here are f32 results, which the kernel rounds from f32
            // (half's `from_f64` put some of them one ulp away).
            DType::F16 => out.extend(f16::from_f32(x as f32).to_le_bytes()),
            DType::BF16 => out.extend(bf16::from_f32(x as f32).to_le_bytes()),
            DType::F32 => out.extend((x as f32).to_le_bytes()),
            DType::F64 => out.extend(x.to_le_bytes()),
            other => panic!("no {other:?} here"),
        }
    }
    out
}

fn decode(dt: DType, b: &[u8]) -> Vec<f64> {
    b.chunks(size(dt))
        .map(|c| match dt {
            DType::U8 => c[0] as f64,
            DType::U32 => u32::from_le_bytes(c.try_into().unwrap()) as f64,
            DType::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            DType::F16 => f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
            DType::BF16 => bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
            DType::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            DType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
            other => panic!("no {other:?} here"),
        })
        .collect()
}

/// `v` rounded to `dt` and back.
fn round(dt: DType, v: &[f64]) -> Vec<f64> {
    decode(dt, &encode(dt, v))
}

/// Same value (same bits, so -0 != +0), or both NaN.
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Asserts `got` (bytes of `dt`) equals `want` (values representable in `dt`) element by
/// element.
fn assert_same(what: &str, dt: DType, got: &[u8], want: &[f64]) {
    let got = decode(dt, got);
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| !same(got[i], want[i])) {
        panic!(
            "{what}: element {i} is {:e} in the emulated kernel, {:e} in the transcription",
            got[i], want[i]
        );
    }
}

/// Every dtype the kernels have an instance for, as the plans accept them.
const LOGITS: &[DType] = plan::LOGITS.0;
const TARGETS: &[DType] = plan::TARGETS.0;
const CLASSES: &[DType] = plan::CLASSES.0;

fn compute(logits: DType) -> DType {
    if logits == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

// ---------------------------------------------------------------------------------------------
// Multi-label.

/// A loss's forward pass as `cuda.rs`'s `forward` makes it, on inputs already in their dtypes'
/// bytes. Returns the buffers' indices: (loss, grad, bad).
fn loss_launches(
    emu: &mut Emu,
    p: &LossPlan,
    logits: DType,
    (x, t): (Vec<u8>, Vec<u8>),
    want_grad: bool,
) -> (usize, Option<usize>, usize) {
    assert_eq!(p.compute(), compute(logits));
    let xb = emu.input(x);
    let tb = emu.input(t);
    let grad = want_grad.then(|| emu.output(p.grad_len() * size(logits)));
    let (per_item, len) = p.losses();
    let fsize = size(p.compute());
    let losses = emu.output(len * if per_item { fsize } else { 8 });
    let bad = emu.zeroed(8);
    emu.launch(p.launch(xb, tb, grad, losses, bad).unwrap());
    let loss = if per_item {
        losses
    } else {
        let loss = emu.output(fsize);
        emu.launch(p.sum(losses, loss));
        loss
    };
    (loss, grad, bad)
}

/// One multi-label forward pass. Returns the buffers' indices: (loss, grad, bad).
fn ml_launches(
    emu: &mut Emu,
    cfg: &AslConfig,
    (ldt, tdt): (DType, DType),
    (rows, cols): (usize, usize),
    (x, y): (&[f64], &[f64]),
    want_grad: bool,
) -> (usize, Option<usize>, usize) {
    let p = LossPlan::multilabel(cfg, ldt, tdt, rows, cols).unwrap();
    let inputs = (encode(ldt, x), encode(tdt, y));
    loss_launches(emu, &p, ldt, inputs, want_grad)
}

/// The transcription's loss and gradient for the same case (gradient rounded to the logits'
/// dtype, as the kernel stores it).
fn ml_expected<F: Float>(
    cfg: &AslConfig,
    ldt: DType,
    cols: usize,
    x: &[f64],
    y: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let xs: Vec<F> = x.iter().map(|&v| F::from(v).unwrap()).collect();
    let ys: Vec<F> = y.iter().map(|&v| F::from(v).unwrap()).collect();
    let out = tr::ml_kernel(&xs, &ys, cols, cfg, &geometry());
    let back = |v: &[F]| -> Vec<f64> { v.iter().map(|a| a.to_f64().unwrap()).collect() };
    (back(&out.loss), round(ldt, &back(&out.grad)))
}

struct MlCase {
    cfg: AslConfig,
    ldt: DType,
    tdt: DType,
    rows: usize,
    cols: usize,
    want_grad: bool,
    /// A target out of range at this index.
    bad_at: Option<usize>,
}

/// Inputs of a case: logits rounded to their dtype, targets (hard for integer dtypes) rounded
/// to theirs, with the bad target in place.
fn ml_inputs(c: &MlCase, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let n = c.rows * c.cols;
    let mut rng = Rng::new(seed);
    let x = round(c.ldt, &cuda_common::logits(n, &mut rng));
    let kind = if c.tdt.is_float() {
        TargetKind::Mixed
    } else {
        TargetKind::Hard
    };
    let mut y = round(c.tdt, &cuda_common::targets(kind, n, &mut rng));
    if let Some(i) = c.bad_at {
        y[i] = match c.tdt {
            DType::I64 => -1.0,
            DType::F32 | DType::F64 => f64::NAN,
            _ => 2.0,
        };
    }
    (x, y)
}

/// Runs a case in the emulator and checks it against the transcription; `None` when skipped.
fn ml_check(c: &MlCase, seed: u64, orders: &[Order]) -> Option<()> {
    let (x, y) = ml_inputs(c, seed);
    let mut emu = Emu::default();
    let dims = (c.rows, c.cols);
    let (loss, grad, bad) = ml_launches(
        &mut emu,
        &c.cfg,
        (c.ldt, c.tdt),
        dims,
        (&x, &y),
        c.want_grad,
    );
    let (want_loss, want_grad) = if compute(c.ldt) == DType::F64 {
        ml_expected::<f64>(&c.cfg, c.ldt, c.cols, &x, &y)
    } else {
        ml_expected::<f32>(&c.cfg, c.ldt, c.cols, &x, &y)
    };
    let what = format!(
        "asl_ml {:?} logits, {:?} targets, {}x{}, {:?} (gamma+ {} gamma- {} clip {} detach {}), \
         grad {}",
        c.ldt,
        c.tdt,
        c.rows,
        c.cols,
        c.cfg.reduction,
        c.cfg.gamma_pos,
        c.cfg.gamma_neg,
        c.cfg.clip,
        c.cfg.detach_focal_weight,
        c.want_grad
    );
    let first = emu.run(orders[0])?;
    assert_same(
        &format!("{what}: loss"),
        compute(c.ldt),
        &first[loss],
        &want_loss,
    );
    if let Some(g) = grad {
        assert_same(&format!("{what}: gradient"), c.ldt, &first[g], &want_grad);
    }
    let flag = u64::from_le_bytes(first[bad].as_slice().try_into().unwrap());
    assert_eq!(plan::first_bad(flag), c.bad_at, "{what}: first bad target");
    for &order in &orders[1..] {
        let again = emu.run(order)?;
        assert!(
            again == first,
            "{what}: other results with the threads in {order:?} order"
        );
    }
    Some(())
}

#[test]
fn every_multilabel_kernel_runs_as_transcribed() {
    // 5015 elements: three tiles of the multi-label kernel, the last one partial.
    let (rows, cols) = (5, 1003);
    let configs = cuda_common::multilabel_configs();
    let mut cases = 0;
    for (li, &ldt) in LOGITS.iter().enumerate() {
        for (ti, &tdt) in TARGETS.iter().enumerate() {
            let k = li * TARGETS.len() + ti;
            let cfg = AslConfig {
                reduction: cuda_common::REDUCTIONS[k % 4],
                ..configs[k % configs.len()].1
            };
            let c = MlCase {
                cfg,
                ldt,
                tdt,
                rows,
                cols,
                want_grad: true,
                bad_at: None,
            };
            if ml_check(&c, k as u64, &[Order::Forward]).is_none() {
                return;
            }
            cases += 1;
        }
    }
    println!(
        "{cases} (logits, targets) dtype pairs of asl_ml_* emulated, same bits as transcribed"
    );
}

#[test]
fn multilabel_configs_reductions_and_bad_targets_run_as_transcribed() {
    let mut cases = 0;
    for ldt in [DType::F32, DType::F64, DType::BF16] {
        for (ci, (_, base)) in cuda_common::multilabel_configs().into_iter().enumerate() {
            for (ri, reduction) in cuda_common::REDUCTIONS.into_iter().enumerate() {
                let cfg = AslConfig { reduction, ..base };
                let k = ci * 4 + ri;
                let c = MlCase {
                    cfg,
                    ldt,
                    tdt: [DType::F32, DType::U8, DType::F64, DType::I64][ri],
                    rows: 3,
                    cols: 700,
                    // Loss only (an evaluation pass) now and then.
                    want_grad: k % 3 != 2,
                    // A bad target in the third tile now and then.
                    bad_at: (k % 5 == 1).then_some(2047 + k),
                };
                if ml_check(&c, 100 + k as u64, &[Order::Forward]).is_none() {
                    return;
                }
                cases += 1;
            }
        }
    }
    println!("{cases} multi-label configurations emulated, same bits as transcribed");
}

#[test]
fn results_do_not_depend_on_the_order_threads_run_in() {
    let base = cuda_common::multilabel_configs()[0].1;
    for (reduction, bad_at) in [(Reduction::Mean, None), (Reduction::Sum, Some(4000))] {
        let c = MlCase {
            cfg: AslConfig { reduction, ..base },
            ldt: DType::F32,
            tdt: DType::F32,
            rows: 4,
            cols: 1003,
            want_grad: true,
            bad_at,
        };
        let orders = [Order::Forward, Order::Reverse, Order::Shuffled];
        if ml_check(&c, 5, &orders).is_none() {
            return;
        }
    }
    let cfg = SingleLabelConfig::default();
    for order in [Order::Reverse, Order::Shuffled] {
        if sl_check(&cfg, DType::F32, DType::U32, (3, 1000), &[1], 9, order).is_none() {
            return;
        }
    }
}

#[test]
fn the_partial_sum_kernel_runs_as_transcribed() {
    // More partials than the block has threads: each thread sums several, in order.
    let count = 3 * plan::RED_THREADS as usize + 17;
    let mut rng = Rng::new(21);
    let partials: Vec<f64> = (0..count).map(|_| (rng.uniform() - 0.3) * 1e3).collect();
    for (scale, f64_out) in [(1.0, false), (1.0 / 7.0, true), (0.5, false)] {
        let mut emu = Emu::default();
        let pb = emu.input(encode(DType::F64, &partials));
        let want = tr::sum_partials(&partials, geometry().red_threads, scale);
        let dt = if f64_out { DType::F64 } else { DType::F32 };
        let out = emu.output(size(dt));
        emu.launch(plan::sum_partials(dt, pb, count, scale, out));
        let Some(got) = emu.run(Order::Forward) else {
            return;
        };
        assert_same("asl_sum_partials", dt, &got[out], &round(dt, &[want]));
    }
}

// ---------------------------------------------------------------------------------------------
// Single-label.

/// One single-label forward pass as `cuda.rs` makes it, checked against the transcription.
/// `bad_rows` get a class out of range.
fn sl_check(
    cfg: &SingleLabelConfig,
    ldt: DType,
    cdt: DType,
    (rows, k): (usize, usize),
    bad_rows: &[usize],
    seed: u64,
    order: Order,
) -> Option<()> {
    let mut rng = Rng::new(seed);
    let x: Vec<f64> = (0..rows * k)
        .map(|i| (rng.uniform() - 0.5) * if i % 7 == 0 { 60.0 } else { 8.0 })
        .collect();
    let x = round(ldt, &x);
    // u8 holds classes up to 255 only.
    let classes_max = if cdt == DType::U8 { k.min(256) } else { k };
    let mut classes: Vec<usize> = (0..rows).map(|_| rng.below(classes_max)).collect();
    let mut t: Vec<f64> = classes.iter().map(|&c| c as f64).collect();
    for &r in bad_rows {
        assert!(cdt != DType::U8 || k < 256, "no bad u8 class for k = {k}");
        t[r] = if cdt == DType::I64 { -3.0 } else { k as f64 };
        // The transcription has no notion of a bad class: any class stands in, and the row is
        // expected as NaN below.
        classes[r] = 0;
    }
    let mut emu = Emu::default();
    let p = LossPlan::single_label(cfg, ldt, cdt, rows, k).unwrap();
    let inputs = (encode(ldt, &x), encode(cdt, &t));
    let (loss, grad, bad) = loss_launches(&mut emu, &p, ldt, inputs, true);
    let grad = grad.expect("wanted");
    let per_row = p.losses().0;
    let f64c = p.compute() == DType::F64;

    let g = geometry();
    let (mut want_loss, mut want_grad) = if f64c {
        let out = tr::sl_kernel(&x, &classes, k, cfg, &g);
        (out.loss, out.grad)
    } else {
        let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let out = tr::sl_kernel(&xs, &classes, k, cfg, &g);
        let back = |v: &[f32]| -> Vec<f64> { v.iter().map(|&a| a as f64).collect() };
        (back(&out.loss), back(&out.grad))
    };
    for &r in bad_rows {
        want_grad[r * k..(r + 1) * k].fill(f64::NAN);
        let i = if per_row { r } else { 0 };
        want_loss[i] = f64::NAN;
    }
    let want_grad = round(ldt, &want_grad);

    let what = format!(
        "asl_sl {ldt:?} logits, {cdt:?} classes, {rows}x{k}, {:?} (gamma+ {} gamma- {} eps {})",
        cfg.reduction, cfg.gamma_pos, cfg.gamma_neg, cfg.eps
    );
    let got = emu.run(order)?;
    assert_same(
        &format!("{what}: loss"),
        compute(ldt),
        &got[loss],
        &want_loss,
    );
    assert_same(&format!("{what}: gradient"), ldt, &got[grad], &want_grad);
    let flag = u64::from_le_bytes(got[bad].as_slice().try_into().unwrap());
    assert_eq!(
        plan::first_bad(flag),
        bad_rows.iter().copied().min(),
        "{what}: first bad row"
    );
    Some(())
}

#[test]
fn every_single_label_kernel_runs_as_transcribed() {
    let configs = cuda_common::single_label_configs();
    let mut cases = 0;
    for (li, &ldt) in LOGITS.iter().enumerate() {
        for (ci, &cdt) in CLASSES.iter().enumerate() {
            for (si, shape) in [(6, 10), (3, 1000), (2, 9605)].into_iter().enumerate() {
                let k = (li * CLASSES.len() + ci) * 3 + si;
                let cfg = SingleLabelConfig {
                    reduction: cuda_common::REDUCTIONS[k % 4],
                    ..configs[k % configs.len()].1
                };
                // A bad class in some row now and then.
                let bad: &[usize] = if k % 4 == 1 && (cdt != DType::U8 || shape.1 < 256) {
                    &[1]
                } else {
                    &[]
                };
                if sl_check(&cfg, ldt, cdt, shape, bad, k as u64, Order::Forward).is_none() {
                    return;
                }
                cases += 1;
            }
        }
    }
    println!("{cases} single-label cases of asl_sl_* emulated, same bits as transcribed");
}

// ---------------------------------------------------------------------------------------------
// Chaining the upstream gradient.

/// `asl_scale_*` in place on a gradient of `dims`, against the same product on the host.
fn chain_check(
    reduction: Reduction,
    gdt: DType,
    dims: &[usize],
    up_dims: &[usize],
    up_value: Option<f64>,
) -> Option<()> {
    let n: usize = dims.iter().product();
    let m: usize = up_dims.iter().product();
    let mut rng = Rng::new(n as u64);
    let g = round(
        gdt,
        &(0..n).map(|_| rng.uniform() - 0.5).collect::<Vec<_>>(),
    );
    let sdt = compute(gdt);
    let up = round(
        sdt,
        &(0..m)
            .map(|_| up_value.unwrap_or_else(|| rng.uniform() * 4.0 - 1.0))
            .collect::<Vec<_>>(),
    );
    let p = plan::Chain::new(reduction, gdt, dims, sdt, up_dims).unwrap();
    let mut emu = Emu::default();
    let gb = emu.input(encode(gdt, &g));
    let ub = emu.input(encode(sdt, &up));
    emu.launch(p.launch(gb, ub).unwrap());
    // The kernel: (S)g * up, rounded to S, then to the gradient's dtype.
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let u = i.checked_div(p.div).map_or(up[0], |row| up[row]);
            if sdt == DType::F64 {
                g[i] * u
            } else {
                (g[i] as f32 * u as f32) as f64
            }
        })
        .collect();
    let got = emu.run(Order::Forward)?;
    assert_same(
        &format!("asl_scale {gdt:?} {dims:?} by {up_dims:?} ({reduction:?})"),
        gdt,
        &got[gb],
        &round(gdt, &want),
    );
    Some(())
}

type ChainCase = (Reduction, &'static [usize], &'static [usize], Option<f64>);

#[test]
fn the_chaining_kernels_run_as_computed_on_the_host() {
    for &gdt in LOGITS {
        // (reduction, gradient dims, upstream dims, upstream value or random)
        let cases: [ChainCase; 4] = [
            (Reduction::Mean, &[37, 101], &[], None),
            (Reduction::Sum, &[37, 101], &[1], Some(1.0)),
            (Reduction::None, &[37, 101], &[37, 101], None),
            (Reduction::None, &[37, 101], &[37], None),
        ];
        for (reduction, dims, up, v) in cases {
            if chain_check(reduction, gdt, dims, up, v).is_none() {
                return;
            }
        }
    }
    // More elements than the grid has threads: the grid-stride loop comes round again.
    let rows = plan::CHAIN_MAX_BLOCKS + 3;
    let cols = plan::CHAIN_THREADS as usize;
    chain_check(Reduction::None, DType::BF16, &[rows, cols], &[rows], None);
}

// ---------------------------------------------------------------------------------------------
// The checks themselves can fail.

/// A correct multi-label launch, for the tests below to break.
fn ml_sample() -> (Emu, AslConfig) {
    let cfg = AslConfig::default();
    let mut emu = Emu::default();
    let x = vec![0.5; 3000];
    let y = vec![1.0; 3000];
    ml_launches(
        &mut emu,
        &cfg,
        (DType::F32, DType::F32),
        (3, 1000),
        (&x, &y),
        true,
    );
    (emu, cfg)
}

#[test]
fn the_emulator_rejects_wrong_argument_sizes_and_out_of_bounds_writes() {
    let (emu, _) = ml_sample();
    let Some(ok) = emu.try_run(Order::Forward, 1) else {
        return;
    };
    assert!(ok.is_ok(), "the sample launch fails: {:?}", ok.err());

    // The element count pushed as 32 bits instead of 64.
    let (mut emu, _) = ml_sample();
    emu.launches[0].args[2] = Arg::I32(3000);
    let err = emu.try_run(Order::Forward, 1).unwrap().unwrap_err();
    assert!(err.contains("argument 2 has 4 bytes"), "{err}");

    // One argument missing.
    let (mut emu, _) = ml_sample();
    emu.launches[0].args.pop();
    let err = emu.try_run(Order::Forward, 1).unwrap().unwrap_err();
    assert!(err.contains("arguments, the kernel has"), "{err}");

    // The gradient buffer one element short.
    let (mut emu, _) = ml_sample();
    let Arg::Buf(grad) = emu.launches[0].args[12] else {
        panic!("argument 12 is the gradient buffer");
    };
    emu.bufs[grad].1 -= 4;
    let err = emu.try_run(Order::Forward, 1).unwrap().unwrap_err();
    assert!(err.contains("wrote outside buffer"), "{err}");

    // A kernel that does not exist.
    let (mut emu, _) = ml_sample();
    emu.launches[0].kernel = "asl_ml_f32_i32".into();
    let err = emu.try_run(Order::Forward, 1).unwrap().unwrap_err();
    assert!(err.contains("no kernel"), "{err}");
}
