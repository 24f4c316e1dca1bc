//! Pillow's `Image.resize(..., Image.BILINEAR)` for 8-bit RGB, reimplemented.
//!
//! The reference models were evaluated on images resized by PIL (timm's and the ASL repository's
//! loaders), so this follows Pillow's `libImaging/Resample.c` step by step rather than a textbook
//! bilinear: the triangle filter's support grows with the reduction factor (antialiasing when
//! downscaling), the coefficients are computed in `f64` and then rounded to 22-bit fixed point, the
//! image is resampled horizontally first and vertically second, and the intermediate image is
//! rounded to 8 bits between the two passes. An axis whose size does not change is not resampled
//! at all, as in Pillow.

use image::RgbImage;

/// Fixed-point precision of the 8-bit coefficients (`PRECISION_BITS` in Pillow's Resample.c:
/// `32 - 8 - 2`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `bilinear_filter`: the triangle kernel with support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// The taps of one output sample: the first input index and one fixed-point weight per input.
struct Taps {
    /// `(first input index, number of inputs)` for each output index.
    bounds: Vec<(usize, usize)>,
    /// `ksize` fixed-point weights per output index (the unused tail is zero).
    weights: Vec<i32>,
    ksize: usize,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole input range
/// `[0, in_size)` mapped onto `[0, out_size)`.
fn precompute_taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's support (1.0) times the filter scale
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut float_weights = vec![0f64; ksize];
    let inv_filter_scale = 1.0 / filter_scale;
    for (out_index, row) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = (out_index as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; the clamp to 0 makes that the same as `floor` here.
        let first = ((center - support + 0.5) as i64).max(0) as usize;
        let end = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let count = end.saturating_sub(first).min(ksize);
        let mut total = 0.0;
        for (k, w) in float_weights.iter_mut().enumerate().take(count) {
            *w = triangle(((k + first) as f64 - center + 0.5) * inv_filter_scale);
            total += *w;
        }
        for (k, fixed) in row.iter_mut().enumerate().take(count) {
            let w = if total != 0.0 {
                float_weights[k] / total
            } else {
                float_weights[k]
            };
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            // Pillow rounds half away from zero by adding +-0.5 before the truncating cast.
            *fixed = if w < 0.0 {
                (scaled - 0.5) as i32
            } else {
                (scaled + 0.5) as i32
            };
        }
        bounds.push((first, count));
    }
    Taps {
        bounds,
        weights,
        ksize,
    }
}

/// Pillow's `clip8`: a fixed-point accumulator back to a byte.
#[inline]
fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Resamples `src` (RGB, `src_w` x `rows`, rows `row_offset..` of it) horizontally to `out_w`.
fn resample_horizontal(
    src: &[u8],
    src_w: usize,
    row_offset: usize,
    rows: usize,
    out_w: usize,
    taps: &Taps,
) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let src_row = &src[(y + row_offset) * src_w * 3..(y + row_offset + 1) * src_w * 3];
        for (x, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let (first, count) = taps.bounds[x];
            let weights = &taps.weights[x * taps.ksize..x * taps.ksize + count];
            let inputs = &src_row[first * 3..(first + count) * 3];
            let (mut r, mut g, mut b) = (half, half, half);
            for (&w, px) in weights.iter().zip(inputs.chunks_exact(3)) {
                r += i32::from(px[0]) * w;
                g += i32::from(px[1]) * w;
                b += i32::from(px[2]) * w;
            }
            out_px[0] = clip8(r);
            out_px[1] = clip8(g);
            out_px[2] = clip8(b);
        }
    }
    out
}

/// Resamples `src` (RGB, `width` wide) vertically to `out_h` rows; tap bounds are relative to
/// the first row of `src`.
fn resample_vertical(
    src: &[u8],
    width: usize,
    out_h: usize,
    taps: &Taps,
    row_shift: usize,
) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; stride * out_h];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (first, count) = taps.bounds[y];
        let first = first - row_shift;
        let weights = &taps.weights[y * taps.ksize..y * taps.ksize + count];
        acc.fill(half);
        // Row by row over whole lines: the same sums as Pillow's per-pixel loop, cache-friendly.
        for (k, &w) in weights.iter().enumerate() {
            let src_row = &src[(first + k) * stride..(first + k + 1) * stride];
            for (a, &v) in acc.iter_mut().zip(src_row) {
                *a += i32::from(v) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// `img.resize((out_w, out_h), Image.BILINEAR)` as Pillow computes it for mode "RGB".
///
/// `out_w` and `out_h` must be non-zero (the caller handles empty sizes).
pub(crate) fn resize_bilinear(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (w, h) = (out_w as usize, out_h as usize);
    if in_w == 0 || in_h == 0 {
        return RgbImage::new(out_w, out_h);
    }
    let need_horizontal = w != in_w;
    let need_vertical = h != in_h;
    let src: &[u8] = img.as_raw();
    let data = match (need_horizontal, need_vertical) {
        (false, false) => src.to_vec(),
        (true, false) => {
            let horiz = precompute_taps(in_w, w);
            resample_horizontal(src, in_w, 0, in_h, w, &horiz)
        }
        (false, true) => {
            let vert = precompute_taps(in_h, h);
            resample_vertical(src, in_w, h, &vert, 0)
        }
        (true, true) => {
            let horiz = precompute_taps(in_w, w);
            let vert = precompute_taps(in_h, h);
            // Like Pillow, resample horizontally only the rows the vertical pass reads.
            let first_row = vert.bounds[0].0;
            let (last_first, last_count) = vert.bounds[h - 1];
            let last_row = last_first + last_count;
            let temp = resample_horizontal(src, in_w, first_row, last_row - first_row, w, &horiz);
            resample_vertical(&temp, w, h, &vert, first_row)
        }
    };
    // The buffer length is `out_w * out_h * 3` by construction.
    RgbImage::from_raw(out_w, out_h, data).unwrap_or_else(|| RgbImage::new(out_w, out_h))
}
