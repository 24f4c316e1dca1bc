//! Axes: ranges, "nice" tick steps, tick labels, the data-to-pixel scale.

use super::draw::*;
use super::*;

// ---------------------------------------------------------------------------------------------
// Axes and ticks.

/// A 1, 2 or 5 times a power of ten close to `span / target`.
pub(super) fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A finite, non-empty range around a single value.
pub(super) fn widen(v: f64) -> (f64, f64) {
    let d = if v == 0.0 { 1.0 } else { v.abs() * 0.1 };
    (v - d, v + d)
}

/// Whether `(lo, hi)` can be used as an axis range.
pub(super) fn usable(lo: f64, hi: f64) -> bool {
    lo.is_finite() && hi.is_finite() && hi > lo && (hi - lo).is_finite()
}

/// The axis range: `given` when it is finite (ordered, widened when empty), else the range of the
/// finite `data` extended to nice ticks, else `(0, 1)`.
pub(super) fn axis_range(given: Option<(f64, f64)>, data: impl Iterator<Item = f64>) -> (f64, f64) {
    if let Some((a, b)) = given {
        if a.is_finite() && b.is_finite() {
            let (lo, hi) = if a == b {
                widen(a)
            } else {
                (a.min(b), a.max(b))
            };
            if usable(lo, hi) {
                return (lo, hi);
            }
        }
    }
    let (lo, hi) = data
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = if lo == hi { widen(lo) } else { (lo, hi) };
    if !usable(lo, hi) {
        return (0.0, 1.0);
    }
    let step = nice_step(hi - lo, 6);
    let (nlo, nhi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    if usable(nlo, nhi) {
        (nlo, nhi)
    } else {
        (lo, hi)
    }
}

/// Tick values inside `[lo, hi]` about `target` of them, and their labels.
pub(super) fn ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, String)> {
    let step = nice_step(hi - lo, target);
    if !(step.is_finite() && step > 0.0) {
        return vec![
            (lo, format_number(lo, 0, hi)),
            (hi, format_number(hi, 0, hi)),
        ];
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()).clamp(0.0, 12.0) as usize
    };
    let big = lo.abs().max(hi.abs());
    let first = (lo / step).ceil();
    let mut out = Vec::new();
    for k in 0..64 {
        let mut v = (first + k as f64) * step;
        if v > hi + step * 1e-9 {
            break;
        }
        if v.abs() < step * 1e-9 {
            v = 0.0;
        }
        out.push((v, format_number(v, decimals, big)));
    }
    out
}

/// A tick label: fixed-point with `decimals`, or scientific when the axis magnitude `big` is
/// huge or tiny.
pub(super) fn format_number(v: f64, decimals: usize, big: f64) -> String {
    if big >= 1e9 || (big > 0.0 && big < 1e-4) || decimals > 6 {
        format!("{v:.2e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// Maps data values to pixels along one axis; results clamped to +-1e7 so that absurd values
/// stay finite.
#[derive(Clone, Copy)]
pub(super) struct Scale {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) p0: f64,
    pub(super) p1: f64,
}

impl Scale {
    pub(super) fn map(&self, v: f64) -> f64 {
        let p = self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0);
        if p.is_nan() {
            self.p0
        } else {
            p.clamp(-1e7, 1e7)
        }
    }
}

/// Picks ticks whose labels do not collide along an axis of `length` pixels; `horizontal` when
/// the labels sit side by side.
pub(super) fn fitting_ticks(lo: f64, hi: f64, length: i64, horizontal: bool) -> Vec<(f64, String)> {
    for target in [10, 8, 6, 5, 4, 3, 2] {
        let t = ticks(lo, hi, target);
        let room = length / t.len().max(1) as i64;
        let need = if horizontal {
            t.iter()
                .map(|(_, s)| text_width(s, TEXT_SCALE))
                .max()
                .unwrap_or(0)
                + 16
        } else {
            text_height(TEXT_SCALE) + 10
        };
        if need <= room {
            return t;
        }
    }
    ticks(lo, hi, 1)
}
