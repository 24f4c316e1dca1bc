//! Horizontal bar charts (per-class AP), with an ellipsis row when there are too many.

use image::RgbImage;

use super::axes::*;
use super::draw::*;
use super::*;

// ---------------------------------------------------------------------------------------------
// Bar chart.

/// One row of a bar chart: the bar of value `i`, or a note standing for `n` hidden values.
pub(super) enum Row {
    Bar(usize),
    Gap(usize),
}

/// The rows to draw: every value, or when there are more than [`BAR_CHART_MAX_ROWS`], the
/// highest and the lowest half of that (NaN counting as lowest), each block in the given order,
/// the block that starts earlier first, a gap row between them.
pub(super) fn bar_rows(values: &[f64]) -> Vec<Row> {
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
    let chart = BarChart::new(names, values, value_range, &rows, note.is_some());
    let mut img = RgbImage::from_pixel(BAR_W, chart.height as u32, BACKGROUND);
    draw_title(&mut img, title);
    if let Some(note) = &note {
        let x = (i64::from(BAR_W) - text_width(note, TEXT_SCALE)) / 2;
        let y = PAD + text_height(TITLE_SCALE) + 12;
        draw_text(&mut img, note, x, y, TEXT_SCALE, MUTED);
    }
    chart.grid(&mut img, rows.len(), value_label);
    for (k, row) in rows.iter().enumerate() {
        chart.row(&mut img, k, row);
    }
    let (plot, th) = (chart.plot, text_height(TEXT_SCALE));
    if rows.is_empty() {
        let msg = "no data";
        let tx = (plot.x0 + plot.x1 - text_width(msg, TEXT_SCALE)) / 2;
        draw_text(
            &mut img,
            msg,
            tx,
            (plot.y0 + plot.y1 - th) / 2,
            TEXT_SCALE,
            MUTED,
        );
    }
    // Frame: top, bottom and the bars' axis on the left; open on the right, where the values are.
    for edge in [
        Rect {
            y1: plot.y0 + 1,
            ..plot
        },
        Rect {
            y0: plot.y1 - 1,
            ..plot
        },
        Rect {
            x1: plot.x0 + 1,
            ..plot
        },
    ] {
        fill_rect(&mut img, edge, AXIS);
    }
    img
}

/// A bar chart's layout and what its rows show.
struct BarChart<'a> {
    names: &'a [String],
    values: &'a [f64],
    /// The value range `(lo, hi)`.
    range: (f64, f64),
    /// Decimals of the printed values.
    decimals: usize,
    plot: Rect,
    xs: Scale,
    height: i64,
}

