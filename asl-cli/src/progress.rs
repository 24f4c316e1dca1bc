//! Progress on stderr: bars for long work (drawn only when stderr is a terminal), and the
//! trainer's events as bars and one line per epoch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use asl_tresnet::train::{Callback, Event, Flow};
use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting images.
pub fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The trainer's progress: a bar per epoch with the running loss, a line per finished epoch,
/// and a stop after the current step when `stop` is raised (Ctrl-C).
pub struct TrainProgress {
    bar: ProgressBar,
    epochs: usize,
    stop: Arc<AtomicBool>,
}

impl TrainProgress {
    pub fn new(stop: Arc<AtomicBool>) -> TrainProgress {
        TrainProgress {
            bar: ProgressBar::hidden(),
            epochs: 0,
            stop,
        }
    }

    fn epoch_bar(images: usize, epoch: usize, epochs: usize) -> ProgressBar {
        let bar = ProgressBar::new(images as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} {bar:25} {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar
    }
}

impl Callback for TrainProgress {
    fn on_event(&mut self, event: &Event<'_>) -> asl_tresnet::Result<Flow> {
        match event {
            Event::EpochStarted {
                epoch,
                epochs,
                images,
            } => {
                self.epochs = *epochs;
                self.bar = Self::epoch_bar(*images, *epoch, *epochs);
            }
            Event::Batch { images, .. } => self.bar.inc(*images as u64),
            Event::ImageSkipped { sample, error } => self
                .bar
                .suspend(|| eprintln!("asl-cli: skipped {sample}: {error}")),
            Event::Step { mean_loss, .. } => self.bar.set_message(format!("loss {mean_loss:.3}")),
            Event::Validating { .. } => self.bar.finish_and_clear(),
            Event::EpochEnded(history) => {
                if let Some(e) = history.last() {
                    eprintln!(
                        "epoch {}/{}: loss {:.4}, mAP {:.2}{}",
                        e.epoch,
                        self.epochs,
                        e.train_loss,
                        e.val_map,
                        e.val_map_ema
                            .map(|v| format!(", EMA {v:.2}"))
                            .unwrap_or_default()
                    );
                }
            }
            _ => {}
        }
        Ok(if self.stop.load(Ordering::SeqCst) {
            self.bar.abandon();
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}
