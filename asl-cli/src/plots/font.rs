//! A 5x7 bitmap font for printable ASCII, written out as data, and the label box of
//! [`super::annotate`].
//!
//! Embedded so that annotating needs no font-rendering crate and no font file (and so no font
//! licence to track). The glyph shapes follow the classic 5x7 LCD character layout.

use image::{Rgb, RgbImage};

/// Glyph width and height in font pixels.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;
/// Cell size: one blank column after each glyph, one blank row between lines plus a little
/// leading so that lines do not touch.
const CELL_W: u32 = GLYPH_W + 1;
const LINE_H: u32 = GLYPH_H + 3;

/// Glyphs for `' '..='~'`, five columns each, least significant bit at the top row.
#[rustfmt::skip]
const GLYPHS: [[u8; 5]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x00, 0x00, 0x5F, 0x00, 0x00], // !
    [0x00, 0x07, 0x00, 0x07, 0x00], // "
    [0x14, 0x7F, 0x14, 0x7F, 0x14], // #
    [0x24, 0x2A, 0x7F, 0x2A, 0x12], // $
    [0x23, 0x13, 0x08, 0x64, 0x62], // %
    [0x36, 0x49, 0x55, 0x22, 0x50], // &
    [0x00, 0x05, 0x03, 0x00, 0x00], // '
    [0x00, 0x1C, 0x22, 0x41, 0x00], // (
    [0x00, 0x41, 0x22, 0x1C, 0x00], // )
    [0x08, 0x2A, 0x1C, 0x2A, 0x08], // *
    [0x08, 0x08, 0x3E, 0x08, 0x08], // +
    [0x00, 0x50, 0x30, 0x00, 0x00], // ,
    [0x08, 0x08, 0x08, 0x08, 0x08], // -
    [0x00, 0x60, 0x60, 0x00, 0x00], // .
    [0x20, 0x10, 0x08, 0x04, 0x02], // /
    [0x3E, 0x51, 0x49, 0x45, 0x3E], // 0
    [0x00, 0x42, 0x7F, 0x40, 0x00], // 1
    [0x42, 0x61, 0x51, 0x49, 0x46], // 2
    [0x21, 0x41, 0x45, 0x4B, 0x31], // 3
    [0x18, 0x14, 0x12, 0x7F, 0x10], // 4
    [0x27, 0x45, 0x45, 0x45, 0x39], // 5
    [0x3C, 0x4A, 0x49, 0x49, 0x30], // 6
    [0x01, 0x71, 0x09, 0x05, 0x03], // 7
    [0x36, 0x49, 0x49, 0x49, 0x36], // 8
    [0x06, 0x49, 0x49, 0x29, 0x1E], // 9
    [0x00, 0x36, 0x36, 0x00, 0x00], // :
    [0x00, 0x56, 0x36, 0x00, 0x00], // ;
    [0x08, 0x14, 0x22, 0x41, 0x00], // <
    [0x14, 0x14, 0x14, 0x14, 0x14], // =
    [0x00, 0x41, 0x22, 0x14, 0x08], // >
    [0x02, 0x01, 0x51, 0x09, 0x06], // ?
    [0x32, 0x49, 0x79, 0x41, 0x3E], // @
    [0x7E, 0x11, 0x11, 0x11, 0x7E], // A
    [0x7F, 0x49, 0x49, 0x49, 0x36], // B
    [0x3E, 0x41, 0x41, 0x41, 0x22], // C
    [0x7F, 0x41, 0x41, 0x22, 0x1C], // D
    [0x7F, 0x49, 0x49, 0x49, 0x41], // E
    [0x7F, 0x09, 0x09, 0x09, 0x01], // F
    [0x3E, 0x41, 0x49, 0x49, 0x7A], // G
    [0x7F, 0x08, 0x08, 0x08, 0x7F], // H
    [0x00, 0x41, 0x7F, 0x41, 0x00], // I
    [0x20, 0x40, 0x41, 0x3F, 0x01], // J
    [0x7F, 0x08, 0x14, 0x22, 0x41], // K
    [0x7F, 0x40, 0x40, 0x40, 0x40], // L
    [0x7F, 0x02, 0x0C, 0x02, 0x7F], // M
    [0x7F, 0x04, 0x08, 0x10, 0x7F], // N
    [0x3E, 0x41, 0x41, 0x41, 0x3E], // O
    [0x7F, 0x09, 0x09, 0x09, 0x06], // P
    [0x3E, 0x41, 0x51, 0x21, 0x5E], // Q
    [0x7F, 0x09, 0x19, 0x29, 0x46], // R
    [0x46, 0x49, 0x49, 0x49, 0x31], // S
    [0x01, 0x01, 0x7F, 0x01, 0x01], // T
    [0x3F, 0x40, 0x40, 0x40, 0x3F], // U
    [0x1F, 0x20, 0x40, 0x20, 0x1F], // V
    [0x3F, 0x40, 0x38, 0x40, 0x3F], // W
    [0x63, 0x14, 0x08, 0x14, 0x63], // X
    [0x07, 0x08, 0x70, 0x08, 0x07], // Y
    [0x61, 0x51, 0x49, 0x45, 0x43], // Z
    [0x00, 0x7F, 0x41, 0x41, 0x00], // [
    [0x02, 0x04, 0x08, 0x10, 0x20], // backslash
    [0x00, 0x41, 0x41, 0x7F, 0x00], // ]
    [0x04, 0x02, 0x01, 0x02, 0x04], // ^
    [0x40, 0x40, 0x40, 0x40, 0x40], // _
    [0x00, 0x01, 0x02, 0x04, 0x00], // `
    [0x20, 0x54, 0x54, 0x54, 0x78], // a
    [0x7F, 0x48, 0x44, 0x44, 0x38], // b
    [0x38, 0x44, 0x44, 0x44, 0x20], // c
    [0x38, 0x44, 0x44, 0x48, 0x7F], // d
    [0x38, 0x54, 0x54, 0x54, 0x18], // e
    [0x08, 0x7E, 0x09, 0x01, 0x02], // f
    [0x0C, 0x52, 0x52, 0x52, 0x3E], // g
    [0x7F, 0x08, 0x04, 0x04, 0x78], // h
    [0x00, 0x44, 0x7D, 0x40, 0x00], // i
    [0x20, 0x40, 0x44, 0x3D, 0x00], // j
    [0x7F, 0x10, 0x28, 0x44, 0x00], // k
    [0x00, 0x41, 0x7F, 0x40, 0x00], // l
    [0x7C, 0x04, 0x18, 0x04, 0x78], // m
    [0x7C, 0x08, 0x04, 0x04, 0x78], // n
    [0x38, 0x44, 0x44, 0x44, 0x38], // o
    [0x7C, 0x14, 0x14, 0x14, 0x08], // p
    [0x08, 0x14, 0x14, 0x18, 0x7C], // q
    [0x7C, 0x08, 0x04, 0x04, 0x08], // r
    [0x48, 0x54, 0x54, 0x54, 0x20], // s
    [0x04, 0x3F, 0x44, 0x40, 0x20], // t
    [0x3C, 0x40, 0x40, 0x20, 0x7C], // u
    [0x1C, 0x20, 0x40, 0x20, 0x1C], // v
    [0x3C, 0x40, 0x30, 0x40, 0x3C], // w
    [0x44, 0x28, 0x10, 0x28, 0x44], // x
    [0x0C, 0x50, 0x50, 0x50, 0x3C], // y
    [0x44, 0x64, 0x54, 0x4C, 0x44], // z
    [0x00, 0x08, 0x36, 0x41, 0x00], // {
    [0x00, 0x00, 0x7F, 0x00, 0x00], // |
    [0x00, 0x41, 0x36, 0x08, 0x00], // }
    [0x08, 0x04, 0x08, 0x10, 0x08], // ~
];

