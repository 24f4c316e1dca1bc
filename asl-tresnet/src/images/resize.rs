//! Resizing for a model: squish, or timm's shorter-side resize and centre crop, with Pillow's
//! bilinear filter.

use image::RgbImage;

use super::resample;
use crate::pretrained::ResizeMode;

/// Resizes for a model with input side `size`, with Pillow's bilinear filter.
///
/// - [`ResizeMode::Squish`]: to `size` x `size`, aspect ratio not kept. An image already at
///   `size` x `size` comes back unchanged, bit for bit.
/// - [`ResizeMode::Crop`]: as timm's eval transform: the shorter side to
///   `floor(size / crop_pct)`, the longer side to `trunc(new_short * long / short)`, then a
///   `size` x `size` centre crop whose offsets are `round((h - size) / 2)` with Python's
///   round-half-to-even (torchvision's `CenterCrop`). If the resized image is smaller than the
///   crop (`crop_pct > 1`), it is padded with black as torchvision does. A `crop_pct` that is not
///   a positive finite number is treated as 1.
///
/// The filter is Pillow's `Image.BILINEAR` re-implemented (triangle filter widened by the
/// reduction factor, 22-bit fixed point, horizontal pass then vertical, rounded to 8 bits in
/// between), because the reference models were evaluated on PIL-resized images; it matches
/// Pillow 13 within 1 level per channel. `size == 0` gives an empty image.
///
/// ```
/// use asl_tresnet::images::resize;
/// use asl_tresnet::pretrained::ResizeMode;
/// let img = image::RgbImage::new(640, 480);
/// assert_eq!(resize(&img, 224, ResizeMode::Squish).dimensions(), (224, 224));
/// assert_eq!(resize(&img, 224, ResizeMode::Crop { crop_pct: 0.875 }).dimensions(), (224, 224));
/// ```
pub fn resize(img: &RgbImage, size: u32, mode: ResizeMode) -> RgbImage {
    if size == 0 || img.width() == 0 || img.height() == 0 {
        return RgbImage::new(size, size);
    }
    match mode {
        ResizeMode::Squish => {
            if img.dimensions() == (size, size) {
                img.clone()
            } else {
                resample::resize_bilinear(img, size, size)
            }
        }
        ResizeMode::Crop { crop_pct } => {
            let (w, h) = crop_resize_dims(img.width(), img.height(), size, crop_pct);
            let resized = if (w, h) == img.dimensions() {
                img.clone()
            } else {
                resample::resize_bilinear(img, w, h)
            };
            centre_crop(&resized, size)
        }
    }
}

/// The intermediate size of the crop mode: timm's `scale_size = math.floor(size / crop_pct)`
/// for the shorter side, then torchvision's `Resize(int)` rule for the longer one.
fn crop_resize_dims(width: u32, height: u32, size: u32, crop_pct: f64) -> (u32, u32) {
    let crop_pct = if crop_pct.is_finite() && crop_pct > 0.0 {
        crop_pct
    } else {
        1.0
    };
    let short_target = (f64::from(size) / crop_pct)
        .floor()
        .clamp(1.0, f64::from(u32::MAX)) as u32;
    let (short, long) = (width.min(height), width.max(height));
    // torchvision: `int(requested_new_short * long / short)` in Python floats (f64), truncated.
    let long_target = (f64::from(short_target) * f64::from(long) / f64::from(short))
        .clamp(1.0, f64::from(u32::MAX)) as u32;
    if width <= height {
        (short_target, long_target)
    } else {
        (long_target, short_target)
    }
}

/// torchvision's `center_crop` to `size` x `size`: offsets `int(round((dim - size) / 2.0))`
/// (Python rounds halves to even), black padding where the image is smaller than the crop.
fn centre_crop(img: &RgbImage, size: u32) -> RgbImage {
    let offset = |dim: u32| -> i64 {
        if dim >= size {
            (f64::from(dim - size) / 2.0).round_ties_even() as i64
        } else {
            // torchvision pads `(size - dim) // 2` before and the rest after, then crops at 0.
            -(i64::from(size - dim) / 2)
        }
    };
    let (left, top) = (offset(img.width()), offset(img.height()));
    if left >= 0 && top >= 0 {
        return image::imageops::crop_imm(img, left as u32, top as u32, size, size).to_image();
    }
    let mut out = RgbImage::new(size, size);
    for y in 0..size {
        let sy = i64::from(y) + top;
        if sy < 0 || sy >= i64::from(img.height()) {
            continue;
        }
        for x in 0..size {
            let sx = i64::from(x) + left;
            if sx >= 0 && sx < i64::from(img.width()) {
                out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_dims_follow_timm() {
        // 640x480 at 224 / 0.875: shorter side floor(256) = 256, longer int(256 * 640 / 480).
        assert_eq!(crop_resize_dims(640, 480, 224, 0.875), (341, 256));
        assert_eq!(crop_resize_dims(480, 640, 224, 0.875), (256, 341));
        // 448 / 0.875 = 512 exactly; 0.9 -> floor(248.88) = 248.
        assert_eq!(crop_resize_dims(100, 100, 448, 0.875), (512, 512));
        assert_eq!(crop_resize_dims(300, 200, 224, 0.9), (372, 248));
        // Invalid crop_pct falls back to 1.
        assert_eq!(crop_resize_dims(300, 200, 224, f64::NAN), (336, 224));
    }

    #[test]
    fn centre_crop_rounds_half_to_even() {
        // Columns store their x index so the crop offset can be read back.
        let img = RgbImage::from_fn(13, 4, |x, _| image::Rgb([x as u8, 0, 0]));
        // (13 - 4) / 2 = 4.5 -> 4 (Python's round), (4 - 4) / 2 = 0.
        assert_eq!(centre_crop(&img, 4).get_pixel(0, 0)[0], 4);
        let img = RgbImage::from_fn(15, 4, |x, _| image::Rgb([x as u8, 0, 0]));
        // (15 - 4) / 2 = 5.5 -> 6.
        assert_eq!(centre_crop(&img, 4).get_pixel(0, 0)[0], 6);
    }

    #[test]
    fn centre_crop_pads_small_images_with_black() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]));
        let out = centre_crop(&img, 5);
        // torchvision pads (5 - 2) // 2 = 1 before.
        assert_eq!(out.get_pixel(0, 0)[0], 0);
        assert_eq!(out.get_pixel(1, 1)[0], 9);
        assert_eq!(out.get_pixel(2, 2)[0], 9);
        assert_eq!(out.get_pixel(3, 3)[0], 0);
    }
}
