//! Image decoding and preprocessing: from a file to the model's `[3, S, S]` input.
//!
//! What it does, in order ([`prepare`] runs all of it):
//! 1. [`load_rgb`] / [`decode_rgb`]: sniff the format from the content (JPEG, PNG, WebP, BMP, GIF,
//!    TIFF), refuse decompression bombs from the header alone, decode, convert to 8-bit RGB and
//!    apply the EXIF orientation.
//! 2. [`resize`]: squish to S x S (the ASL multi-label models) or resize the shorter side to
//!    `floor(S / crop_pct)` and centre-crop S x S (timm's ImageNet tags), with Pillow's bilinear
//!    filter (see below).
//! 3. [`to_chw`]: planar `f32` RGB in `[0, 1]` (pixels / 255, no mean/std normalisation: the ASL
//!    and timm TResNet models use mean 0, std 1).
//!
//! [`annotate`] draws predicted labels on an image for `infer --annotate`.
//!
//! Colour conversions (the same choices as Pillow's `convert("RGB")`): grayscale is replicated to
//! three channels; alpha is dropped and the colour channels are taken as stored (no compositing
//! over a background: a transparent pixel keeps whatever colour it stores); palette images are
//! expanded; 16-bit and float samples are scaled to 8 bits; CMYK/YCCK JPEGs are converted to RGB
//! by the JPEG decoder. ICC profiles are ignored, as Pillow's `convert` ignores them.
//!
//! Not for: augmentation (training transforms live with the training loop) or writing images
//! other than through the `image` crate's own encoders.

pub(crate) mod font;
mod resample;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use asl_tresnet::weights::ResizeMode;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// Default limit on `width * height` of a decoded image: twice Pillow's
/// `Image.MAX_IMAGE_PIXELS` (89_478_485, the point where Pillow warns; it refuses at twice that).
/// About 179 megapixels, so 537 MB as 8-bit RGB.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

/// Why an image could not be read. Every message names the file (or says "image data" for
/// [`decode_rgb`] on bytes from elsewhere) and what to try.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read at all (missing, permissions, ...).
    #[error("cannot read image file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Zero bytes.
    #[error("{name} is empty (0 bytes), not an image")]
    Empty { name: String },
    /// The content matches none of the supported formats' signatures.
    #[error(
        "{name} is not in a supported image format (it starts with bytes {magic}); \
         supported formats are JPEG, PNG, WebP, BMP, GIF and TIFF"
    )]
    UnknownFormat { name: String, magic: String },
    /// The header announces more pixels than allowed: refused before decoding.
    #[error(
        "{name} is {width} x {height} = {pixels} pixels, more than the limit of {max_pixels} \
         pixels (a possible decompression bomb); if the image is genuine, raise the pixel limit"
    )]
    TooLarge {
        name: String,
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
    },
    /// A JPEG whose data ends before its end-of-image marker (an interrupted download or copy).
    /// The JPEG decoder would fill the missing part with grey; Pillow refuses such files too.
    #[error(
        "{name} is truncated: its JPEG data ends before the end-of-image marker \
         (an incomplete download or copy?)"
    )]
    Truncated { name: String },
    /// The decoder failed: corrupt or truncated data, or a variant of the format it does not
    /// support.
    #[error("cannot decode {name} as {format}: {cause} (is the file corrupt or truncated?)")]
    Decode {
        name: String,
        format: String,
        cause: image::ImageError,
    },
}

/// Decodes an image from memory to 8-bit RGB with its EXIF orientation applied.
///
/// The format is sniffed from the content, never from a file name. An image whose header
/// announces more than `max_pixels` pixels is refused before any pixel is decoded (see
/// [`DEFAULT_MAX_PIXELS`]; `u64::MAX` disables the check). Animated GIF/WebP: the first frame.
///
/// ```
/// use asl_cli::images::{decode_rgb, DEFAULT_MAX_PIXELS};
/// let mut png = Vec::new();
/// image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]))
///     .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
///     .unwrap();
/// let img = decode_rgb(&png, DEFAULT_MAX_PIXELS).unwrap();
/// assert_eq!((img.width(), img.height()), (3, 2));
/// assert!(decode_rgb(b"not an image", DEFAULT_MAX_PIXELS).is_err());
/// ```
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageError> {
    decode_named(bytes, max_pixels, "image data")
}

/// Reads and decodes an image file; see [`decode_rgb`]. Errors name `path`.
pub fn load_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|cause| ImageError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    decode_named(
        &bytes,
        max_pixels,
        &format!("image file {}", path.display()),
    )
}

/// A printable form of the first bytes of a file, for "unknown format" errors.
fn magic_hex(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    shown.join(" ")
}

fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::Png => "PNG".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Bmp => "BMP".into(),
        ImageFormat::Gif => "GIF".into(),
        ImageFormat::Tiff => "TIFF".into(),
        other => format!("{other:?}"),
    }
}

