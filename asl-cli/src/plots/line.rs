//! Line charts (training curves, precision-recall curves) with a legend.

use image::{Rgb, RgbImage};

use super::axes::*;
use super::draw::*;
use super::*;

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
    let x = axis_range(x_range, all().map(|p| p.0));
    let y = axis_range(y_range, all().map(|p| p.1));
    let title_bottom = draw_title(&mut img, title);
    let layout = Layout::new(title_bottom, x, y);
    layout.grid(&mut img);
    layout.axis_labels(&mut img, x_label, y_label);
    let any_point = series.iter().enumerate().fold(false, |any, (i, s)| {
        layout.series(&mut img, s, series_colour(i)) || any
    });
    if !any_point {
        let (plot, th) = (&layout.plot, text_height(TEXT_SCALE));
        let msg = "no data";
        let tx = (plot.x0 + plot.x1 - text_width(msg, TEXT_SCALE)) / 2;
        let ty = (plot.y0 + plot.y1 - th) / 2;
        draw_text(&mut img, msg, tx, ty, TEXT_SCALE, MUTED);
    }
    if !series.is_empty() {
        draw_legend(&mut img, &layout.plot.inset(1), series);
    }
    img
}

/// Where a line chart's parts go: the plot frame, the data-to-pixel scales, the ticks.
struct Layout {
    plot: Rect,
    xs: Scale,
    ys: Scale,
    x_ticks: Vec<(f64, String)>,
    y_ticks: Vec<(f64, String)>,
}

