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