impl<'a> BarChart<'a> {
    fn new(
        names: &'a [String],
        values: &'a [f64],
        value_range: (f64, f64),
        rows: &[Row],
        note: bool,
    ) -> BarChart<'a> {
        let (lo, hi) = axis_range(Some(value_range), values.iter().copied());
        let th = text_height(TEXT_SCALE);
        let pitch = i64::from(BAR_PITCH);
        let header = PAD + text_height(TITLE_SCALE) + 12 + if note { th + 10 } else { 0 };
        let top = header + th + 10;
        let plot_h = if rows.is_empty() {
            3 * pitch
        } else {
            rows.len() as i64 * pitch + 6
        };
        let bottom = top + plot_h;
        let x_ticks0 = ticks(lo, hi, 8);
        let decimals = x_ticks0.get(1).zip(x_ticks0.first()).map_or(1, |(b, a)| {
            let step = b.0 - a.0;
            if step >= 1.0 || step <= 0.0 {
                1
            } else {
                ((-step.log10().floor()) as usize + 1).min(6)
            }
        });
        let mut chart = BarChart {
            names,
            values,
            range: (lo, hi),
            decimals,
            plot: Rect {
                x0: 0,
                y0: top,
                x1: 0,
                y1: bottom,
            },
            xs: Scale {
                lo,
                hi,
                p0: 0.0,
                p1: 0.0,
            },
            height: bottom + 10 + th + 12 + th + PAD,
        };
        let name_w = rows
            .iter()
            .map(|r| match r {
                Row::Bar(i) => text_width(&chart.label(*i), TEXT_SCALE),
                Row::Gap(_) => 0,
            })
            .max()
            .unwrap_or(0)
            .max(text_width("####", TEXT_SCALE));
        let value_w = values
            .iter()
            .map(|&v| text_width(&chart.value_text(v), TEXT_SCALE))
            .max()
            .unwrap_or(0)
            .max(text_width("n/a", TEXT_SCALE));
        let left = PAD + name_w + 10;
        let right = (i64::from(BAR_W) - PAD - value_w - 8).max(left + 100);
        (chart.plot.x0, chart.plot.x1) = (left, right);
        (chart.xs.p0, chart.xs.p1) = (left as f64, (right - 1) as f64);
        chart
    }

    /// The label of value `i`: its name cut to [`MAX_LABEL_CHARS`], or `#i`.
    fn label(&self, i: usize) -> String {
        match self.names.get(i) {
            Some(name) if !name.trim().is_empty() => ellipsize(name, MAX_LABEL_CHARS),
            _ => format!("#{i}"),
        }
    }

    fn value_text(&self, v: f64) -> String {
        let (lo, hi) = self.range;
        if v.is_finite() {
            format_number(v, self.decimals, lo.abs().max(hi.abs()))
        } else {
            "n/a".to_string()
        }
    }

    /// Stripes, grid, ticks above and below, the value label.
    fn grid(&self, img: &mut RgbImage, rows: usize, value_label: &str) {
        let (plot, inner, th) = (self.plot, self.plot.inset(1), text_height(TEXT_SCALE));
        let pitch = i64::from(BAR_PITCH);
        for k in (1..rows).step_by(2) {
            let y0 = plot.y0 + 3 + k as i64 * pitch - (pitch - i64::from(BAR_THICKNESS)) / 2;
            let stripe = Rect {
                y0,
                y1: y0 + pitch,
                ..inner
            };
            fill_rect(img, stripe, STRIPE);
        }
        let (lo, hi) = self.range;
        for (v, label) in fitting_ticks(lo, hi, plot.x1 - plot.x0, true) {
            let px = self.xs.map(v).round() as i64;
            let line = Rect {
                x0: px,
                x1: px + 1,
                ..inner
            };
            fill_rect(img, line, GRID);
            for (y0, y1) in [(plot.y0 - 5, plot.y0), (plot.y1, plot.y1 + 5)] {
                let tick = Rect {
                    x0: px,
                    y0,
                    x1: px + 1,
                    y1,
                };
                fill_rect(img, tick, AXIS);
            }
            let tx = px - text_width(&label, TEXT_SCALE) / 2;
            draw_text(img, &label, tx, plot.y0 - 8 - th, TEXT_SCALE, TEXT);
            draw_text(img, &label, tx, plot.y1 + 8, TEXT_SCALE, TEXT);
        }
        let value_label = ellipsize(value_label, chars_fitting(plot.x1 - plot.x0, TEXT_SCALE));
        let lx = (plot.x0 + plot.x1 - text_width(&value_label, TEXT_SCALE)) / 2;
        draw_text(
            img,
            &value_label,
            lx,
            plot.y1 + 8 + th + 12,
            TEXT_SCALE,
            TEXT,
        );
    }

    /// Row `k`: a bar with its name and value, or the note of a gap.
    fn row(&self, img: &mut RgbImage, k: usize, row: &Row) {
        let (plot, th) = (self.plot, text_height(TEXT_SCALE));
        let ry = plot.y0 + 3 + k as i64 * i64::from(BAR_PITCH);
        let text_y = ry + (i64::from(BAR_THICKNESS) - th) / 2;
        match *row {
            Row::Bar(i) => {
                let name = self.label(i);
                let nx = plot.x0 - 10 - text_width(&name, TEXT_SCALE);
                draw_text(img, &name, nx, text_y, TEXT_SCALE, TEXT);
                self.bar(img, k, i, ry, text_y);
            }
            Row::Gap(n) => {
                let msg = format!("... {n} values not shown ...");
                let tx = (plot.x0 + plot.x1 - text_width(&msg, TEXT_SCALE)) / 2;
                let blank = Rect {
                    y0: ry - 3,
                    y1: ry - 3 + i64::from(BAR_PITCH),
                    ..plot.inset(1)
                };
                fill_rect(img, blank, BACKGROUND);
                draw_text(img, &msg, tx, text_y, TEXT_SCALE, MUTED);
            }
        }
    }

    /// The bar of value `i` in row `k` (top `ry`), and the value printed after it.
    fn bar(&self, img: &mut RgbImage, k: usize, i: usize, ry: i64, text_y: i64) {
        let (lo, hi) = self.range;
        let base = self.xs.map(0f64.clamp(lo, hi)).round() as i64;
        let v = self.values[i];
        let mut end = base;
        if v.is_finite() {
            end = self.xs.map(v.clamp(lo, hi)).round() as i64;
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
            fill_rect(img, bar.intersect(&self.plot.inset(1)), BAR);
        }
        // The value after the bar, on the row's background (hiding grid lines under it).
        let text = self.value_text(v);
        let tx = end.max(base) + 5;
        let row_bg = if k % 2 == 1 { STRIPE } else { BACKGROUND };
        let behind = Rect {
            x0: tx - 2,
            y0: ry,
            x1: tx + text_width(&text, TEXT_SCALE) + 2,
            y1: ry + i64::from(BAR_THICKNESS),
        };
        fill_rect(img, behind, row_bg);
        draw_text(img, &text, tx, text_y, TEXT_SCALE, TEXT);
    }
}
