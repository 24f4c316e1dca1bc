//! The launches of the CUDA kernels in `kernels/asl.cu`, described without CUDA: which kernel,
//! how many blocks and threads, which buffers of what size, and every argument in the kernel's
//! order.
//!
//! `cuda.rs` (feature `cuda`) allocates the buffers these plans ask for and pushes the arguments
//! to the driver as they come; `tests/cuda_mirror` runs the very same launches on the CPU, with
//! `asl.cu` compiled for the host under a small CUDA emulation (blocks of cooperative threads,
//! barriers, warp shuffles), and checks every output buffer. So the host side of the CUDA path
//! (kernel names, argument order and types, null pointers, grid sizes, buffer sizes) is tested on
//! every machine, GPU or not.
//!
//! Not a stable API: the module is private, and public (hidden from the docs) only with the
//! `launch-plans` feature, which exists for that test (see `Cargo.toml`).

use std::convert::Infallible;

use candle_core::{DType, Result};

use crate::config::{AslConfig, Reduction, SingleLabelConfig};
use crate::dtype::compute_dtype;
use crate::error::AslError;
use crate::math::{small_int, AslParams, Compute};

/// `ASL_ML_THREADS` and `ASL_ML_ELEMS` in `asl.cu` (a test checks they agree): a block of the
/// multi-label kernel covers `ML_THREADS * ML_ELEMS` consecutive elements.
pub const ML_THREADS: u32 = 256;
pub const ML_ELEMS: usize = 8;
pub const ML_TILE: usize = ML_THREADS as usize * ML_ELEMS;
/// `ASL_RED_THREADS`: the one block that sums the partials.
pub const RED_THREADS: u32 = 1024;
/// `ASL_SL_THREADS`: one block per row of the single-label kernel.
pub const SL_THREADS: u32 = 256;
/// `ASL_CHAIN_THREADS`, and the most blocks a grid-stride chaining kernel gets.
pub const CHAIN_THREADS: u32 = 256;
pub const CHAIN_MAX_BLOCKS: usize = 1 << 16;

/// One kernel argument, as `cuLaunchKernel` takes it: a buffer (a device pointer), a null
/// pointer, or a value of the parameter's exact type.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg<B> {
    Buf(B),
    Null,
    U64(u64),
    I32(i32),
    F32(f32),
    F64(f64),
}

/// One kernel launch: a one-dimensional grid of `blocks` blocks of `threads` threads. A launch
/// of 0 blocks (empty inputs) is not made (the driver rejects an empty grid); its kernel would
/// have had nothing to do.
#[derive(Clone, Debug)]
pub struct Launch<B> {
    pub kernel: String,
    pub blocks: u32,
    pub threads: u32,
    pub args: Vec<Arg<B>>,
}

/// The compute types of the kernels: f32 for f16/bf16/f32 logits, f64 for f64 (the plans pick
/// it from the logits' dtype, as the CPU kernel does).
trait Real: Compute {
    fn arg<B>(self) -> Arg<B>;
}
impl Real for f32 {
    fn arg<B>(self) -> Arg<B> {
        Arg::F32(self)
    }
}
impl Real for f64 {
    fn arg<B>(self) -> Arg<B> {
        Arg::F64(self)
    }
}

/// Dtypes a kernel has an instance for, and how an error names them.
pub type Accepted = (&'static [DType], &'static str);

pub const LOGITS: Accepted = (
    &[DType::F16, DType::BF16, DType::F32, DType::F64],
    "f16, bf16, f32, f64",
);
pub const TARGETS: Accepted = (
    &[
        DType::U8,
        DType::U32,
        DType::I64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ],
    "u8, u32, i64, f16, bf16, f32, f64",
);
pub const CLASSES: Accepted = (&[DType::U8, DType::U32, DType::I64], "u8, u32, i64");
pub const UPSTREAM: Accepted = (&[DType::F32, DType::F64], "f32, f64");

