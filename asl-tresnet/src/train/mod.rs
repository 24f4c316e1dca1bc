//! Fine-tuning a TResNet with ASL, the paper's recipe as parts: Adam with coupled L2 weight
//! decay on weights only ([`adam`]), OneCycle stepped per iteration, learning rate and beta1
//! ([`schedule`]), an EMA of the weights and BatchNorm statistics, Cutout + RandAugment
//! ([`crate::augment`]), validation of the raw and the EMA model every epoch keeping the best of
//! either, atomic and exactly resumable checkpoints ([`checkpoint`]).
//!
//! A [`Trainer`] is built from a [`TrainConfig`] and trains on any [`crate::data::Dataset`]:
//! [`Trainer::fit`] runs every epoch, [`Trainer::train_epoch`] one, [`Trainer::step`] (or
//! [`Trainer::micro_batch`] and [`Trainer::apply_step`]) one optimiser step, and
//! [`Trainer::evaluate`] / [`Trainer::save_checkpoint`] / [`Trainer::resume`] the rest. What
//! happens is reported to [`Callback`]s as [`Event`]s (progress bars, logs, charts and early
//! stopping are callbacks).
//!
//! ```no_run
//! use std::sync::Arc;
//! use asl_tresnet::data::{read_dataset, ReadOptions};
//! use asl_tresnet::train::{TrainConfig, TrainOptions, Trainer};
//! let train = read_dataset("train.csv".as_ref(), &ReadOptions::default())?;
//! let val = read_dataset("val.csv".as_ref(), &ReadOptions::default())?;
//! let cfg = TrainConfig { epochs: 10, ..TrainConfig::recipe("tresnet_m") };
//! let mut trainer = Trainer::new(cfg, train.classes.clone(), TrainOptions::new("runs/mine"))?;
//! let summary = trainer.fit(Arc::new(train), Arc::new(val), &mut [])?;
//! println!("best mAP {:.2} ({})", summary.best_map, summary.best_path.display());
//! # Ok::<(), asl_tresnet::Error>(())
//! ```
//!
//! # Determinism and resuming
//! The order of an epoch and every image's augmentation are drawn from generators seeded by
//! `(seed, epoch)` and `(seed, epoch, sample)`, so they do not depend on thread timing, and a
//! checkpoint needs only the epoch and step position to continue exactly: every optimiser step
//! is a group of `accumulate` loader batches (skipped ones included) or the epoch's tail, so a
//! run interrupted anywhere and resumed gives the same weights as the uninterrupted run on the
//! CPU. A resumed run must share the settings that shape the trajectory (the error names each
//! one that differs); it may ask for more epochs than it was started with (the schedule is
//! then planned over the new total).

pub mod adam;
pub mod checkpoint;
mod config;
mod ema;
mod evaluate;
mod events;
mod init;
pub mod schedule;
mod seeds;
mod trainer;

pub use adam::Adam;
pub use config::{TrainConfig, TrainOptions};
pub use events::{Callback, EpochLog, Event, Flow, TrainSummary};
pub use schedule::one_cycle;
pub use trainer::{EpochOutcome, Evaluation, StepReport, Trainer};
