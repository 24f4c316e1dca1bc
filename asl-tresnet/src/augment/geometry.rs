//! Geometry: Pillow's affine transform with nearest or bicubic sampling, and the shears,
//! translations and rotation built on it.

use image::{Rgb, RgbImage};

// ---------------------------------------------------------------------------------------------
// Geometry: Pillow's `Image.transform(size, AFFINE, (a, b, c, d, e, f))`. The output pixel (x, y)
// samples the input at (a x' + b y' + c, d x' + e y' + f) with x' = x + 0.5, y' = y + 0.5;
// samples outside the input take the fill colour.

/// Resampling filter of [`affine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// Pillow's `NEAREST`: the input pixel containing the sample point.
    Nearest,
    /// Pillow's `BICUBIC` for transforms (`Geometry.c`): the 4 x 4 cubic convolution with
    /// a = -1, edges clamped, result clipped and truncated.
    Bicubic,
}

/// `img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor=fill)`: the output pixel
/// (x, y) samples the input at `(m[0] x' + m[1] y' + m[2], m[3] x' + m[4] y' + m[5])`, with
/// `x' = x + 0.5`, `y' = y + 0.5`; points outside the input take `fill`.
pub fn affine(img: &RgbImage, matrix: [f64; 6], resample: Resample, fill: Rgb<u8>) -> RgbImage {
    match resample {
        Resample::Nearest => affine_nearest(img, matrix, fill),
        Resample::Bicubic => affine_bicubic(img, matrix, fill),
    }
}

fn affine_nearest(img: &RgbImage, a: [f64; 6], fill: Rgb<u8>) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::from_pixel(w, h, fill);
    let src = img.as_raw();
    let stride = w as usize * 3;
    let dst: &mut [u8] = &mut out;
    let mut copy = |x: usize, y: usize, xi: i64, yi: i64| {
        if xi >= 0 && yi >= 0 && xi < i64::from(w) && yi < i64::from(h) {
            let s = yi as usize * stride + xi as usize * 3;
            let d = y * stride + x * 3;
            dst[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    };
    // Pillow's three nearest-neighbour paths (`Geometry.c`), reproduced so that samples falling
    // exactly on a pixel edge (e.g. rotations by 45 degrees) land on the same side as Pillow's.
    let (wf, hf) = (f64::from(w), f64::from(h));
    let fits_fixed = |x: f64, y: f64| {
        (a[0] * x + a[1] * y + a[2]).abs() < 32768.0 && (a[3] * x + a[4] * y + a[5]).abs() < 32768.0
    };
    if a[1] == 0.0 && a[3] == 0.0 {
        // `ImagingScaleAffine`: doubles, stepped from the first pixel centre
        let mut yo = a[5] + a[4] * 0.5;
        for y in 0..h as usize {
            let mut xo = a[2] + a[0] * 0.5;
            for x in 0..w as usize {
                copy(x, y, floor_coord(xo), floor_coord(yo));
                xo += a[0];
            }
            yo += a[4];
        }
    } else if fits_fixed(0.0, 0.0)
        && fits_fixed(wf, 0.0)
        && fits_fixed(0.0, hf)
        && fits_fixed(wf, hf)
    {
        // `ImagingTransformAffine`: 16.16 fixed point, stepped from the first pixel centre
        let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i64;
        let (a0, a1, a3, a4) = (fix(a[0]), fix(a[1]), fix(a[3]), fix(a[4]));
        let mut xo = fix(a[2] + a[1] * 0.5 + a[0] * 0.5);
        let mut yo = fix(a[5] + a[4] * 0.5 + a[3] * 0.5);
        for y in 0..h as usize {
            let (mut xx, mut yy) = (xo, yo);
            for x in 0..w as usize {
                copy(x, y, xx >> 16, yy >> 16);
                xx += a0;
                yy += a3;
            }
            xo += a1;
            yo += a4;
        }
    } else {
        // `ImagingGenericTransform` with the nearest filter: doubles per pixel
        for y in 0..h as usize {
            let yc = y as f64 + 0.5;
            for x in 0..w as usize {
                let xc = x as f64 + 0.5;
                let xin = a[0] * xc + a[1] * yc + a[2];
                let yin = a[3] * xc + a[4] * yc + a[5];
                copy(x, y, floor_coord(xin), floor_coord(yin));
            }
        }
    }
    out
}

/// Pillow's `COORD`: truncation, with every negative (and NaN) coordinate mapped outside.
fn floor_coord(v: f64) -> i64 {
    if v >= 0.0 {
        v as i64
    } else {
        -1
    }
}

/// Pillow's `BICUBIC` macro of `Geometry.c` (cubic convolution with a = -1).
#[inline]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

fn affine_bicubic(img: &RgbImage, a: [f64; 6], fill: Rgb<u8>) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::from_pixel(w, h, fill);
    let src = img.as_raw();
    let stride = w as usize * 3;
    let dst: &mut [u8] = &mut out;
    let (wf, hf) = (f64::from(w), f64::from(h));
    let clamp_x = |i: i64| i.clamp(0, i64::from(w) - 1) as usize;
    let clamp_y = |i: i64| i.clamp(0, i64::from(h) - 1) as usize;
    for y in 0..h as usize {
        let yc = y as f64 + 0.5;
        for x in 0..w as usize {
            let xc = x as f64 + 0.5;
            let xin = a[0] * xc + a[1] * yc + a[2];
            let yin = a[3] * xc + a[4] * yc + a[5];
            // written so that NaN falls outside too
            if !(xin >= 0.0 && xin < wf && yin >= 0.0 && yin < hf) {
                continue;
            }
            let (xs, ys) = (xin - 0.5, yin - 0.5);
            let (xf, yf) = (xs.floor(), ys.floor());
            let (dx, dy) = (xs - xf, ys - yf);
            let (x0, y0) = (xf as i64 - 1, yf as i64 - 1);
            let cols = [
                clamp_x(x0) * 3,
                clamp_x(x0 + 1) * 3,
                clamp_x(x0 + 2) * 3,
                clamp_x(x0 + 3) * 3,
            ];
            let rows = [
                clamp_y(y0) * stride,
                clamp_y(y0 + 1) * stride,
                clamp_y(y0 + 2) * stride,
                clamp_y(y0 + 3) * stride,
            ];
            let d = y * stride + x * 3;
            for c in 0..3 {
                let row = |r: usize| {
                    let s = |k: usize| f64::from(src[r + cols[k] + c]);
                    cubic(s(0), s(1), s(2), s(3), dx)
                };
                let v = cubic(row(rows[0]), row(rows[1]), row(rows[2]), row(rows[3]), dy);
                dst[d + c] = if v <= 0.0 {
                    0
                } else if v >= 255.0 {
                    255
                } else {
                    v as u8
                };
            }
        }
    }
    out
}