/// The error for a dtype outside `accepted`, or `Ok`. The kernels' name suffix of a dtype is
/// `DType::as_str`.
fn check_dtype(dtype: DType, what: &'static str, accepted: Accepted) -> Result<()> {
    if accepted.0.contains(&dtype) {
        Ok(())
    } else {
        Err(AslError::DType {
            what,
            dtype,
            accepted: accepted.1,
        }
        .into())
    }
}

/// A grid size the driver takes.
fn grid(blocks: usize) -> Result<u32> {
    u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            candle_core::Error::msg(format!("ASL CUDA: {blocks} blocks exceed the grid limit"))
        })
}

/// The buffer a kernel records its first bad target in holds `!index` (0: none).
pub fn first_bad(flag: u64) -> Option<usize> {
    (flag != 0).then_some(!flag as usize)
}

/// `asl_sum_partials_*`: one block sums `count` f64 partials (buffer `partials`) in a fixed
/// order and writes `(compute)(sum * scale)` to `loss` (one value of the compute dtype, f32 or
/// f64).
pub fn sum_partials<B>(
    compute: DType,
    partials: B,
    count: usize,
    scale: f64,
    loss: B,
) -> Launch<B> {
    Launch {
        kernel: format!("asl_sum_partials_{}", compute.as_str()),
        blocks: 1,
        threads: RED_THREADS,
        args: vec![
            Arg::Buf(partials),
            Arg::U64(count as u64),
            Arg::F64(scale),
            Arg::Buf(loss),
        ],
    }
}

/// A forward pass of one of the two losses: its kernel takes (logits, targets, size, the loss's
/// scalars, gradient or null, per-item losses or null, partials or null, bad flag), and a
/// reduced loss is then summed from the partials by [`sum_partials`].
#[derive(Clone, Debug)]
pub struct LossPlan {
    kernel: String,
    blocks: usize,
    threads: u32,
    compute: DType,
    /// The kernel's size argument (elements, or classes per row).
    size: usize,
    /// The loss's scalars, in the compute type.
    scalars: Vec<Arg<Infallible>>,
    /// The gradient's elements.
    n: usize,
    /// `Reduction::None`.
    per_item: bool,
    /// Per-item losses, or partials.
    losses: usize,
    /// The reduction's scale.
    scale: f64,
}

impl LossPlan {
    /// The multi-label loss over `[rows, cols]` logits.
    pub fn multilabel(
        cfg: &AslConfig,
        logits: DType,
        targets: DType,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        check_dtype(logits, "ASL logits", LOGITS)?;
        check_dtype(targets, "ASL targets", TARGETS)?;
        let n = rows * cols;
        let blocks = n.div_ceil(ML_TILE);
        let per_item = cfg.reduction == Reduction::None;
        let scale = cfg.reduction.scale(rows, n);
        let compute = compute_dtype(logits);
        /// `asl_ml_*`'s scalars: the loss's parameters in the compute type, the gradient scale.
        fn scalars<F: Real>(cfg: &AslConfig, scale: f64) -> Vec<Arg<Infallible>> {
            let prm = AslParams::<F>::new(cfg);
            vec![
                prm.gamma_pos.arg(),
                prm.gamma_neg.arg(),
                prm.clip.arg(),
                prm.ln_eps.arg(),
                Arg::I32(prm.focal as i32),
                Arg::I32(prm.detach as i32),
                Arg::I32(prm.gamma_pos_int.unwrap_or(-1)),
                Arg::I32(prm.gamma_neg_int.unwrap_or(-1)),
                F::from_f64(scale).arg(),
            ]
        }
        Ok(LossPlan {
            kernel: format!("asl_ml_{}_{}", logits.as_str(), targets.as_str()),
            blocks,
            threads: ML_THREADS,
            compute,
            size: n,
            scalars: if compute == DType::F64 {
                scalars::<f64>(cfg, scale)
            } else {
                scalars::<f32>(cfg, scale)
            },
            n,
            per_item,
            // One partial per block.
            losses: if per_item { n } else { blocks },
            scale,
        })
    }

