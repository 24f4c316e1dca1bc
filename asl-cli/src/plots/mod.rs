//! Charts as PNG images: per-class AP bars and precision-recall curves for `validate --plots`,
//! training curves (loss and mAP per epoch) for `train`.
//!
//! Everything is drawn with the embedded 5x7 bitmap font of [`crate::images`] (at 2x or 3x), so
//! the output depends on no installed font and is the same pixel for pixel on every machine.
//!
//! - [`line_chart`]: several named series, distinct colours, a legend placed in the emptiest
//!   corner of the plot, axes with "nice" ticks (1, 2, 5 x 10^k) and labels. 960 x 640 pixels.
//! - [`bar_chart`]: horizontal bars with the class names as labels, 1000 pixels wide, 20 pixels
//!   per bar; more than [`BAR_CHART_MAX_ROWS`] bars are reduced to the highest and lowest values
//!   with a note saying so.
//! - [`pr_curve`]: the (recall, precision) points of one class, ranked exactly as
//!   [`asl_core::metrics::average_precision`] ranks them.
//! - [`save_png`]: writes a chart atomically.
//!
//! Degenerate input never panics: non-finite values are skipped (a gap in a line, "n/a" on a
//! bar), empty or zero-width ranges are widened, long labels are cut with "...", characters
//! outside printable ASCII are drawn as '?'.

use std::io;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{Rgb, RgbImage};

use crate::images::font::glyph_pixel;

/// One named series of (x, y) points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Width and height of a [`line_chart`].
const LINE_W: u32 = 960;
const LINE_H: u32 = 640;
/// Width of a [`bar_chart`]; its height grows by [`BAR_PITCH`] per bar.
const BAR_W: u32 = 1000;
/// Vertical distance between two bars, and the height of one bar.
const BAR_PITCH: u32 = 20;
const BAR_THICKNESS: u32 = 14;
/// The most bars a [`bar_chart`] draws; beyond that it shows the `BAR_CHART_MAX_ROWS / 2`
/// highest and as many lowest values.
pub const BAR_CHART_MAX_ROWS: usize = 100;

/// Glyph size of the font in font pixels (see `images/font.rs`), and the cell width (one blank
/// column after each glyph).
const GLYPH_H: u32 = 7;
const CELL_W: u32 = 6;
/// Text scales: titles, everything else.
const TITLE_SCALE: u32 = 3;
const TEXT_SCALE: u32 = 2;
/// Longest label kept (class names, series names) before cutting with "...".
const MAX_LABEL_CHARS: usize = 30;
/// Outer margin of every chart.
const PAD: i64 = 16;

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const TEXT: Rgb<u8> = Rgb([30, 30, 30]);
const MUTED: Rgb<u8> = Rgb([110, 110, 110]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);
const STRIPE: Rgb<u8> = Rgb([246, 246, 246]);
const BAR: Rgb<u8> = Rgb([31, 119, 180]);

/// Series colours (Tableau 10, grey replaced by a dark teal so that no series looks like an
/// axis); further series get golden-angle hues.
const PALETTE: [Rgb<u8>; 10] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([0, 110, 110]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
];

/// The colour of series `i`.
fn series_colour(i: usize) -> Rgb<u8> {
    if let Some(&c) = PALETTE.get(i) {
        return c;
    }
    // HSV with s = 0.8, v = 0.75, hue stepped by the golden angle.
    let h = (i as f64 * 137.507_764) % 360.0 / 60.0;
    let (v, s) = (0.75, 0.8);
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let to_u8 = |f: f64| ((f + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    Rgb([to_u8(r), to_u8(g), to_u8(b)])
}

// ---------------------------------------------------------------------------------------------
// Raster primitives (all clipped, signed coordinates).

/// An axis-aligned rectangle, `x0..x1` by `y0..y1` (exclusive ends).
#[derive(Clone, Copy, Debug)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    /// The rectangle `by` pixels inside this one on every side.
    fn inset(&self, by: i64) -> Rect {
        Rect {
            x0: self.x0 + by,
            y0: self.y0 + by,
            x1: self.x1 - by,
            y1: self.y1 - by,
        }
    }

    fn of_image(img: &RgbImage) -> Rect {
        Rect {
            x0: 0,
            y0: 0,
            x1: i64::from(img.width()),
            y1: i64::from(img.height()),
        }
    }

    fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }

    fn intersect(&self, o: &Rect) -> Rect {
        Rect {
            x0: self.x0.max(o.x0),
            y0: self.y0.max(o.y0),
            x1: self.x1.min(o.x1),
            y1: self.y1.min(o.y1),
        }
    }
}