/// The reference's `ShearX`: `transform(AFFINE, (1, factor, 0, 0, 1, 0), BICUBIC)`, so the
/// output pixel (x, y) samples the input at (x + factor * y, y) (pixel centres).
pub fn shear_x(img: &RgbImage, factor: f64, fill: Rgb<u8>) -> RgbImage {
    affine(
        img,
        [1.0, factor, 0.0, 0.0, 1.0, 0.0],
        Resample::Bicubic,
        fill,
    )
}

/// The reference's `ShearY`: `transform(AFFINE, (1, 0, 0, factor, 1, 0), BICUBIC)`, so the
/// output pixel (x, y) samples the input at (x, y + factor * x) (pixel centres).
pub fn shear_y(img: &RgbImage, factor: f64, fill: Rgb<u8>) -> RgbImage {
    affine(
        img,
        [1.0, 0.0, 0.0, factor, 1.0, 0.0],
        Resample::Bicubic,
        fill,
    )
}

/// The reference's `TranslateX`: `transform(AFFINE, (1, 0, pixels, 0, 1, 0))`, nearest. The
/// output pixel (x, y) takes the input pixel `floor(x + 0.5 + pixels)`: a positive value moves
/// the content **left** (Pillow's convention), uncovered columns take `fill`.
pub fn translate_x(img: &RgbImage, pixels: f64, fill: Rgb<u8>) -> RgbImage {
    affine(
        img,
        [1.0, 0.0, pixels, 0.0, 1.0, 0.0],
        Resample::Nearest,
        fill,
    )
}

/// The reference's `TranslateY`: `transform(AFFINE, (1, 0, 0, 0, 1, pixels))`, nearest; a
/// positive value moves the content **up** (Pillow's convention), uncovered rows take `fill`.
pub fn translate_y(img: &RgbImage, pixels: f64, fill: Rgb<u8>) -> RgbImage {
    affine(
        img,
        [1.0, 0.0, 0.0, 0.0, 1.0, pixels],
        Resample::Nearest,
        fill,
    )
}

/// `img.rotate(degrees)` with uncovered pixels set to `fill` (the reference's
/// `rotate_with_fill`): counter-clockwise about the image centre `(w / 2, h / 2)`, within the
/// same canvas (corners are cut, uncovered areas filled), nearest neighbour. Like Pillow, the
/// matrix entries are rounded to 15 decimals, so multiples of 90 degrees are exact.
pub fn rotate(img: &RgbImage, degrees: f64, fill: Rgb<u8>) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let angle = -degrees.rem_euclid(360.0).to_radians();
    let round15 = |v: f64| (v * 1e15).round() / 1e15;
    let (cos, sin) = (round15(angle.cos()), round15(angle.sin()));
    let mut m = [cos, sin, 0.0, -sin, cos, 0.0];
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
    affine(img, m, Resample::Nearest, fill)
}