    /// The single-label loss over `[rows, k]` logits: one block per row.
    pub fn single_label(
        cfg: &SingleLabelConfig,
        logits: DType,
        targets: DType,
        rows: usize,
        k: usize,
    ) -> Result<Self> {
        check_dtype(logits, "single-label ASL logits", LOGITS)?;
        check_dtype(targets, "single-label ASL targets (class indices)", CLASSES)?;
        let scale = cfg.scale(rows);
        let compute = compute_dtype(logits);
        /// `asl_sl_*`'s scalars: the focusing parameters, the label-smoothed target weights (as
        /// single_label_row computes them) and the gradient scale.
        fn scalars<F: Real>(cfg: &SingleLabelConfig, k: f64, scale: f64) -> Vec<Arg<Infallible>> {
            vec![
                F::from_f64(cfg.gamma_pos).arg(),
                F::from_f64(cfg.gamma_neg).arg(),
                Arg::I32(small_int(cfg.gamma_pos).unwrap_or(-1)),
                Arg::I32(small_int(cfg.gamma_neg).unwrap_or(-1)),
                F::from_f64(1.0 - cfg.eps + cfg.eps / k).arg(),
                F::from_f64(cfg.eps / k).arg(),
                F::from_f64(scale).arg(),
            ]
        }
        Ok(LossPlan {
            kernel: format!("asl_sl_{}_{}", logits.as_str(), targets.as_str()),
            blocks: rows,
            threads: SL_THREADS,
            compute,
            size: k,
            scalars: if compute == DType::F64 {
                scalars::<f64>(cfg, k as f64, scale)
            } else {
                scalars::<f32>(cfg, k as f64, scale)
            },
            n: rows * k,
            per_item: cfg.reduction == Reduction::None,
            // One loss or one partial per row.
            losses: rows,
            scale,
        })
    }

    /// The dtype the kernel computes in and writes the losses in (f32, or f64 for f64 logits).
    pub fn compute(&self) -> DType {
        self.compute
    }

    /// Elements of the gradient (logits dtype), as many as the logits.
    pub fn grad_len(&self) -> usize {
        self.n
    }

    /// The losses the kernel writes: `(true, n)` per-item losses of the compute dtype for
    /// `Reduction::None`, else `(false, n)` f64 partial sums.
    pub fn losses(&self) -> (bool, usize) {
        (self.per_item, self.losses)
    }

    /// The kernel's launch. Buffers: logits, targets, the gradient when it is wanted, the
    /// losses (as [`LossPlan::losses`] says), the bad-target flag (one u64, zeroed).
    pub fn launch<B>(&self, x: B, t: B, grad: Option<B>, losses: B, bad: B) -> Result<Launch<B>> {
        let mut args = vec![Arg::Buf(x), Arg::Buf(t), Arg::U64(self.size as u64)];
        args.extend(self.scalars.iter().map(|a| match *a {
            Arg::Buf(never) => match never {},
            Arg::Null => Arg::Null,
            Arg::U64(v) => Arg::U64(v),
            Arg::I32(v) => Arg::I32(v),
            Arg::F32(v) => Arg::F32(v),
            Arg::F64(v) => Arg::F64(v),
        }));
        args.push(grad.map_or(Arg::Null, Arg::Buf));
        if self.per_item {
            args.extend([Arg::Buf(losses), Arg::Null]);
        } else {
            args.extend([Arg::Null, Arg::Buf(losses)]);
        }
        args.push(Arg::Buf(bad));
        Ok(Launch {
            kernel: self.kernel.clone(),
            blocks: grid(self.blocks)?,
            threads: self.threads,
            args,
        })
    }

    /// The reduced loss (one value of the compute dtype) from the partials.
    pub fn sum<B>(&self, partials: B, loss: B) -> Launch<B> {
        sum_partials(self.compute, partials, self.losses, self.scale, loss)
    }
}

/// Chaining the upstream gradient into the cached gradient (`n` elements, logits dtype) in
/// place: `g * s` for a reduced loss (scalar upstream), `g[i] * up[i / div]` for an unreduced
/// one (upstream `[N, C]`, or `[N]` for the single-label loss).
#[derive(Clone, Debug)]
pub struct Chain {
    pub n: usize,
    /// 0 for a scalar upstream gradient, else the elements per upstream value.
    pub div: usize,
    kernel: String,
}

