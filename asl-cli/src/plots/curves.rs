//! The training curves: loss, validation mAP (raw and EMA) and learning rate per epoch, as PNG
//! charts in the run's folder, redrawn after every epoch.

use std::path::{Path, PathBuf};

use asl_tresnet::train::{Callback, EpochLog, Event, Flow};

use super::{line_chart, save_png, Series};

/// `loss.png`, `map.png` and `lr.png` in `out`.
pub fn write_curves(out: &Path, history: &[EpochLog]) -> std::io::Result<()> {
    let pts = |f: &dyn Fn(&EpochLog) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let series = |name: &str, f: &dyn Fn(&EpochLog) -> Option<f64>| Series {
        name: name.into(),
        points: pts(f),
    };
    let loss = line_chart(
        "Training loss (mean per batch)",
        "epoch",
        "loss",
        &[series("train", &|e| Some(e.train_loss))],
        None,
        None,
    );
    save_png(&loss, &out.join("loss.png"))?;
    let mut maps = vec![series("raw", &|e| Some(e.val_map))];
    if history.iter().any(|e| e.val_map_ema.is_some()) {
        maps.push(series("EMA", &|e| e.val_map_ema));
    }
    let map = line_chart("Validation mAP", "epoch", "mAP (%)", &maps, None, None);
    save_png(&map, &out.join("map.png"))?;
    let lr = line_chart(
        "Learning rate (end of epoch)",
        "epoch",
        "lr",
        &[series("lr", &|e| Some(e.lr))],
        None,
        None,
    );
    save_png(&lr, &out.join("lr.png"))
}

/// Redraws the curves of a run in `out` after every epoch.
pub struct Curves {
    out: PathBuf,
}

impl Curves {
    pub fn new(out: &Path) -> Curves {
        Curves {
            out: out.to_path_buf(),
        }
    }
}

impl Callback for Curves {
    fn on_event(&mut self, event: &Event<'_>) -> asl_tresnet::Result<Flow> {
        if let Event::EpochEnded(history) = event {
            write_curves(&self.out, history)
                .map_err(|e| asl_tresnet::Error::write(&self.out, e))?;
        }
        Ok(Flow::Continue)
    }
}