/// The glyph for `c`; characters outside printable ASCII are drawn as '?'.
fn glyph(c: char) -> &'static [u8; 5] {
    let index = match c {
        ' '..='~' => c as usize - ' ' as usize,
        _ => '?' as usize - ' ' as usize,
    };
    &GLYPHS[index]
}

/// Whether font pixel `(col, row)` of `c`'s glyph is set (for tests and debugging).
pub(super) fn glyph_pixel(c: char, col: u32, row: u32) -> bool {
    col < GLYPH_W && row < GLYPH_H && glyph(c)[col as usize] >> row & 1 == 1
}

/// Integer scale of the font for an image: about one font pixel per 200 image pixels of the
/// shorter side, at least 1 (so a 224-pixel model input gets 6x10-pixel character cells and a
/// 4000x3000 photo gets 15x scale).
fn scale_for(img: &RgbImage) -> u32 {
    (img.width().min(img.height()) / 200).max(1)
}

/// Darkens a rectangle (clipped to the image): black at `BOX_ALPHA` opacity over the image.
fn darken(img: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32) {
    // 70 % black: the text stays readable on white backgrounds, the image shows through.
    const KEEP_NUM: u16 = 30;
    let x1 = x0.saturating_add(w).min(img.width());
    let y1 = y0.saturating_add(h).min(img.height());
    for y in y0..y1 {
        for x in x0..x1 {
            let px = img.get_pixel_mut(x, y);
            for c in px.0.iter_mut() {
                *c = ((u16::from(*c) * KEEP_NUM + 50) / 100) as u8;
            }
        }
    }
}

