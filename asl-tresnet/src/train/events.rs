//! What the trainer reports while it runs: [`Event`]s handed to [`Callback`]s (progress bars,
//! logs, charts, early stopping are callbacks), and the records of a run ([`EpochLog`],
//! [`TrainSummary`]).

use std::path::{Path, PathBuf};

use crate::Result;

/// One epoch's log line (`metrics.csv`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub val_map: f64,
    pub val_map_ema: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub skipped_batches: usize,
    /// `gamma_neg` at the end of the epoch (moves only with adaptive asymmetry).
    pub gamma_neg: f64,
    /// The epoch's probability gap `p_t+ - p_t-` on the training batches
    /// ([`asl_core::adaptive`]), when they had positives and negatives.
    pub prob_gap: Option<f64>,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub epochs: Vec<EpochLog>,
    pub best_map: f64,
    /// `raw` or `ema`.
    pub best_model: String,
    pub best_path: PathBuf,
    /// Stopped before the last epoch (by a callback or `max_steps`), a checkpoint written.
    pub interrupted: bool,
}

/// Something that happened in a run, in the order it happens.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// An epoch starts (1-based `epoch`); `images` are to come (fewer than the training set
    /// when a run resumes mid-epoch).
    EpochStarted {
        epoch: usize,
        epochs: usize,
        images: usize,
    },
    /// A loader batch was trained on (`loss`), or skipped (`loss: None`: every image failed, or
    /// the loss was not finite and skipping was asked for). `images` counts every image of
    /// the batch, failed ones included.
    Batch { images: usize, loss: Option<f64> },
    /// A training image could not be read and was skipped.
    ImageSkipped { sample: String, error: String },
    /// An optimiser step was taken: the running mean loss of the epoch, and the learning rate
    /// the step used.
    Step {
        step: usize,
        lr: f64,
        mean_loss: f64,
    },
    /// Validation starts after an epoch.
    Validating { epoch: usize },
    /// An epoch ended and was validated: the log of every epoch so far, this one last.
    EpochEnded(&'a [EpochLog]),
    /// A better model was written.
    BestModel {
        path: &'a Path,
        map: f64,
        /// `raw` or `ema`.
        which: &'a str,
    },
    /// The checkpoint was written (after every epoch, and when the run stops).
    Checkpoint { path: &'a Path },
}

/// What a callback asks of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop after the current optimiser step, with a checkpoint: the run resumes exactly
    /// where it stopped.
    Stop,
}

/// Receives the trainer's [`Event`]s.
pub trait Callback {
    fn on_event(&mut self, event: &Event<'_>) -> Result<Flow>;
}

/// Any `FnMut(&Event) -> Result<Flow>` is a callback.
impl<F: FnMut(&Event<'_>) -> Result<Flow>> Callback for F {
    fn on_event(&mut self, event: &Event<'_>) -> Result<Flow> {
        self(event)
    }
}

/// Hands `event` to every callback; `Stop` if any asked for it.
pub(crate) fn emit(callbacks: &mut [&mut dyn Callback], event: &Event<'_>) -> Result<Flow> {
    let mut flow = Flow::Continue;
    for cb in callbacks.iter_mut() {
        if cb.on_event(event)? == Flow::Stop {
            flow = Flow::Stop;
        }
    }
    Ok(flow)
}

/// Writes `metrics.csv` (one line per epoch) atomically.
pub(crate) fn write_metrics_csv(path: &Path, history: &[EpochLog]) -> Result<()> {
    let mut text = String::from(
        "epoch,steps,train_loss,val_map,val_map_ema,lr,seconds,images_per_s,skipped_batches,\
         gamma_neg,prob_gap\n",
    );
    for e in history {
        text.push_str(&format!(
            "{},{},{},{},{},{},{:.3},{:.2},{},{},{}\n",
            e.epoch,
            e.steps,
            e.train_loss,
            e.val_map,
            e.val_map_ema.map(|v| v.to_string()).unwrap_or_default(),
            e.lr,
            e.seconds,
            e.images_per_s,
            e.skipped_batches,
            e.gamma_neg,
            e.prob_gap.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    crate::atomic::write_atomic(path, |w| w.write_all(text.as_bytes()))
        .map_err(|e| crate::Error::write(path, e))
}