fn put(img: &mut RgbImage, clip: &Rect, x: i64, y: i64, colour: Rgb<u8>) {
    if clip.contains(x, y) && Rect::of_image(img).contains(x, y) {
        img.put_pixel(x as u32, y as u32, colour);
    }
}

fn fill_rect(img: &mut RgbImage, r: Rect, colour: Rgb<u8>) {
    let r = r.intersect(&Rect::of_image(img));
    for y in r.y0..r.y1 {
        for x in r.x0..r.x1 {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// A one-pixel rectangle outline.
fn stroke_rect(img: &mut RgbImage, r: Rect, colour: Rgb<u8>) {
    fill_rect(img, Rect { y1: r.y0 + 1, ..r }, colour);
    fill_rect(img, Rect { y0: r.y1 - 1, ..r }, colour);
    fill_rect(img, Rect { x1: r.x0 + 1, ..r }, colour);
    fill_rect(img, Rect { x0: r.x1 - 1, ..r }, colour);
}

/// Clips the segment to `clip` (Liang-Barsky); `None` when nothing of it is inside.
fn clip_segment(
    (ax, ay): (f64, f64),
    (bx, by): (f64, f64),
    clip: &Rect,
) -> Option<((f64, f64), (f64, f64))> {
    let (xmin, xmax) = (clip.x0 as f64, (clip.x1 - 1) as f64);
    let (ymin, ymax) = (clip.y0 as f64, (clip.y1 - 1) as f64);
    let (dx, dy) = (bx - ax, by - ay);
    let (mut t0, mut t1) = (0f64, 1f64);
    for (p, q) in [
        (-dx, ax - xmin),
        (dx, xmax - ax),
        (-dy, ay - ymin),
        (dy, ymax - ay),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    (t0 <= t1).then_some(((ax + t0 * dx, ay + t0 * dy), (ax + t1 * dx, ay + t1 * dy)))
}

/// A line `thickness` pixels wide between two points (pixel coordinates, finite), clipped.
fn draw_line(
    img: &mut RgbImage,
    clip: &Rect,
    a: (f64, f64),
    b: (f64, f64),
    thickness: i64,
    colour: Rgb<u8>,
) {
    let Some((a, b)) = clip_segment(a, b, clip) else {
        return;
    };
    let (mut x, mut y) = (a.0.round() as i64, a.1.round() as i64);
    let (x1, y1) = (b.0.round() as i64, b.1.round() as i64);
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    let lo = -(thickness - 1) / 2;
    let hi = lo + thickness;
    loop {
        for oy in lo..hi {
            for ox in lo..hi {
                put(img, clip, x + ox, y + oy, colour);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Text.

/// Width in image pixels of `text` at `scale` (no trailing blank column).
fn text_width(text: &str, scale: u32) -> i64 {
    let cells = text.chars().count() as i64 * i64::from(CELL_W);
    (cells - 1).max(0) * i64::from(scale)
}

fn text_height(scale: u32) -> i64 {
    i64::from(GLYPH_H * scale)
}

/// How many characters fit in `width` pixels at `scale`.
fn chars_fitting(width: i64, scale: u32) -> usize {
    ((width + i64::from(scale)) / i64::from(CELL_W * scale)).max(0) as usize
}

/// `text` cut to at most `max_chars` characters, ending in "..." when cut.
fn ellipsize(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    if max_chars < 4 {
        return ".".repeat(max_chars);
    }
    let mut out: String = text.chars().take(max_chars - 3).collect();
    out.push_str("...");
    out
}

/// Draws `text` with its top-left corner at `(x, y)`, `scale` image pixels per font pixel.
fn draw_text(img: &mut RgbImage, text: &str, x: i64, y: i64, scale: u32, colour: Rgb<u8>) {
    let clip = Rect::of_image(img);
    let s = i64::from(scale);
    for (i, c) in text.chars().enumerate() {
        let cell_x = x + i as i64 * i64::from(CELL_W) * s;
        if cell_x >= clip.x1 {
            break;
        }
        for col in 0..CELL_W - 1 {
            for row in 0..GLYPH_H {
                if !glyph_pixel(c, col, row) {
                    continue;
                }
                let (px, py) = (cell_x + i64::from(col) * s, y + i64::from(row) * s);
                fill_rect(
                    img,
                    Rect {
                        x0: px,
                        y0: py,
                        x1: px + s,
                        y1: py + s,
                    },
                    colour,
                );
            }
        }
    }
}

/// Draws `text` turned 90 degrees counter-clockwise (read from bottom to top); `(x, y)` is the
/// top-left corner of its bounding box, `text_height` wide and `text_width` tall.
fn draw_text_up(img: &mut RgbImage, text: &str, x: i64, y: i64, scale: u32, colour: Rgb<u8>) {
    let s = i64::from(scale);
    let len = text_width(text, 1);
    for (i, c) in text.chars().enumerate() {
        for col in 0..CELL_W - 1 {
            for row in 0..GLYPH_H {
                if !glyph_pixel(c, col, row) {
                    continue;
                }
                let u = i as i64 * i64::from(CELL_W) + i64::from(col);
                let (px, py) = (x + i64::from(row) * s, y + (len - 1 - u) * s);
                fill_rect(
                    img,
                    Rect {
                        x0: px,
                        y0: py,
                        x1: px + s,
                        y1: py + s,
                    },
                    colour,
                );
            }
        }
    }
}

/// Draws the title centred at the top: at the title scale when it fits, else smaller and cut.
/// Returns the y just below it.
fn draw_title(img: &mut RgbImage, title: &str) -> i64 {
    let width = i64::from(img.width()) - 2 * PAD;
    let scale = if text_width(title, TITLE_SCALE) <= width {
        TITLE_SCALE
    } else {
        TEXT_SCALE
    };
    let title = ellipsize(title, chars_fitting(width, scale));
    let x = (i64::from(img.width()) - text_width(&title, scale)) / 2;
    draw_text(img, &title, x, PAD, scale, TEXT);
    PAD + text_height(TITLE_SCALE)
}

// ---------------------------------------------------------------------------------------------
// Axes and ticks.

/// A 1, 2 or 5 times a power of ten close to `span / target`.
fn nice_step(span: f64, target: usize) -> f64 {
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
fn widen(v: f64) -> (f64, f64) {
    let d = if v == 0.0 { 1.0 } else { v.abs() * 0.1 };
    (v - d, v + d)
}

/// Whether `(lo, hi)` can be used as an axis range.
fn usable(lo: f64, hi: f64) -> bool {
    lo.is_finite() && hi.is_finite() && hi > lo && (hi - lo).is_finite()
}

/// The axis range: `given` when it is finite (ordered, widened when empty), else the range of the
/// finite `data` extended to nice ticks, else `(0, 1)`.
fn axis_range(given: Option<(f64, f64)>, data: impl Iterator<Item = f64>) -> (f64, f64) {
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
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, String)> {
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
fn format_number(v: f64, decimals: usize, big: f64) -> String {
    if big >= 1e9 || (big > 0.0 && big < 1e-4) || decimals > 6 {
        format!("{v:.2e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// Maps data values to pixels along one axis; results clamped to +-1e7 so that absurd values
/// stay finite.
#[derive(Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    p0: f64,
    p1: f64,
}

impl Scale {
    fn map(&self, v: f64) -> f64 {
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
fn fitting_ticks(lo: f64, hi: f64, length: i64, horizontal: bool) -> Vec<(f64, String)> {
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

// ---------------------------------------------------------------------------------------------
// Line chart.

/// A line chart of several series, 960 x 640 pixels: one colour per series, a legend (in the
/// corner of the plot with the least drawn in it) when there is at least one series, grid lines
/// and labelled ticks on both axes, `x_label` under the x axis, `y_label` turned along the y axis.
///
/// Ranges: `x_range` / `y_range` when given (and finite; reversed bounds are swapped, an empty
/// range is widened), else the range of the finite data rounded out to nice ticks, `(0, 1)`
/// without data. Points outside the range are clipped at the plot's edge. Points with a NaN or
/// infinite coordinate are skipped and break the line; a point without neighbours is drawn as a
/// marker, and so is every point of a series with at most 60 points. Series without a name are
/// called "series N" in the legend; long names are cut with "...".
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_range: Option<(f64, f64)>,
    y_range: Option<(f64, f64)>,
) -> RgbImage {
    let mut img = RgbImage::from_pixel(LINE_W, LINE_H, BACKGROUND);
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = axis_range(x_range, all().map(|p| p.0));
    let (y0, y1) = axis_range(y_range, all().map(|p| p.1));

    let title_bottom = draw_title(&mut img, title);
    let th = text_height(TEXT_SCALE);
    let top = title_bottom + 20;
    let bottom = i64::from(LINE_H) - PAD - th - 12 - th - 8;
    let y_ticks = fitting_ticks(y0, y1, bottom - top, false);
    let tick_w = y_ticks
        .iter()
        .map(|(_, s)| text_width(s, TEXT_SCALE))
        .max()
        .unwrap_or(0);
    let left = PAD + th + 12 + tick_w + 8;
    let right = i64::from(LINE_W) - PAD - 14;
    let plot = Rect {
        x0: left,
        y0: top,
        x1: right,
        y1: bottom,
    };
    let inner = plot.inset(1);
    // The data range sits a few pixels inside the frame, so that a line along the range's edge
    // (precision 1, say) is not hidden under it.
    let margin = 6.0;
    let xs = Scale {
        lo: x0,
        hi: x1,
        p0: left as f64 + margin,
        p1: (right - 1) as f64 - margin,
    };
    let ys = Scale {
        lo: y0,
        hi: y1,
        p0: (bottom - 1) as f64 - margin,
        p1: top as f64 + margin,
    };
    let x_ticks = fitting_ticks(x0, x1, right - left, true);

    // Grid, tick labels, frame.
    for (v, label) in &y_ticks {
        let py = ys.map(*v).round() as i64;
        fill_rect(
            &mut img,
            Rect {
                y0: py,
                y1: py + 1,
                ..inner
            },
            GRID,
        );
        fill_rect(
            &mut img,
            Rect {
                x0: left - 5,
                y0: py,
                x1: left,
                y1: py + 1,
            },
            AXIS,
        );
        let tx = left - 8 - text_width(label, TEXT_SCALE);
        draw_text(&mut img, label, tx, py - th / 2, TEXT_SCALE, TEXT);
    }
    for (v, label) in &x_ticks {
        let px = xs.map(*v).round() as i64;
        fill_rect(
            &mut img,
            Rect {
                x0: px,
                x1: px + 1,
                ..inner
            },
            GRID,
        );
        fill_rect(
            &mut img,
            Rect {
                x0: px,
                y0: bottom,
                x1: px + 1,
                y1: bottom + 5,
            },
            AXIS,
        );
        let tx = px - text_width(label, TEXT_SCALE) / 2;
        draw_text(&mut img, label, tx, bottom + 8, TEXT_SCALE, TEXT);
    }
    stroke_rect(&mut img, plot, AXIS);

    // Axis labels.
    let x_label = ellipsize(x_label, chars_fitting(right - left, TEXT_SCALE));
    let lx = (left + right - text_width(&x_label, TEXT_SCALE)) / 2;
    draw_text(
        &mut img,
        &x_label,
        lx,
        bottom + 8 + th + 12,
        TEXT_SCALE,
        TEXT,
    );
    let y_label = ellipsize(y_label, chars_fitting(bottom - top, TEXT_SCALE));
    let ly = (top + bottom - text_width(&y_label, TEXT_SCALE)) / 2;
    draw_text_up(&mut img, &y_label, PAD, ly, TEXT_SCALE, TEXT);

    // Data.
    let mut any_point = false;
    for (i, s) in series.iter().enumerate() {
        let colour = series_colour(i);
        let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let to_px = |p: &(f64, f64)| (xs.map(p.0), ys.map(p.1));
        let markers = s.points.len() <= 60;
        for (j, p) in s.points.iter().enumerate() {
            if !finite(p) {
                continue;
            }
            any_point = true;
            let a = to_px(p);
            let next = s.points.get(j + 1).filter(|q| finite(q));
            if let Some(q) = next {
                draw_line(&mut img, &inner, a, to_px(q), 2, colour);
            }
            let prev = j
                .checked_sub(1)
                .and_then(|k| s.points.get(k))
                .filter(|q| finite(q));
            if markers || (next.is_none() && prev.is_none()) {
                let (cx, cy) = (a.0.round() as i64, a.1.round() as i64);
                for dy in -2..=2 {
                    for dx in -2..=2 {
                        put(&mut img, &inner, cx + dx, cy + dy, colour);
                    }
                }
            }
        }
    }
    if !any_point {
        let msg = "no data";
        let tx = (left + right - text_width(msg, TEXT_SCALE)) / 2;
        draw_text(
            &mut img,
            msg,
            tx,
            (top + bottom - th) / 2,
            TEXT_SCALE,
            MUTED,
        );
    }
    if !series.is_empty() {
        draw_legend(&mut img, &inner, series);
    }
    img
}

/// The legend: one row per series (colour swatch and name), as many as fit, then "+N more";
/// placed in the corner of `area` that covers the fewest drawn pixels.
fn draw_legend(img: &mut RgbImage, area: &Rect, series: &[Series]) {
    let th = text_height(TEXT_SCALE);
    let row_h = th + 6;
    let max_rows = (((area.y1 - area.y0) - 24) / row_h).max(1) as usize;
    let mut rows: Vec<(Option<Rgb<u8>>, String)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = if s.name.trim().is_empty() {
                format!("series {}", i + 1)
            } else {
                ellipsize(&s.name, MAX_LABEL_CHARS)
            };
            (Some(series_colour(i)), name)
        })
        .collect();
    if rows.len() > max_rows {
        let hidden = rows.len() - (max_rows - 1);
        rows.truncate(max_rows - 1);
        rows.push((None, format!("+{hidden} more")));
    }
    let swatch = 24;
    let text_w = rows
        .iter()
        .map(|(_, s)| text_width(s, TEXT_SCALE))
        .max()
        .unwrap_or(0);
    let w = (8 + swatch + 8 + text_w + 8).min(area.x1 - area.x0 - 16);
    let h = 8 + rows.len() as i64 * row_h + 2;
    let corners = [
        (area.x1 - 8 - w, area.y0 + 8),
        (area.x1 - 8 - w, area.y1 - 8 - h),
        (area.x0 + 8, area.y0 + 8),
        (area.x0 + 8, area.y1 - 8 - h),
    ];
    let ink = |img: &RgbImage, (x, y): (i64, i64)| {
        let r = Rect {
            x0: x,
            y0: y,
            x1: x + w,
            y1: y + h,
        }
        .intersect(&Rect::of_image(img));
        let mut n = 0usize;
        for py in r.y0..r.y1 {
            for px in r.x0..r.x1 {
                let c = *img.get_pixel(px as u32, py as u32);
                n += usize::from(c != BACKGROUND && c != GRID);
            }
        }
        n
    };
    let mut best = corners[0];
    let mut best_ink = usize::MAX;
    for c in corners {
        let n = ink(img, c);
        if n < best_ink {
            (best, best_ink) = (c, n);
        }
    }
    let (x, y) = best;
    let bx = Rect {
        x0: x,
        y0: y,
        x1: x + w,
        y1: y + h,
    };
    fill_rect(img, bx, BACKGROUND);
    stroke_rect(img, bx, GRID);
    let clip = Rect {
        x0: x + 1,
        y0: y + 1,
        x1: x + w - 1,
        y1: y + h - 1,
    };
    for (k, (colour, name)) in rows.iter().enumerate() {
        let ry = y + 6 + k as i64 * row_h;
        if let Some(colour) = colour {
            let cy = (ry + th / 2) as f64;
            let sx = (x + 8) as f64;
            draw_line(img, &clip, (sx, cy), (sx + swatch as f64, cy), 3, *colour);
        }
        let name = ellipsize(name, chars_fitting(w - swatch - 24, TEXT_SCALE));
        draw_text(img, &name, x + 8 + swatch + 8, ry, TEXT_SCALE, TEXT);
    }
}

// ---------------------------------------------------------------------------------------------
// Bar chart.

/// One row of a bar chart: the bar of value `i`, or a note standing for `n` hidden values.
enum Row {
    Bar(usize),
    Gap(usize),
}

/// The rows to draw: every value, or when there are more than [`BAR_CHART_MAX_ROWS`], the
/// highest and the lowest half of that (NaN counting as lowest), each block in the given order,
/// the block that starts earlier first, a gap row between them.
fn bar_rows(values: &[f64]) -> Vec<Row> {
    let n = values.len();
    if n <= BAR_CHART_MAX_ROWS {
        return (0..n).map(Row::Bar).collect();
    }
    let k = BAR_CHART_MAX_ROWS / 2;
    let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| key(values[b]).total_cmp(&key(values[a])).then(a.cmp(&b)));
    let mut high = order[..k].to_vec();
    let mut low = order[n - k..].to_vec();
    high.sort_unstable();
    low.sort_unstable();
    let (first, second) = if high[0] < low[0] {
        (high, low)
    } else {
        (low, high)
    };
    let mut rows: Vec<Row> = first.into_iter().map(Row::Bar).collect();
    rows.push(Row::Gap(n - 2 * k));
    rows.extend(second.into_iter().map(Row::Bar));
    rows
}

/// A horizontal bar chart, one bar per value in the given order, labelled with `names` (an
/// empty or missing name shows as `#index`; names are cut at 30 characters with "..."), the
/// value printed after each bar, and value ticks above and below. 1000 pixels wide; the height
/// grows by 20 pixels per bar. More than [`BAR_CHART_MAX_ROWS`] values are shown as the
/// highest and the lowest `BAR_CHART_MAX_ROWS / 2` (so the height stays under about 2200
/// pixels), with a note under the title and a row saying how many are hidden.
///
/// Bars start at 0 (clamped into `value_range`) and are clipped to `value_range`; a range that
/// is not finite falls back to the range of the values, an empty one is widened. NaN or infinite
/// values get no bar and read "n/a".
pub fn bar_chart(
    title: &str,
    value_label: &str,
    names: &[String],
    values: &[f64],
    value_range: (f64, f64),
) -> RgbImage {
    let rows = bar_rows(values);
    let note = (rows.len() < values.len()).then(|| {
        format!(
            "showing the {} highest and {} lowest of {} values",
            BAR_CHART_MAX_ROWS / 2,
            BAR_CHART_MAX_ROWS / 2,
            values.len()
        )
    });
    let (lo, hi) = axis_range(Some(value_range), values.iter().copied());
    let th = text_height(TEXT_SCALE);
    let pitch = i64::from(BAR_PITCH);

    let header = PAD + text_height(TITLE_SCALE) + 12 + note.as_ref().map_or(0, |_| th + 10);
    let top = header + th + 10;
    let plot_h = if rows.is_empty() {
        3 * pitch
    } else {
        rows.len() as i64 * pitch + 6
    };
    let bottom = top + plot_h;
    let height = bottom + 10 + th + 12 + th + PAD;
    let mut img = RgbImage::from_pixel(BAR_W, height as u32, BACKGROUND);
    draw_title(&mut img, title);
    if let Some(note) = &note {
        let x = (i64::from(BAR_W) - text_width(note, TEXT_SCALE)) / 2;
        draw_text(
            &mut img,
            note,
            x,
            PAD + text_height(TITLE_SCALE) + 12,
            TEXT_SCALE,
            MUTED,
        );
    }

    let label = |i: usize| -> String {
        match names.get(i) {
            Some(name) if !name.trim().is_empty() => ellipsize(name, MAX_LABEL_CHARS),
            _ => format!("#{i}"),
        }
    };
    let name_w = rows
        .iter()
        .map(|r| match r {
            Row::Bar(i) => text_width(&label(*i), TEXT_SCALE),
            Row::Gap(_) => 0,
        })
        .max()
        .unwrap_or(0)
        .max(text_width("####", TEXT_SCALE));
    let x_ticks0 = ticks(lo, hi, 8);
    let decimals = x_ticks0.get(1).zip(x_ticks0.first()).map_or(1, |(b, a)| {
        let step = b.0 - a.0;
        if step >= 1.0 || step <= 0.0 {
            1
        } else {
            ((-step.log10().floor()) as usize + 1).min(6)
        }
    });
    let value_text = |v: f64| {
        if v.is_finite() {
            format_number(v, decimals, lo.abs().max(hi.abs()))
        } else {
            "n/a".to_string()
        }
    };
    let value_w = values
        .iter()
        .map(|&v| text_width(&value_text(v), TEXT_SCALE))
        .max()
        .unwrap_or(0)
        .max(text_width("n/a", TEXT_SCALE));
    let left = PAD + name_w + 10;
    let right = (i64::from(BAR_W) - PAD - value_w - 8).max(left + 100);
    let xs = Scale {
        lo,
        hi,
        p0: left as f64,
        p1: (right - 1) as f64,
    };
    let plot = Rect {
        x0: left,
        y0: top,
        x1: right,
        y1: bottom,
    };
    let inner = plot.inset(1);

    // Stripes, grid, ticks above and below.
    for k in (1..rows.len()).step_by(2) {
        let y0 = top + 3 + k as i64 * pitch - (pitch - i64::from(BAR_THICKNESS)) / 2;
        fill_rect(
            &mut img,
            Rect {
                y0,
                y1: y0 + pitch,
                ..inner
            },
            STRIPE,
        );
    }
    for (v, label) in fitting_ticks(lo, hi, right - left, true) {
        let px = xs.map(v).round() as i64;
        fill_rect(
            &mut img,
            Rect {
                x0: px,
                x1: px + 1,
                ..inner
            },
            GRID,
        );
        for (y0, y1) in [(top - 5, top), (bottom, bottom + 5)] {
            fill_rect(
                &mut img,
                Rect {
                    x0: px,
                    y0,
                    x1: px + 1,
                    y1,
                },
                AXIS,
            );
        }
        let tx = px - text_width(&label, TEXT_SCALE) / 2;
        draw_text(&mut img, &label, tx, top - 8 - th, TEXT_SCALE, TEXT);
        draw_text(&mut img, &label, tx, bottom + 8, TEXT_SCALE, TEXT);
    }
    let value_label = ellipsize(value_label, chars_fitting(right - left, TEXT_SCALE));
    let lx = (left + right - text_width(&value_label, TEXT_SCALE)) / 2;
    draw_text(
        &mut img,
        &value_label,
        lx,
        bottom + 8 + th + 12,
        TEXT_SCALE,
        TEXT,
    );

    // Bars.
    let base = xs.map(0f64.clamp(lo, hi)).round() as i64;
    for (k, row) in rows.iter().enumerate() {
        let ry = top + 3 + k as i64 * pitch;
        let text_y = ry + (i64::from(BAR_THICKNESS) - th) / 2;
        match *row {
            Row::Bar(i) => {
                let name = label(i);
                let nx = left - 10 - text_width(&name, TEXT_SCALE);
                draw_text(&mut img, &name, nx, text_y, TEXT_SCALE, TEXT);
                let v = values[i];
                let mut end = base;
                if v.is_finite() {
                    end = xs.map(v.clamp(lo, hi)).round() as i64;
                    let (x0, x1) = if end >= base {
                        (base, end + 1)
                    } else {
                        (end, base + 1)
                    };
                    let bar = Rect {
                        x0,
                        y0: ry,
                        x1,
                        y1: ry + i64::from(BAR_THICKNESS),
                    };
                    fill_rect(&mut img, bar.intersect(&inner), BAR);
                }
                // The value after the bar, on the row's background (hiding grid lines under it).
                let text = value_text(v);
                let tx = end.max(base) + 5;
                let row_bg = if k % 2 == 1 { STRIPE } else { BACKGROUND };
                let behind = Rect {
                    x0: tx - 2,
                    y0: ry,
                    x1: tx + text_width(&text, TEXT_SCALE) + 2,
                    y1: ry + i64::from(BAR_THICKNESS),
                };
                fill_rect(&mut img, behind, row_bg);
                draw_text(&mut img, &text, tx, text_y, TEXT_SCALE, TEXT);
            }
            Row::Gap(n) => {
                let msg = format!("... {n} values not shown ...");
                let tx = (left + right - text_width(&msg, TEXT_SCALE)) / 2;
                fill_rect(
                    &mut img,
                    Rect {
                        y0: ry - 3,
                        y1: ry - 3 + pitch,
                        ..inner
                    },
                    BACKGROUND,
                );
                draw_text(&mut img, &msg, tx, text_y, TEXT_SCALE, MUTED);
            }
        }
    }
    if rows.is_empty() {
        let msg = "no data";
        let tx = (left + right - text_width(msg, TEXT_SCALE)) / 2;
        draw_text(
            &mut img,
            msg,
            tx,
            (top + bottom - th) / 2,
            TEXT_SCALE,
            MUTED,
        );
    }
    // Frame: top, bottom and the bars' axis on the left; open on the right, where the values are.
    for edge in [
        Rect {
            y1: top + 1,
            ..plot
        },
        Rect {
            y0: bottom - 1,
            ..plot
        },
        Rect {
            x1: left + 1,
            ..plot
        },
    ] {
        fill_rect(&mut img, edge, AXIS);
    }
    img
}

// ---------------------------------------------------------------------------------------------
// Precision-recall curve.

/// Precision-recall curve points of one class from scores and labels (`1` positive, `0`
/// negative, `-1` ignored; like [`asl_core::metrics`], any label `>= 0` other than `1` counts as
/// negative and any negative label as ignored; extra scores or labels beyond the shorter slice
/// are ignored): one `(recall, precision)` point after each rank of the non-ignored samples,
/// ranked by descending score with ties broken by descending sample index (`-0.0` equal to
/// `0.0`), exactly as [`asl_core::metrics::average_precision`] ranks them. Empty when the class
/// has no positives.
///
/// The mean of the precisions at the ranks that hold a positive (equivalently the area under
/// this step curve, `sum (r_i - r_{i-1}) p_i`) is the class's AP up to the metric's `1e-8`.
///
/// ```
/// use asl_cli::plots::pr_curve;
/// // Ranking: 0.9 (pos), 0.8 (neg), 0.7 (pos).
/// let pts = pr_curve(&[0.9, 0.8, 0.7], &[1, 0, 1]);
/// assert_eq!(pts, vec![(0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0)]);
/// ```
pub fn pr_curve(scores: &[f32], labels: &[i8]) -> Vec<(f64, f64)> {
    asl_core::metrics::precision_recall_curve(scores, labels)
}

// ---------------------------------------------------------------------------------------------
// Saving.

/// Writes an image as PNG atomically ([`crate::files::write_atomic`]: a temporary file next to
/// `path`, synced, renamed over it; the directory is created first). On error `path` is left as
/// it was and no temporary file remains.
pub fn save_png(img: &RgbImage, path: &Path) -> io::Result<()> {
    crate::files::write_atomic(path, |w| {
        img.write_with_encoder(PngEncoder::new(w))
            .map_err(io::Error::other)
    })
}