/// Draws `text` with its top-left corner at `(x0, y0)`, `scale` image pixels per font pixel,
/// clipped to the image.
fn draw_text(img: &mut RgbImage, text: &str, x0: u32, y0: u32, scale: u32, colour: Rgb<u8>) {
    for (i, c) in text.chars().enumerate() {
        let cell_x = x0.saturating_add((i as u32).saturating_mul(CELL_W * scale));
        if cell_x >= img.width() {
            break;
        }
        for col in 0..GLYPH_W {
            for row in 0..GLYPH_H {
                if !glyph_pixel(c, col, row) {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let x = cell_x + col * scale + dx;
                        let y = y0 + row * scale + dy;
                        if x < img.width() && y < img.height() {
                            img.put_pixel(x, y, colour);
                        }
                    }
                }
            }
        }
    }
}

/// The image with its labels drawn on it, for `infer --annotate DIR`: one `"name 0.93"` line
/// per label (score with two decimals), white text on a 70 %-opaque black box at the top-left.
///
/// Text is drawn with an embedded 5x7 bitmap font, scaled by an integer factor of about one
/// font pixel per 200 pixels of the image's shorter side (at least 1); characters outside
/// printable ASCII are drawn as `?`; lines that do not fit are clipped at the image border.
/// With no labels the box reads `(no labels)`.
///
pub fn annotate(img: &RgbImage, labels: &[(String, f32)]) -> RgbImage {
    let mut out = img.clone();
    if out.width() == 0 || out.height() == 0 {
        return out;
    }
    let lines: Vec<String> = if labels.is_empty() {
        vec!["(no labels)".to_string()]
    } else {
        labels
            .iter()
            .map(|(name, score)| format!("{name} {score:.2}"))
            .collect()
    };
    let scale = scale_for(img);
    let pad = 2 * scale;
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    // The last column of the last cell and the leading under the last line are blank: trim them.
    let text_w = (longest * CELL_W).saturating_sub(1) * scale;
    let text_h = (lines.len() as u32 * LINE_H).saturating_sub(LINE_H - GLYPH_H) * scale;
    darken(&mut out, 0, 0, text_w + 2 * pad, text_h + 2 * pad);
    for (i, line) in lines.iter().enumerate() {
        let y = pad + i as u32 * LINE_H * scale;
        if y >= out.height() {
            break;
        }
        draw_text(&mut out, line, pad, y, scale, Rgb([255, 255, 255]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_draws_a_box_at_the_top_left_only() {
        let img = RgbImage::from_pixel(400, 300, Rgb([200, 200, 200]));
        let out = annotate(&img, &[("dog".to_string(), 0.93)]);
        assert_ne!(out.get_pixel(1, 1), img.get_pixel(1, 1));
        assert_eq!(out.get_pixel(399, 299), img.get_pixel(399, 299));
    }

    #[test]
    fn font_covers_printable_ascii_and_replaces_the_rest() {
        for c in ' '..='~' {
            let lit = (0..5).flat_map(|x| (0..7).map(move |y| (x, y)));
            let count = lit.filter(|&(x, y)| glyph_pixel(c, x, y)).count();
            assert_eq!(count == 0, c == ' ', "glyph {c:?} has {count} pixels");
        }
        for (x, y) in (0..5).flat_map(|x| (0..7).map(move |y| (x, y))) {
            assert_eq!(glyph_pixel('é', x, y), glyph_pixel('?', x, y));
        }
    }

    #[test]
    fn annotate_draws_in_the_top_left_only() {
        let img = RgbImage::from_pixel(1200, 900, Rgb([120, 160, 200]));
        let labels = vec![
            ("person".to_string(), 0.93f32),
            ("dog".to_string(), 0.71),
            ("café ☕".to_string(), 0.5),
        ];
        let out = annotate(&img, &labels);
        assert_eq!(out.dimensions(), img.dimensions());
        let changed = |x0: u32, y0: u32, x1: u32, y1: u32| {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| out.get_pixel(x, y) != img.get_pixel(x, y))
                .count()
        };
        // The box covers the corner, and has white text pixels in it.
        assert_ne!(out.get_pixel(0, 0), img.get_pixel(0, 0));
        assert!(changed(0, 0, 100, 60) > 3000);
        let white = out.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        assert!(white > 100, "{white} white pixels");
        // The bottom-right quarter is untouched.
        assert_eq!(changed(600, 450, 1200, 900), 0);
        // Scaled to the image: the text of a larger image is larger.
        let big = annotate(
            &RgbImage::from_pixel(2400, 1800, Rgb([120, 160, 200])),
            &labels,
        );
        let big_white = big.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        assert!(big_white >= 3 * white, "{big_white} vs {white}");
    }

    #[test]
    fn annotate_handles_tiny_images_and_no_labels() {
        let img = RgbImage::from_pixel(8, 8, Rgb([200, 200, 200]));
        let long = vec![("a very long label that cannot fit".to_string(), 1.0f32)];
        assert_eq!(annotate(&img, &long).dimensions(), (8, 8));
        let out = annotate(&RgbImage::from_pixel(300, 300, Rgb([200, 200, 200])), &[]);
        assert_ne!(out.get_pixel(1, 1).0, [200, 200, 200]);
        assert_eq!(annotate(&RgbImage::new(0, 0), &long).dimensions(), (0, 0));
    }
}
