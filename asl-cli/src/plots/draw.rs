//! Drawing primitives: rectangles, clipped lines, text in the bitmap font.

use image::{Rgb, RgbImage};

use super::font::glyph_pixel;
use super::*;

// ---------------------------------------------------------------------------------------------
// Raster primitives (all clipped, signed coordinates).

/// An axis-aligned rectangle, `x0..x1` by `y0..y1` (exclusive ends).
#[derive(Clone, Copy, Debug)]
pub(super) struct Rect {
    pub(super) x0: i64,
    pub(super) y0: i64,
    pub(super) x1: i64,
    pub(super) y1: i64,
}

impl Rect {
    /// The rectangle `by` pixels inside this one on every side.
    pub(super) fn inset(&self, by: i64) -> Rect {
        Rect {
            x0: self.x0 + by,
            y0: self.y0 + by,
            x1: self.x1 - by,
            y1: self.y1 - by,
        }
    }

    pub(super) fn of_image(img: &RgbImage) -> Rect {
        Rect {
            x0: 0,
            y0: 0,
            x1: i64::from(img.width()),
            y1: i64::from(img.height()),
        }
    }

    pub(super) fn contains(&self, x: i64, y: i64) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }

    pub(super) fn intersect(&self, o: &Rect) -> Rect {
        Rect {
            x0: self.x0.max(o.x0),
            y0: self.y0.max(o.y0),
            x1: self.x1.min(o.x1),
            y1: self.y1.min(o.y1),
        }
    }
}

pub(super) fn put(img: &mut RgbImage, clip: &Rect, x: i64, y: i64, colour: Rgb<u8>) {
    if clip.contains(x, y) && Rect::of_image(img).contains(x, y) {
        img.put_pixel(x as u32, y as u32, colour);
    }
}

pub(super) fn fill_rect(img: &mut RgbImage, r: Rect, colour: Rgb<u8>) {
    let r = r.intersect(&Rect::of_image(img));
    for y in r.y0..r.y1 {
        for x in r.x0..r.x1 {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// A one-pixel rectangle outline.
pub(super) fn stroke_rect(img: &mut RgbImage, r: Rect, colour: Rgb<u8>) {
    fill_rect(img, Rect { y1: r.y0 + 1, ..r }, colour);
    fill_rect(img, Rect { y0: r.y1 - 1, ..r }, colour);
    fill_rect(img, Rect { x1: r.x0 + 1, ..r }, colour);
    fill_rect(img, Rect { x0: r.x1 - 1, ..r }, colour);
}

/// Clips the segment to `clip` (Liang-Barsky); `None` when nothing of it is inside.
pub(super) fn clip_segment(
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
pub(super) fn draw_line(
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
pub(super) fn text_width(text: &str, scale: u32) -> i64 {
    let cells = text.chars().count() as i64 * i64::from(CELL_W);
    (cells - 1).max(0) * i64::from(scale)
}

pub(super) fn text_height(scale: u32) -> i64 {
    i64::from(GLYPH_H * scale)
}

/// How many characters fit in `width` pixels at `scale`.
pub(super) fn chars_fitting(width: i64, scale: u32) -> usize {
    ((width + i64::from(scale)) / i64::from(CELL_W * scale)).max(0) as usize
}

/// `text` cut to at most `max_chars` characters, ending in "..." when cut.
pub(super) fn ellipsize(text: &str, max_chars: usize) -> String {
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
pub(super) fn draw_text(
    img: &mut RgbImage,
    text: &str,
    x: i64,
    y: i64,
    scale: u32,
    colour: Rgb<u8>,
) {
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
pub(super) fn draw_text_up(
    img: &mut RgbImage,
    text: &str,
    x: i64,
    y: i64,
    scale: u32,
    colour: Rgb<u8>,
) {
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
pub(super) fn draw_title(img: &mut RgbImage, title: &str) -> i64 {
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