impl Chain {
    /// `grad` is the cached gradient's dtype, `upstream` the upstream gradient's (converted to
    /// the compute dtype first).
    pub fn new(
        reduction: Reduction,
        grad: DType,
        logits_dims: &[usize],
        upstream: DType,
        upstream_dims: &[usize],
    ) -> Result<Self> {
        check_dtype(grad, "ASL cached gradient", LOGITS)?;
        check_dtype(upstream, "ASL upstream gradient", UPSTREAM)?;
        let n: usize = logits_dims.iter().product();
        let up: usize = upstream_dims.iter().product();
        let div = if reduction == Reduction::None {
            if !logits_dims.starts_with(upstream_dims) {
                return Err(candle_core::Error::msg(format!(
                    "ASL backward: upstream gradient of shape {upstream_dims:?} for logits of \
                     shape {logits_dims:?}"
                )));
            }
            // At least 1: an empty upstream goes with empty logits (no work).
            (n / up.max(1)).max(1)
        } else if up == 1 {
            0
        } else {
            return Err(candle_core::Error::msg(format!(
                "ASL backward: a reduced loss needs a scalar upstream gradient, got shape \
                 {upstream_dims:?}"
            )));
        };
        let what = if div == 0 { "scalar" } else { "rows" };
        Ok(Chain {
            n,
            div,
            kernel: format!("asl_scale_{what}_{}", grad.as_str()),
        })
    }

    /// `asl_scale_*`. Buffers: `g` (n elements, in place), `up` (1 or n / div values).
    pub fn launch<B>(&self, g: B, up: B) -> Result<Launch<B>> {
        let mut args = vec![Arg::Buf(g), Arg::U64(self.n as u64), Arg::Buf(up)];
        if self.div != 0 {
            args.push(Arg::U64(self.div as u64));
        }
        let blocks = self
            .n
            .div_ceil(CHAIN_THREADS as usize)
            .min(CHAIN_MAX_BLOCKS);
        Ok(Launch {
            kernel: self.kernel.clone(),
            blocks: grid(blocks)?,
            threads: CHAIN_THREADS,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launch geometry here is the one `asl.cu` is written for.
    #[test]
    fn launch_geometry_matches_the_kernel_source() {
        let src = include_str!("../kernels/asl.cu");
        for (name, value) in [
            ("ASL_ML_THREADS", ML_THREADS as usize),
            ("ASL_ML_ELEMS", ML_ELEMS),
            ("ASL_RED_THREADS", RED_THREADS as usize),
            ("ASL_SL_THREADS", SL_THREADS as usize),
            ("ASL_CHAIN_THREADS", CHAIN_THREADS as usize),
        ] {
            let line = format!("#define {name} {value}\n");
            assert!(src.contains(&line), "asl.cu lacks `{}`", line.trim());
        }
    }

    #[test]
    fn bad_dtypes_and_shapes_are_errors() {
        let cfg = AslConfig::default();
        assert!(LossPlan::multilabel(&cfg, DType::U8, DType::F32, 2, 3).is_err());
        assert!(LossPlan::multilabel(&cfg, DType::F32, DType::I32, 2, 3).is_err());
        let sl = SingleLabelConfig::default();
        assert!(LossPlan::single_label(&sl, DType::F32, DType::F32, 2, 3).is_err());
        let none = Reduction::None;
        assert!(Chain::new(none, DType::F32, &[2, 3], DType::F32, &[3]).is_err());
        assert!(Chain::new(Reduction::Sum, DType::F32, &[2, 3], DType::F32, &[2]).is_err());
        assert!(Chain::new(none, DType::F32, &[2, 3], DType::F16, &[2, 3]).is_err());
        let c = Chain::new(none, DType::BF16, &[2, 3], DType::F32, &[2]).unwrap();
        assert_eq!((c.n, c.div), (6, 3));
        assert_eq!(first_bad(0), None);
        assert_eq!(first_bad(!5), Some(5));
    }
}
