//! The one candle custom op behind both fused losses: what a loss provides, and what the op
//! keeps between its forward and its backward.
//!
//! A loss implements [`FusedLoss`] (its name, its reduction, its CPU pass, and with the `cuda`
//! feature its kernel launch plan); [`Fused`] wraps it into a `candle_core::CustomOp2` with a
//! single `cpu_fwd`, `cuda_fwd` and `bwd` for every loss. That `CustomOp2` implementation, which
//! code runs on which device and dtype, and the evaluation of a loss as the op live one layer up,
//! in the dispatch module; nothing here depends on a device.
//!
//! The forward pass computes the gradient in the same sweep as the loss (only when the logits are
//! part of an autograd graph) and keeps it in the op's [`GradCache`] as a [`CachedGrad`]; `bwd`
//! then only chains the upstream gradient into it. A second backward over the same graph finds
//! the cache empty and runs the pass again.
//!
//! Everything is generic over the loss and monomorphised: no dynamic dispatch in the passes.

use std::sync::Mutex;

use candle_core::{Result, Shape};

use crate::config::Reduction;
use crate::dtype::{Logit, Slice};

/// A loss the fused op can evaluate. Implemented by each loss's configuration.
pub(crate) trait FusedLoss: Copy + Send + Sync + 'static {
    /// The op's name in candle's graph.
    const NAME: &'static str;
    /// How errors name the logits and the targets.
    const LOGITS: &'static str;
    const TARGETS: &'static str;

    /// How the loss is reduced (decides how the upstream gradient is chained).
    fn reduction(&self) -> Reduction;

    /// The factor applied to the summed loss and to the gradient, for `[rows, cols]` logits.
    fn reduction_scale(&self, rows: usize, cols: usize) -> f64;

    /// The shape of the op's output for `[rows, cols]` logits: `[]` for a reduced loss.
    fn output_shape(&self, rows: usize, cols: usize) -> Shape;

    /// The CPU pass over contiguous logits `x` and targets `t` (of a dtype the loss's input
    /// checks accepted), in the compute type of the logits.
    fn cpu_pass<X: Logit>(&self, x: &[X], t: Slice, job: Job) -> Result<HostPass<X::Compute>>;

    /// The CUDA kernel launch of the pass (see [`crate::cuda_launch::LossPlan`]).
    #[cfg(feature = "cuda")]
    fn plan(
        &self,
        logits: candle_core::DType,
        targets: candle_core::DType,
        rows: usize,
        cols: usize,
    ) -> Result<crate::cuda_launch::LossPlan>;

    /// The error for the bad target at flat index `i` that the CUDA kernel reported, read from
    /// the targets copied to the host.
    #[cfg(feature = "cuda")]
    fn target_error(&self, targets: Slice, i: usize, cols: usize)
        -> Result<crate::error::AslError>;
}

/// What a pass is asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    pub rows: usize,
    pub cols: usize,
    /// [`FusedLoss::reduction_scale`].
    pub scale: f64,
    /// Whether the pass also computes the gradient.
    pub want_grad: bool,
}

/// The losses a CPU pass computed.
pub(crate) enum Losses<F> {
    /// The sum of the losses, accumulated in f64 in a fixed order (not yet scaled).
    Sum(f64),
    /// One loss per item (`Reduction::None`), in the shape [`FusedLoss::output_shape`] gives.
    PerItem(Vec<F>),
}

/// What a CPU pass produced.
pub(crate) struct HostPass<F> {
    pub losses: Losses<F>,
    /// `d reduced loss / d logits`, already scaled by [`Job::scale`] (empty unless asked).
    pub grad: Vec<F>,
}

/// The fused loss `L` as a candle custom op. Inputs: logits, targets (contiguous).
pub(crate) struct Fused<L> {
    pub(crate) loss: L,
    /// Whether the forward pass also computes the gradient (only when the logits are in a graph).
    pub(crate) want_grad: bool,
    pub(crate) grad: GradCache,
}

impl<L: FusedLoss> Fused<L> {
    pub(crate) fn new(loss: L, want_grad: bool) -> Self {
        Fused {
            loss,
            want_grad,
            grad: GradCache::default(),
        }
    }

    /// Keeps the gradient a forward pass produced for `bwd`.
    pub(crate) fn keep(&self, grad: Option<CachedGrad>) -> Result<()> {
        match grad {
            Some(g) => self.grad.put(g),
            None => Ok(()),
        }
    }
}

/// A gradient computed by a fused forward pass (already scaled by the reduction), waiting for
/// the op's `bwd`.
pub(crate) enum CachedGrad {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// On the GPU, in the logits' dtype (the CUDA kernels write it there directly).
    #[cfg(feature = "cuda")]
    Cuda(candle_core::CudaStorage),
}

/// Where a fused op keeps the gradient between its forward and its backward. The forward pass
/// computes the gradient in the same sweep as the loss, so `bwd` only has to scale it.
#[derive(Default)]
pub(crate) struct GradCache(Mutex<Option<CachedGrad>>);

fn poisoned() -> candle_core::Error {
    candle_core::Error::msg("fused loss: gradient cache lock poisoned by a panic in another thread")
}

impl GradCache {
    fn put(&self, g: CachedGrad) -> Result<()> {
        *self.0.lock().map_err(|_| poisoned())? = Some(g);
        Ok(())
    }

    /// The cached gradient, if the forward pass left one (a second backward over the same graph
    /// finds none and must recompute).
    pub(crate) fn take(&self) -> Result<Option<CachedGrad>> {
        Ok(self.0.lock().map_err(|_| poisoned())?.take())
    }

    pub(crate) fn take_required(&self) -> Result<CachedGrad> {
        self.take()?
            .ok_or_else(|| candle_core::Error::msg("fused loss: gradient pass produced nothing"))
    }
}
