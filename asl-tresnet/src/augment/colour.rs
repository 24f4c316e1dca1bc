//! Colour operations: Pillow's `ImageOps` point operations (per-channel lookup tables) and
//! `ImageEnhance` blends.

use image::{Rgb, RgbImage};

// ---------------------------------------------------------------------------------------------
// Point operations (per-channel lookup tables, as PIL's `ImageOps` builds them)

fn apply_luts(img: &RgbImage, luts: &[[u8; 256]; 3]) -> RgbImage {
    let mut out = img.clone();
    for px in out.pixels_mut() {
        for c in 0..3 {
            px.0[c] = luts[c][usize::from(px.0[c])];
        }
    }
    out
}

fn apply_lut(img: &RgbImage, lut: &[u8; 256]) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = lut[usize::from(*v)];
    }
    out
}

fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut hist = [[0u64; 256]; 3];
    for px in img.pixels() {
        for c in 0..3 {
            hist[c][usize::from(px.0[c])] += 1;
        }
    }
    hist
}

/// `ImageOps.invert`: `255 - v`.
pub fn invert(img: &RgbImage) -> RgbImage {
    let mut lut = [0u8; 256];
    for (i, v) in lut.iter_mut().enumerate() {
        *v = 255 - i as u8;
    }
    apply_lut(img, &lut)
}

/// `ImageOps.posterize`: keep the top `bits` bits of each channel (`bits >= 8` is the identity,
/// 0 gives black).
pub fn posterize(img: &RgbImage, bits: u8) -> RgbImage {
    let mask: u8 = if bits >= 8 { 0xff } else { !(0xffu8 >> bits) };
    let mut lut = [0u8; 256];
    for (i, v) in lut.iter_mut().enumerate() {
        *v = i as u8 & mask;
    }
    apply_lut(img, &lut)
}

/// `ImageOps.solarize`: values `>= threshold` are inverted (so 256 or more is the identity and
/// 0 inverts everything).
pub fn solarize(img: &RgbImage, threshold: f64) -> RgbImage {
    let mut lut = [0u8; 256];
    for (i, v) in lut.iter_mut().enumerate() {
        *v = if (i as f64) < threshold {
            i as u8
        } else {
            255 - i as u8
        };
    }
    apply_lut(img, &lut)
}

/// `ImageOps.autocontrast` (cutoff 0): per channel, stretch `[lo, hi]` (the darkest and lightest
/// values present) to `[0, 255]` with `int(v * 255 / (hi - lo) - lo * 255 / (hi - lo))`; a
/// channel with a single value is left alone.
pub fn autocontrast(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let mut luts = [[0u8; 256]; 3];
    for (lut, h) in luts.iter_mut().zip(hist.iter()) {
        let lo = h.iter().position(|&n| n > 0);
        let hi = h.iter().rposition(|&n| n > 0);
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi > lo => {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                for (ix, v) in lut.iter_mut().enumerate() {
                    // Python's int() truncates toward zero, as `as` does
                    *v = ((ix as f64 * scale + offset) as i64).clamp(0, 255) as u8;
                }
            }
            _ => {
                for (ix, v) in lut.iter_mut().enumerate() {
                    *v = ix as u8;
                }
            }
        }
    }
    apply_luts(img, &luts)
}

/// `ImageOps.equalize`: per channel, `step = (n - count of the last present value) / 255`,
/// `lut[i] = (step / 2 + count of values below i) / step` (integer divisions); a channel with
/// one value, or `step == 0` (fewer than about 256 pixels), is left alone.
pub fn equalize(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let mut luts = [[0u8; 256]; 3];
    for (lut, h) in luts.iter_mut().zip(hist.iter()) {
        let present = h.iter().filter(|&&n| n > 0).count();
        let total: u64 = h.iter().sum();
        let last = h.iter().rev().find(|&&n| n > 0).copied().unwrap_or(0);
        let step = total.saturating_sub(last) / 255;
        if present <= 1 || step == 0 {
            for (i, v) in lut.iter_mut().enumerate() {
                *v = i as u8;
            }
            continue;
        }
        let mut n = step / 2;
        for (v, &count) in lut.iter_mut().zip(h.iter()) {
            // PIL's point() clips a LUT entry above 255 (only reachable for absent values)
            *v = (n / step).min(255) as u8;
            n += count;
        }
    }
    apply_luts(img, &luts)
}

// ---------------------------------------------------------------------------------------------
// ImageEnhance: blend with a degenerate image, `degenerate + factor * (img - degenerate)`

/// `Image.blend(degenerate, img, factor)` for one sample: float arithmetic, clipped and truncated
/// as Pillow's `Blend.c` does.
fn blend(degenerate: u8, value: u8, factor: f32) -> u8 {
    let d = f32::from(degenerate);
    let v = d + factor * (f32::from(value) - d);
    if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// Pillow's `convert("L")`: ITU-R 601-2 luma in 16.16 fixed point, rounded.
fn luma(px: &Rgb<u8>) -> u8 {
    let [r, g, b] = px.0;
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black; 0 gives black, 1 the image.
pub fn brightness(img: &RgbImage, factor: f32) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = blend(0, *v, factor);
    }
    out
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with a uniform gray at the image's mean
/// luma (`int(mean + 0.5)`); 0 gives that gray, 1 the image.
pub fn contrast(img: &RgbImage, factor: f32) -> RgbImage {
    let n = u64::from(img.width()) * u64::from(img.height());
    if n == 0 {
        return img.clone();
    }
    let sum: u64 = img.pixels().map(|px| u64::from(luma(px))).sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = blend(mean, *v, factor);
    }
    out
}

/// `ImageEnhance.Color(img).enhance(factor)`: blend with the image's grayscale (luma replicated to
/// three channels); 0 gives the grayscale, 1 the image.
pub fn color(img: &RgbImage, factor: f32) -> RgbImage {
    let mut out = img.clone();
    for px in out.pixels_mut() {
        let l = luma(px);
        for v in px.0.iter_mut() {
            *v = blend(l, *v, factor);
        }
    }
    out
}

/// `ImageEnhance.Sharpness(img).enhance(factor)`: blend with `ImageFilter.SMOOTH` (3 x 3 kernel
/// `[1 1 1; 1 5 1; 1 1 1] / 13`, rounded; Pillow leaves the one-pixel border unfiltered, so the
/// border never changes); 0 gives the smoothed image, 1 the image, 2 a sharpened one.
pub fn sharpness(img: &RgbImage, factor: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let src = img.as_raw();
    let stride = w as usize * 3;
    let dst: &mut [u8] = &mut out;
    for y in 1..h as usize - 1 {
        for x in 1..w as usize - 1 {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| u32::from(src[yy * stride + xx * 3 + c]);
                let s = at(y - 1, x - 1)
                    + at(y - 1, x)
                    + at(y - 1, x + 1)
                    + at(y, x - 1)
                    + 5 * at(y, x)
                    + at(y, x + 1)
                    + at(y + 1, x - 1)
                    + at(y + 1, x)
                    + at(y + 1, x + 1);
                // round(s / 13): never a tie, 13 being odd
                let smooth = ((s + 6) / 13) as u8;
                let i = y * stride + x * 3 + c;
                dst[i] = blend(smooth, src[i], factor);
            }
        }
    }
    out
}
