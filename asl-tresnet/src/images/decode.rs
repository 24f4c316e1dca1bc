//! Decoding: any supported file or byte buffer to 8-bit RGB, EXIF orientation applied, with
//! decompression bombs refused from the header alone.

use std::io::Cursor;
use std::path::{Path, PathBuf};

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
/// use asl_tresnet::images::{decode_rgb, DEFAULT_MAX_PIXELS};
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
