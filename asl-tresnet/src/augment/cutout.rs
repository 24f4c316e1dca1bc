//! Cutout: `CutoutPIL`'s random rectangle and RandAugment's square one.

use image::{Rgb, RgbImage};
use rand::Rng;

// ---------------------------------------------------------------------------------------------
// Cutout

/// A pixel rectangle: columns `x..x + width`, rows `y..y + height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Number of columns.
    pub width: u32,
    /// Number of rows.
    pub height: u32,
}

/// The `CutoutPIL` rectangle of an image of `width x height` centred on the pixel `centre`:
/// `size = int(factor * side + 0.5)` per dimension, `half = size / 2`, the pixels from
/// `centre - half` to `centre + half` inclusive (PIL's `rectangle` includes both corners),
/// clipped to the image. A negative or NaN factor counts as 0 (a one-pixel rectangle).
///
/// ```
/// use asl_tresnet::augment::{cutout_rect, Rect};
/// // 224 x 224, factor 0.5: 112 pixels, half 56, so 113 pixels when not clipped
/// assert_eq!(cutout_rect(224, 224, 0.5, (100, 100)), Rect { x: 44, y: 44, width: 113, height: 113 });
/// ```
pub fn cutout_rect(width: u32, height: u32, factor: f32, centre: (u32, u32)) -> Rect {
    let factor = if factor > 0.0 { f64::from(factor) } else { 0.0 };
    let span = |side: u32, c: u32| -> (u32, u32) {
        if side == 0 {
            return (0, 0);
        }
        let side = i64::from(side);
        let size = (factor * side as f64 + 0.5) as i64;
        let half = size / 2;
        let c = i64::from(c);
        let lo = (c - half).clamp(0, side);
        let hi = (c + half).clamp(0, side - 1);
        if hi < lo {
            return (lo as u32, 0);
        }
        (lo as u32, (hi - lo + 1) as u32)
    };
    let (x, w) = span(width, centre.0);
    let (y, h) = span(height, centre.1);
    Rect {
        x,
        y,
        width: w,
        height: h,
    }
}

/// RandAugment's cutout square of `size` pixels centred on `centre`: `half = size / 2`, columns
/// `centre - half .. centre + half` (end exclusive), clipped to the image. Empty when
/// `size < 2`.
pub fn square_cutout_rect(width: u32, height: u32, size: u32, centre: (u32, u32)) -> Rect {
    let half = i64::from(size / 2);
    let span = |side: u32, c: u32| -> (u32, u32) {
        let lo = (i64::from(c) - half).clamp(0, i64::from(side));
        let hi = (i64::from(c) + half).clamp(0, i64::from(side));
        (lo as u32, (hi - lo).max(0) as u32)
    };
    let (x, w) = span(width, centre.0);
    let (y, h) = span(height, centre.1);
    Rect {
        x,
        y,
        width: w,
        height: h,
    }
}

/// Fills `rect` (clipped to the image) with `colour`.
pub fn cutout(img: &RgbImage, rect: Rect, colour: Rgb<u8>) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = img.dimensions();
    let x1 = rect.x.saturating_add(rect.width).min(w);
    let y1 = rect.y.saturating_add(rect.height).min(h);
    for y in rect.y.min(h)..y1 {
        for x in rect.x.min(w)..x1 {
            out.put_pixel(x, y, colour);
        }
    }
    out
}

/// `CutoutPIL(cutout_factor=factor)`: a [`cutout_rect`] around a uniformly random pixel (x drawn
/// first, then y), filled with a uniformly random colour (R, G, B drawn in that order).
pub fn random_cutout(img: &RgbImage, factor: f32, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return img.clone();
    }
    let cx = rng.random_range(0..w);
    let cy = rng.random_range(0..h);
    let colour = Rgb([rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()]);
    cutout(img, cutout_rect(w, h, factor, (cx, cy)), colour)
}