fn decode_named(bytes: &[u8], max_pixels: u64, name: &str) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty { name: name.into() });
    }
    let unknown = || ImageError::UnknownFormat {
        name: name.into(),
        magic: magic_hex(bytes),
    };
    let format = image::guess_format(bytes).map_err(|_| unknown())?;
    if !matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Gif
            | ImageFormat::Tiff
    ) {
        return Err(unknown());
    }
    let decode_error = |cause: image::ImageError| ImageError::Decode {
        name: name.into(),
        format: format_name(format),
        cause,
    };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The pixel limit below is the real guard. The decoders' own allocation cap must not refuse
    // an image that passes it (the default 512 MiB would refuse a 16-bit RGBA image of 45
    // megapixels), so it is set to the largest buffer an allowed image can need: 16 bytes per
    // pixel (32-bit float RGBA TIFF) plus slack for the decoders' working memory.
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(16).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;

    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageError::TooLarge {
            name: name.into(),
            width,
            height,
            pixels,
            max_pixels,
        });
    }
    if format == ImageFormat::Jpeg && !jpeg_reaches_end_marker(bytes) {
        return Err(ImageError::Truncated { name: name.into() });
    }
    // A malformed EXIF block is not worth refusing the image for: Pillow's `exif_transpose`
    // also leaves such images as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let decoded = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    let mut rgb = DynamicImage::ImageRgb8(decoded.into_rgb8());
    rgb.apply_orientation(orientation);
    Ok(rgb.into_rgb8())
}

/// Whether a JPEG's marker structure can be walked from SOI to EOI inside `bytes`.
///
/// Segments are skipped by their declared lengths (so an EOI inside an EXIF thumbnail does not
/// count) and entropy-coded data is scanned for the next real marker (`FF 00` is a stuffed byte,
/// `FF D0`..`FF D7` are restart markers, `FF FF` is fill). Bytes after EOI are ignored.
fn jpeg_reaches_end_marker(bytes: &[u8]) -> bool {
    const SOS: u8 = 0xDA;
    const EOI: u8 = 0xD9;
    let is_standalone = |m: u8| (0xD0..=0xD8).contains(&m) || m == 0x01;
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF || bytes[i + 1] == 0xFF {
            // Stray bytes or fill before a marker: decoders skip them.
            i += 1;
            continue;
        }
        let marker = bytes[i + 1];
        if marker == EOI {
            return true;
        }
        if marker == 0x00 || is_standalone(marker) {
            i += 2;
            continue;
        }
        let Some(len) = bytes.get(i + 2..i + 4) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return false;
        }
        i += 2 + len;
        if marker == SOS {
            // Entropy-coded data: up to the next marker that is not a stuffed byte or restart.
            while i + 1 < bytes.len()
                && !(bytes[i] == 0xFF
                    && bytes[i + 1] != 0x00
                    && bytes[i + 1] != 0xFF
                    && !(0xD0..=0xD7).contains(&bytes[i + 1]))
            {
                i += 1;
            }
        }
    }
    false
}

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
/// use asl_cli::images::resize;
/// use asl_tresnet::weights::ResizeMode;
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

/// Planar (CHW) `f32` RGB in `[0, 1]`: pixels / 255, no normalisation; length `3 * w * h`,
/// the red plane first.
///
/// ```
/// let img = image::RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 51]));
/// assert_eq!(asl_cli::images::to_chw(&img), vec![1.0, 1.0, 0.0, 0.0, 0.2, 0.2]);
/// ```
pub fn to_chw(img: &RgbImage) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0f32; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = f32::from(px[0]) / 255.0;
        g[i] = f32::from(px[1]) / 255.0;
        b[i] = f32::from(px[2]) / 255.0;
    }
    out
}

/// [`load_rgb`], [`resize`] and [`to_chw`] in one call: the model input for one image file,
/// `3 * size * size` values.
pub fn prepare(
    path: &Path,
    size: u32,
    mode: ResizeMode,
    max_pixels: u64,
) -> Result<Vec<f32>, ImageError> {
    let img = load_rgb(path, max_pixels)?;
    Ok(to_chw(&resize(&img, size, mode)))
}

/// The image with its labels drawn on it, for `infer --annotate DIR`: one `"name 0.93"` line
/// per label (score with two decimals), white text on a 70 %-opaque black box at the top-left.
///
/// Text is drawn with an embedded 5x7 bitmap font, scaled by an integer factor of about one
/// font pixel per 200 pixels of the image's shorter side (at least 1); characters outside
/// printable ASCII are drawn as `?`; lines that do not fit are clipped at the image border.
/// With no labels the box reads `(no labels)`.
///
/// ```
/// let img = image::RgbImage::from_pixel(400, 300, image::Rgb([200, 200, 200]));
/// let out = asl_cli::images::annotate(&img, &[("dog".to_string(), 0.93)]);
/// assert_ne!(out.get_pixel(1, 1), img.get_pixel(1, 1));
/// assert_eq!(out.get_pixel(399, 299), img.get_pixel(399, 299));
/// ```
pub fn annotate(img: &RgbImage, labels: &[(String, f32)]) -> RgbImage {
    font::annotate(img, labels)
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

    #[test]
    fn font_covers_printable_ascii_and_replaces_the_rest() {
        for c in ' '..='~' {
            let lit = (0..5).flat_map(|x| (0..7).map(move |y| (x, y)));
            let count = lit.filter(|&(x, y)| font::glyph_pixel(c, x, y)).count();
            assert_eq!(count == 0, c == ' ', "glyph {c:?} has {count} pixels");
        }
        for (x, y) in (0..5).flat_map(|x| (0..7).map(move |y| (x, y))) {
            assert_eq!(font::glyph_pixel('é', x, y), font::glyph_pixel('?', x, y));
        }
    }
}
