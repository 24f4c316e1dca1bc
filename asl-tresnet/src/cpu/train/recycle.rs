//! Buffers recycled across layers and steps, and the per-kind timing of a profiled step.

use std::rc::Rc;

use crate::cpu::buffers::Act;
use crate::cpu::KindTimes;

thread_local! {
    /// Time per kind of work, while a profiled step runs.
    static PROFILE: std::cell::RefCell<Option<KindTimes>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, adding its time to `kind` when profiling.
pub(super) fn timed<R>(kind: &'static str, f: impl FnOnce() -> R) -> R {
    if PROFILE.with(|p| p.borrow().is_none()) {
        return f();
    }
    let start = std::time::Instant::now();
    let r = f();
    record(kind, start);
    r
}

/// Adds the time since `start` to `kind` when profiling.
pub(super) fn record(kind: &'static str, start: std::time::Instant) {
    PROFILE.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            crate::cpu::add_time(p, kind, start.elapsed());
        }
    });
}

thread_local! {
    /// Buffers of earlier layers and steps, handed out again (best fit) so that a step
    /// neither zeroes nor faults in fresh memory for every activation.
    static FREE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `len` values with unspecified contents (a recycled one when one is large
/// enough).
pub(super) fn take(len: usize) -> Vec<f32> {
    let reused = FREE.with(|f| {
        let mut f = f.borrow_mut();
        let best = f
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| f.swap_remove(i))
    });
    match reused {
        Some(mut b) => {
            b.truncate(len);
            b.resize(len, 0.0);
            b
        }
        None => vec![0.0; len],
    }
}

/// A buffer of `len` zeros.
pub(super) fn take_zeroed(len: usize) -> Vec<f32> {
    let mut b = take(len);
    b.fill(0.0);
    b
}

/// Returns a buffer for reuse.
pub(super) fn give(b: Vec<f32>) {
    if b.capacity() >= 1024 {
        FREE.with(|f| f.borrow_mut().push(b));
    }
}

/// Returns an activation's buffer when this was its last holder.
pub(super) fn give_act(a: Rc<Act>) {
    if let Ok(a) = Rc::try_unwrap(a) {
        give(a.data);
    }
}

/// Starts recording a profile on this thread.
pub(super) fn start_profile() {
    PROFILE.with(|p| *p.borrow_mut() = Some(Vec::new()));
}

/// The profile recorded since [`start_profile`], and stops recording.
pub(super) fn take_profile() -> KindTimes {
    PROFILE.with(|p| p.borrow_mut().take()).unwrap_or_default()
}
