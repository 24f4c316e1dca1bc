//! The engines' activations and buffers: channel-major activations, the buffer pool of one
//! inference pass, and the pointer threads share to write disjoint parts of one buffer.

use std::time::Instant;

use super::{add_time, KindTimes};

/// Channel-major activations `[c, n, h, w]`.
pub(crate) struct Act {
    pub(crate) data: Vec<f32>,
    pub(crate) c: usize,
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
}

impl Act {
    pub(crate) fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// Buffers freed during one forward pass, handed out again best-fit; and, when profiling, the
/// time spent in each kind of op.
#[derive(Default)]
pub(crate) struct Pool {
    free: Vec<Vec<f32>>,
    pub(crate) profile: Option<KindTimes>,
}

impl Pool {
    /// An empty pool, recording a profile when `profile` is set.
    pub(crate) fn new(profile: bool) -> Pool {
        Pool {
            free: Vec::new(),
            profile: profile.then(Vec::new),
        }
    }

    /// Runs `f`, adding its time to `kind` when profiling. Only leaf ops are timed.
    pub(crate) fn timed<R>(&mut self, kind: &'static str, f: impl FnOnce(&mut Pool) -> R) -> R {
        if self.profile.is_none() {
            return f(self);
        }
        let start = Instant::now();
        let r = f(self);
        let spent = start.elapsed();
        if let Some(p) = self.profile.as_mut() {
            add_time(p, kind, spent);
        }
        r
    }

    /// A buffer of `len` elements with unspecified contents.
    pub(crate) fn take(&mut self, len: usize) -> Vec<f32> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut b = self.free.swap_remove(i);
                b.resize(len, 0.0);
                b
            }
            None => {
                vec![0.0; len]
            }
        }
    }

    pub(crate) fn give(&mut self, b: Vec<f32>) {
        self.free.push(b);
    }
}

/// A pointer shared by threads that write disjoint parts of one buffer (the column tiles of a
/// convolution here, the tile rows and channels of `winograd.rs`).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: only used for disjoint writes (see run_tiled and winograd.rs's callers).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
