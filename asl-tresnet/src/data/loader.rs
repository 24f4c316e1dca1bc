//! A background loader: decodes and resizes images on all cores ahead of the consumer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::images::{ImageError, Preprocess};
use crate::pretrained::ResizeMode;

/// Turns one sample (by its index) into model input: `3 * S * S` values for the built-in
/// preprocessing.
type Transform = dyn Fn(usize) -> Result<Vec<f32>, ImageError> + Send + Sync;

/// A batch of model inputs, in dataset order.
#[derive(Debug)]
pub struct Batch {
    /// The indices of the samples in `inputs`, in order.
    pub indices: Vec<usize>,
    /// The decoded images one after the other, each `3 * size * size` planar RGB values in
    /// `[0, 1]` ([`images::to_chw`]): `indices.len() * 3 * size * size` values.
    pub inputs: Vec<f32>,
    /// The images of this batch that could not be decoded, with why; not in `inputs`.
    pub failed: Vec<(usize, ImageError)>,
}

/// The work shared by the background thread and the inline fallback.
struct Job {
    order: Vec<usize>,
    batch_size: usize,
    transform: Box<Transform>,
}

impl Job {
    fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// Batch `b`, its images prepared in parallel; `None` when `stop` was raised meanwhile.
    fn batch(&self, b: usize, stop: &AtomicBool) -> Option<Batch> {
        let start = b * self.batch_size;
        let chunk = &self.order[start..(start + self.batch_size).min(self.order.len())];
        let results: Vec<Option<Result<Vec<f32>, ImageError>>> = chunk
            .par_iter()
            .map(|&i| {
                // Checked per image so that a dropped loader stops within one image's time.
                if stop.load(Ordering::Relaxed) {
                    None
                } else {
                    Some((self.transform)(i))
                }
            })
            .collect();
        let mut batch = Batch {
            indices: Vec::with_capacity(chunk.len()),
            inputs: Vec::new(),
            failed: Vec::new(),
        };
        for (&i, result) in chunk.iter().zip(results) {
            match result? {
                Ok(input) => {
                    if batch.inputs.is_empty() {
                        batch.inputs.reserve_exact(input.len() * chunk.len());
                    }
                    batch.inputs.extend_from_slice(&input);
                    batch.indices.push(i);
                }
                Err(e) => batch.failed.push((i, e)),
            }
        }
        Some(batch)
    }
}

enum Mode {
    /// Batches come from a background thread through a bounded channel.
    Threaded {
        receiver: Option<Receiver<Batch>>,
        worker: Option<JoinHandle<()>>,
    },
    /// The thread could not be started: batches are prepared in `next` (still in parallel).
    Inline { job: Arc<Job>, next: usize },
}

/// An iterator of [`Batch`]es prepared ahead on a background thread (see [`loader`]).
///
/// Memory is bounded: at most `prefetch` finished batches wait in the channel, plus the one
/// being prepared. Dropping the loader stops the thread: images not yet started are not
/// decoded, and `drop` waits for the images in progress (unless it runs on a rayon worker
/// thread, where waiting could deadlock the pool; the thread then ends on its own).
pub struct Loader {
    mode: Mode,
    stop: Arc<AtomicBool>,
    num_batches: usize,
}

/// A loader of `paths` in order: each image decoded ([`crate::images::load_rgb`], refused over
/// `max_pixels`), resized to `size` x `size` with `mode` ([`crate::images::resize`]) and made
/// planar ([`crate::images::to_chw`]), in batches of `batch_size` (at least 1) prepared with rayon on all
/// cores, up to `prefetch` batches ahead of the consumer.
///
/// Every index appears exactly once, in order, either in a batch's `indices` or in its
/// `failed`; a failed image does not stop the loader.
///
/// ```no_run
/// use asl_tresnet::data::loader;
/// use asl_tresnet::pretrained::ResizeMode;
/// let paths: Vec<std::path::PathBuf> = vec!["a.jpg".into(), "b.png".into()];
/// for batch in loader(paths, 224, ResizeMode::Squish, 32, 2, asl_tresnet::images::DEFAULT_MAX_PIXELS) {
///     assert_eq!(batch.inputs.len(), batch.indices.len() * 3 * 224 * 224);
///     for (i, e) in &batch.failed {
///         eprintln!("skipping image {i}: {e}");
///     }
/// }
/// ```
pub fn loader(
    paths: impl Into<Arc<[PathBuf]>>,
    size: u32,
    mode: ResizeMode,
    batch_size: usize,
    prefetch: usize,
    max_pixels: u64,
) -> Loader {
    let paths: Arc<[PathBuf]> = paths.into();
    let order = (0..paths.len()).collect();
    let prep = Preprocess {
        resize: mode,
        ..Preprocess::squish(size)
    }
    .with_max_pixels(max_pixels);
    Loader::new(order, batch_size, prefetch, move |i| prep.load(&paths[i]))
}

impl Loader {
    /// A loader of the samples `order` names (e.g. a shuffled epoch; indices may repeat), each
    /// turned into model input by `transform` (e.g. decoding a dataset's image and augmenting
    /// it, seeded by the index). `Batch::indices` are the indices of `order`'s samples.
    pub fn new<F>(order: Vec<usize>, batch_size: usize, prefetch: usize, transform: F) -> Loader
    where
        F: Fn(usize) -> Result<Vec<f32>, ImageError> + Send + Sync + 'static,
    {
        let job = Job {
            order,
            batch_size: batch_size.max(1),
            transform: Box::new(transform),
        };
        let num_batches = job.num_batches();
        let job = Arc::new(job);
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = sync_channel(prefetch);
        let (worker_job, worker_stop) = (Arc::clone(&job), Arc::clone(&stop));
        let spawned = std::thread::Builder::new()
            .name("asl-data-loader".into())
            .spawn(move || {
                for b in 0..worker_job.num_batches() {
                    let Some(batch) = worker_job.batch(b, &worker_stop) else {
                        return;
                    };
                    if sender.send(batch).is_err() {
                        // The consumer dropped the loader.
                        return;
                    }
                }
            });
        let mode = match spawned {
            Ok(worker) => Mode::Threaded {
                receiver: Some(receiver),
                worker: Some(worker),
            },
            Err(_) => Mode::Inline { job, next: 0 },
        };
        Loader {
            mode,
            stop,
            num_batches,
        }
    }

    /// How many batches the loader yields in all.
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match &mut self.mode {
            Mode::Threaded { receiver, worker } => {
                if let Some(batch) = receiver.as_ref().and_then(|r| r.recv().ok()) {
                    return Some(batch);
                }
                // The channel closed: the worker is done, or it panicked (in a transform);
                // a panic must not look like the end of the dataset.
                *receiver = None;
                if let Some(handle) = worker.take() {
                    if let Err(panic) = handle.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
            Mode::Inline { job, next } => {
                if *next >= job.num_batches() {
                    return None;
                }
                let batch = job.batch(*next, &self.stop);
                *next += 1;
                batch
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Mode::Threaded { receiver, worker } = &mut self.mode {
            // Closing the channel first wakes a worker blocked on a full channel.
            drop(receiver.take());
            if let Some(handle) = worker.take() {
                if rayon::current_thread_index().is_none() {
                    let _ = handle.join();
                }
            }
        }
    }
}
