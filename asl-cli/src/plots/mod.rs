//! Charts as PNG images: per-class AP bars and precision-recall curves for `validate --plots`,
//! training curves (loss and mAP per epoch) for `train`.
//!
//! Everything is drawn with the embedded 5x7 bitmap font of [`font`] (at 2x or 3x), so
//! the output depends on no installed font and is the same pixel for pixel on every machine.
//!
//! - [`line_chart`]: several named series, distinct colours, a legend placed in the emptiest
//!   corner of the plot, axes with "nice" ticks (1, 2, 5 x 10^k) and labels. 960 x 640 pixels.
//! - [`bar_chart`]: horizontal bars with the class names as labels, 1000 pixels wide, 20 pixels
//!   per bar; more than [`BAR_CHART_MAX_ROWS`] bars are reduced to the highest and lowest values
//!   with a note saying so.
//! - [`save_png`]: writes a chart atomically.
//!
//! Degenerate input never panics: non-finite values are skipped (a gap in a line, "n/a" on a
//! bar), empty or zero-width ranges are widened, long labels are cut with "...", characters
//! outside printable ASCII are drawn as '?'.

use std::io;
use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{Rgb, RgbImage};

mod axes;
mod bar;
mod curves;
mod draw;
mod font;
mod line;

pub use bar::bar_chart;
pub use curves::Curves;
pub use font::annotate;
pub use line::line_chart;

/// One named series of (x, y) points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Width and height of a [`line_chart`].
pub(super) const LINE_W: u32 = 960;
pub(super) const LINE_H: u32 = 640;
/// Width of a [`bar_chart`]; its height grows by [`BAR_PITCH`] per bar.
pub(super) const BAR_W: u32 = 1000;
/// Vertical distance between two bars, and the height of one bar.
pub(super) const BAR_PITCH: u32 = 20;
pub(super) const BAR_THICKNESS: u32 = 14;
/// The most bars a [`bar_chart`] draws; beyond that it shows the `BAR_CHART_MAX_ROWS / 2`
/// highest and as many lowest values.
pub const BAR_CHART_MAX_ROWS: usize = 100;

/// Glyph size of the font in font pixels (see `images/font.rs`), and the cell width (one blank
/// column after each glyph).
pub(super) const GLYPH_H: u32 = 7;
pub(super) const CELL_W: u32 = 6;
/// Text scales: titles, everything else.
pub(super) const TITLE_SCALE: u32 = 3;
pub(super) const TEXT_SCALE: u32 = 2;
/// Longest label kept (class names, series names) before cutting with "...".
pub(super) const MAX_LABEL_CHARS: usize = 30;
/// Outer margin of every chart.
pub(super) const PAD: i64 = 16;

pub(super) const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
pub(super) const TEXT: Rgb<u8> = Rgb([30, 30, 30]);
pub(super) const MUTED: Rgb<u8> = Rgb([110, 110, 110]);
pub(super) const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
pub(super) const GRID: Rgb<u8> = Rgb([228, 228, 228]);
pub(super) const STRIPE: Rgb<u8> = Rgb([246, 246, 246]);
pub(super) const BAR: Rgb<u8> = Rgb([31, 119, 180]);

/// Series colours (Tableau 10, grey replaced by a dark teal so that no series looks like an
/// axis); further series get golden-angle hues.
pub(super) const PALETTE: [Rgb<u8>; 10] = [
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
pub(super) fn series_colour(i: usize) -> Rgb<u8> {
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
// Saving.

/// Writes an image as PNG atomically ([`asl_tresnet::write_atomic`]: a temporary file next to
/// `path`, synced, renamed over it; the directory is created first). On error `path` is left as
/// it was and no temporary file remains.
pub fn save_png(img: &RgbImage, path: &Path) -> io::Result<()> {
    asl_tresnet::write_atomic(path, |w| {
        img.write_with_encoder(PngEncoder::new(w))
            .map_err(io::Error::other)
    })
}

#[cfg(test)]
mod tests;