impl Layout {
    /// The layout under a title ending at `title_bottom`, for data ranges `x` and `y`.
    fn new(title_bottom: i64, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Layout {
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
        // The data range sits a few pixels inside the frame, so that a line along the range's
        // edge (precision 1, say) is not hidden under it.
        let margin = 6.0;
        Layout {
            plot: Rect {
                x0: left,
                y0: top,
                x1: right,
                y1: bottom,
            },
            xs: Scale {
                lo: x0,
                hi: x1,
                p0: left as f64 + margin,
                p1: (right - 1) as f64 - margin,
            },
            ys: Scale {
                lo: y0,
                hi: y1,
                p0: (bottom - 1) as f64 - margin,
                p1: top as f64 + margin,
            },
            x_ticks: fitting_ticks(x0, x1, right - left, true),
            y_ticks,
        }
    }

    /// Grid lines, ticks and their labels, the frame.
    fn grid(&self, img: &mut RgbImage) {
        let (plot, inner, th) = (self.plot, self.plot.inset(1), text_height(TEXT_SCALE));
        for (v, label) in &self.y_ticks {
            let py = self.ys.map(*v).round() as i64;
            let line = Rect {
                y0: py,
                y1: py + 1,
                ..inner
            };
            fill_rect(img, line, GRID);
            let tick = Rect {
                x0: plot.x0 - 5,
                y0: py,
                x1: plot.x0,
                y1: py + 1,
            };
            fill_rect(img, tick, AXIS);
            let tx = plot.x0 - 8 - text_width(label, TEXT_SCALE);
            draw_text(img, label, tx, py - th / 2, TEXT_SCALE, TEXT);
        }
        for (v, label) in &self.x_ticks {
            let px = self.xs.map(*v).round() as i64;
            let line = Rect {
                x0: px,
                x1: px + 1,
                ..inner
            };
            fill_rect(img, line, GRID);
            let tick = Rect {
                x0: px,
                y0: plot.y1,
                x1: px + 1,
                y1: plot.y1 + 5,
            };
            fill_rect(img, tick, AXIS);
            let tx = px - text_width(label, TEXT_SCALE) / 2;
            draw_text(img, label, tx, plot.y1 + 8, TEXT_SCALE, TEXT);
        }
        stroke_rect(img, plot, AXIS);
    }

    /// `x_label` under the x axis, `y_label` turned along the y axis.
    fn axis_labels(&self, img: &mut RgbImage, x_label: &str, y_label: &str) {
        let (p, th) = (self.plot, text_height(TEXT_SCALE));
        let x_label = ellipsize(x_label, chars_fitting(p.x1 - p.x0, TEXT_SCALE));
        let lx = (p.x0 + p.x1 - text_width(&x_label, TEXT_SCALE)) / 2;
        draw_text(img, &x_label, lx, p.y1 + 8 + th + 12, TEXT_SCALE, TEXT);
        let y_label = ellipsize(y_label, chars_fitting(p.y1 - p.y0, TEXT_SCALE));
        let ly = (p.y0 + p.y1 - text_width(&y_label, TEXT_SCALE)) / 2;
        draw_text_up(img, &y_label, PAD, ly, TEXT_SCALE, TEXT);
    }

    /// One series' lines and markers; whether it had a finite point.
    fn series(&self, img: &mut RgbImage, s: &Series, colour: Rgb<u8>) -> bool {
        let inner = self.plot.inset(1);
        let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let to_px = |p: &(f64, f64)| (self.xs.map(p.0), self.ys.map(p.1));
        let markers = s.points.len() <= 60;
        let mut any_point = false;
        for (j, p) in s.points.iter().enumerate() {
            if !finite(p) {
                continue;
            }
            any_point = true;
            let a = to_px(p);
            let next = s.points.get(j + 1).filter(|q| finite(q));
            if let Some(q) = next {
                draw_line(img, &inner, a, to_px(q), 2, colour);
            }
            let prev = j
                .checked_sub(1)
                .and_then(|k| s.points.get(k))
                .filter(|q| finite(q));
            if markers || (next.is_none() && prev.is_none()) {
                let (cx, cy) = (a.0.round() as i64, a.1.round() as i64);
                for dy in -2..=2 {
                    for dx in -2..=2 {
                        put(img, &inner, cx + dx, cy + dy, colour);
                    }
                }
            }
        }
        any_point
    }
}

/// The legend: one row per series (colour swatch and name), as many as fit, then "+N more";
/// placed in the corner of `area` that covers the fewest drawn pixels.
pub(super) fn draw_legend(img: &mut RgbImage, area: &Rect, series: &[Series]) {
    let th = text_height(TEXT_SCALE);
    let row_h = th + 6;
    let max_rows = (((area.y1 - area.y0) - 24) / row_h).max(1) as usize;
    let rows = legend_rows(series, max_rows);
    let swatch = 24;
    let text_w = rows
        .iter()
        .map(|(_, s)| text_width(s, TEXT_SCALE))
        .max()
        .unwrap_or(0);
    let w = (8 + swatch + 8 + text_w + 8).min(area.x1 - area.x0 - 16);
    let h = 8 + rows.len() as i64 * row_h + 2;
    let (x, y) = emptiest_corner(img, area, w, h);
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

/// The legend's rows, at most `max_rows`: each series' colour and name ("series N" when it has
/// none), the last row "+N more" (no colour) when they do not all fit.
fn legend_rows(series: &[Series], max_rows: usize) -> Vec<(Option<Rgb<u8>>, String)> {
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
    rows
}

/// The top-left corner of a `w` x `h` box inside `area` (8 pixels from its edges) that covers
/// the fewest drawn pixels: top right, bottom right, top left, bottom left, the first on ties.
fn emptiest_corner(img: &RgbImage, area: &Rect, w: i64, h: i64) -> (i64, i64) {
    let corners = [
        (area.x1 - 8 - w, area.y0 + 8),
        (area.x1 - 8 - w, area.y1 - 8 - h),
        (area.x0 + 8, area.y0 + 8),
        (area.x0 + 8, area.y1 - 8 - h),
    ];
    let ink = |(x, y): (i64, i64)| {
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
        let n = ink(c);
        if n < best_ink {
            (best, best_ink) = (c, n);
        }
    }
    best
}
