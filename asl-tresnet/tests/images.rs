//! Tests of `asl_tresnet::images`: decoding every supported format and colour type, EXIF
//! orientation, refusing bad input, resizing against Pillow, CHW layout.
//!
//! Test images are built here with the `image` crate's encoders; what needs Pillow (the resize
//! references, a CMYK JPEG, a palette PNG, JPEGs with an EXIF orientation written by Pillow) is
//! under `tests/fixtures/images/`, made by `gen_resize_fixtures.py` (versions in `fixtures.txt`).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use asl_tresnet::images::{
    decode_rgb, load_rgb, prepare, resize, to_chw, ImageError, DEFAULT_MAX_PIXELS,
};
use asl_tresnet::pretrained::ResizeMode;
use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{
    Delay, DynamicImage, Frame, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name)
}

/// The synthetic source image of the resize fixtures; must match `source()` in
/// `gen_resize_fixtures.py`.
fn source(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = |c: u32| ((x * x * 3 + y * 17 + c * 85 + (x * y) % 31 * 5) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    })
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), format)
        .expect("encoding a test image");
    bytes
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode_image(img)
        .expect("encoding a test JPEG");
    bytes
}

fn decode(bytes: &[u8]) -> RgbImage {
    decode_rgb(bytes, DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("decoding failed: {e}"))
}

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions(), "sizes differ");
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| x.abs_diff(y))
        .max()
        .unwrap_or(0)
}

fn assert_close(actual: &Rgb<u8>, expected: [u8; 3], tolerance: u8, what: &str) {
    let ok = actual
        .0
        .iter()
        .zip(expected)
        .all(|(&a, e)| a.abs_diff(e) <= tolerance);
    assert!(
        ok,
        "{what}: got {:?}, expected {expected:?} +- {tolerance}",
        actual.0
    );
}

// ---------------------------------------------------------------- decoding: formats

/// A 6x4 test image of distinct, saturated colours (exact in palette-based formats).
fn colours() -> RgbImage {
    const PALETTE: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
    RgbImage::from_fn(6, 4, |x, y| Rgb(PALETTE[((x / 3) + 2 * (y / 2)) as usize]))
}

#[test]
fn decodes_lossless_formats_exactly() {
    let img = colours();
    for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::Tiff] {
        let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), format);
        assert_eq!(decode(&bytes), img, "{format:?}");
    }
    let mut webp = Vec::new();
    WebPEncoder::new_lossless(&mut webp)
        .encode(img.as_raw(), 6, 4, image::ExtendedColorType::Rgb8)
        .expect("encoding WebP");
    assert_eq!(&webp[8..12], b"WEBP");
    assert_eq!(decode(&webp), img, "lossless WebP");
}

#[test]
fn decodes_jpeg() {
    // 16x16 blocks so that chroma subsampling does not mix colours at the block centres.
    let img = RgbImage::from_fn(32, 16, |x, _| {
        if x < 16 {
            Rgb([200, 30, 30])
        } else {
            Rgb([30, 30, 200])
        }
    });
    let out = decode(&jpeg(&img));
    assert_eq!(out.dimensions(), (32, 16));
    assert_close(out.get_pixel(8, 8), [200, 30, 30], 6, "left block");
    assert_close(out.get_pixel(24, 8), [30, 30, 200], 6, "right block");
}

#[test]
fn converts_grayscale_and_16_bit_png_to_rgb() {
    let gray = ImageBuffer::from_fn(5, 3, |x, y| Luma([(x * 50 + y) as u8]));
    let out = decode(&encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png));
    assert_eq!(out.get_pixel(4, 2).0, [202, 202, 202]);
    assert_eq!(out.get_pixel(1, 0).0, [50, 50, 50]);

    // 16-bit to 8-bit scales by 255 / 65535: 0xFFFF -> 255, 0x8080 -> 128, 0x0101 -> 1.
    let gray16 = ImageBuffer::from_fn(3, 1, |x, _| Luma([[0xFFFFu16, 0x8080, 0x0101][x as usize]]));
    let out = decode(&encode(
        &DynamicImage::ImageLuma16(gray16),
        ImageFormat::Png,
    ));
    assert_eq!(out.as_raw(), &[255, 255, 255, 128, 128, 128, 1, 1, 1]);
}

#[test]
fn drops_alpha_keeping_stored_colour() {
    // A fully transparent pixel keeps its stored colour (no compositing over a background).
    let rgba = RgbaImage::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgba([10, 20, 30, 0])
        } else {
            Rgba([200, 100, 50, 128])
        }
    });
    let out = decode(&encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    assert_eq!(out.as_raw(), &[10, 20, 30, 200, 100, 50]);
}

#[test]
fn decodes_palette_png_like_pillow() {
    let bytes = std::fs::read(fixture("palette.png")).expect("fixture palette.png");
    assert_eq!(bytes[25], 3, "fixture must be an indexed-colour PNG");
    let out = decode(&bytes);
    // Pillow's convert("RGB"), from fixtures.txt.
    let expected: [[u8; 3]; 8] = [
        [255, 0, 0],
        [0, 128, 0],
        [0, 0, 255],
        [250, 200, 10],
        [250, 200, 10],
        [0, 0, 255],
        [0, 128, 0],
        [255, 0, 0],
    ];
    assert_eq!(out.dimensions(), (4, 2));
    let got: Vec<[u8; 3]> = out.pixels().map(|p| p.0).collect();
    assert_eq!(got, expected);
}

#[test]
fn decodes_cmyk_jpeg_like_pillow() {
    let out = load_rgb(&fixture("cmyk.jpg"), DEFAULT_MAX_PIXELS)
        .unwrap_or_else(|e| panic!("cmyk.jpg: {e}"));
    assert_eq!(out.dimensions(), (16, 16));
    // Pillow's RGB at the quadrant centres, from fixtures.txt.
    let expected = [
        ((4, 4), [255, 0, 0]),
        ((12, 4), [0, 255, 0]),
        ((4, 12), [0, 0, 255]),
        ((12, 12), [127, 127, 127]),
    ];
    for ((x, y), rgb) in expected {
        assert_close(
            out.get_pixel(x, y),
            rgb,
            8,
            &format!("CMYK quadrant at ({x}, {y})"),
        );
    }
}

#[test]
fn gif_uses_the_first_frame() {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        let frame = |c: [u8; 4]| {
            Frame::from_parts(
                RgbaImage::from_pixel(4, 3, Rgba(c)),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            )
        };
        encoder
            .encode_frames([frame([255, 0, 0, 255]), frame([0, 0, 255, 255])])
            .expect("encoding GIF");
    }
    assert_eq!(&bytes[..3], b"GIF");
    let out = decode(&bytes);
    assert_eq!(out.dimensions(), (4, 3));
    assert!(
        out.pixels().all(|p| p.0 == [255, 0, 0]),
        "{:?}",
        out.get_pixel(0, 0)
    );
}

#[test]
fn converts_16_bit_tiff() {
    let img: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(3, 2, |x, y| {
        Rgb([0xFFFF, (x * 0x4000) as u16, (y * 0x8080) as u16])
    });
    let bytes = encode(&DynamicImage::ImageRgb16(img), ImageFormat::Tiff);
    let out = decode(&bytes);
    assert_eq!(out.dimensions(), (3, 2));
    assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(out.get_pixel(2, 1).0, [255, 128, 128]);
}

// ---------------------------------------------------------------- EXIF orientation

/// Inserts an APP1 Exif segment with only an Orientation tag right after a JPEG's SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF header, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut segment = b"Exif\0\0".to_vec();
    segment.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((segment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Where stored pixel `(x, y)` of a `w` x `h` image is displayed under an EXIF orientation
/// (the definitions of the EXIF 2.3 specification, Orientation tag).
fn displayed_at(orientation: u16, x: u32, y: u32, w: u32, h: u32) -> (u32, u32) {
    match orientation {
        1 => (x, y),
        2 => (w - 1 - x, y),         // mirrored horizontally
        3 => (w - 1 - x, h - 1 - y), // rotated 180
        4 => (x, h - 1 - y),         // mirrored vertically
        5 => (y, x),                 // transposed
        6 => (h - 1 - y, x),         // rotated 90 clockwise
        7 => (h - 1 - y, w - 1 - x), // transversed
        8 => (y, w - 1 - x),         // rotated 90 counter-clockwise
        _ => unreachable!(),
    }
}

#[test]
fn applies_all_eight_exif_orientations() {
    // 3x2 blocks of 16 px, six distinct colours: each block's display position is checked.
    const BLOCK: u32 = 16;
    const COLOURS: [[u8; 3]; 6] = [
        [220, 20, 20],
        [20, 220, 20],
        [20, 20, 220],
        [220, 220, 20],
        [20, 220, 220],
        [220, 20, 220],
    ];
    let (w, h) = (3 * BLOCK, 2 * BLOCK);
    let stored = RgbImage::from_fn(w, h, |x, y| {
        Rgb(COLOURS[(x / BLOCK + 3 * (y / BLOCK)) as usize])
    });
    let plain = jpeg(&stored);
    for orientation in 1..=8u16 {
        let out = decode(&with_exif_orientation(&plain, orientation));
        let swapped = orientation >= 5;
        let expected_dims = if swapped { (h, w) } else { (w, h) };
        assert_eq!(out.dimensions(), expected_dims, "orientation {orientation}");
        for (i, colour) in COLOURS.iter().enumerate() {
            let (bx, by) = (i as u32 % 3, i as u32 / 3);
            let centre = (bx * BLOCK + BLOCK / 2, by * BLOCK + BLOCK / 2);
            let (dx, dy) = displayed_at(orientation, centre.0, centre.1, w, h);
            assert_close(
                out.get_pixel(dx, dy),
                *colour,
                12,
                &format!("orientation {orientation}, block {i}"),
            );
        }
    }
}

#[test]
fn applies_exif_orientation_written_by_pillow() {
    // Stored 24x16 with a red 8x8 block at the top-left; Pillow's exif_transpose puts it at
    // the bottom-right for 3 and the top-right of a 16x24 image for 6 (fixtures.txt).
    for (name, dims, corner) in [
        ("exif_orient3.jpg", (24, 16), (23, 15)),
        ("exif_orient6.jpg", (16, 24), (15, 0)),
    ] {
        let out = load_rgb(&fixture(name), DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.dimensions(), dims, "{name}");
        assert_close(out.get_pixel(corner.0, corner.1), [255, 0, 0], 30, name);
        assert_close(out.get_pixel(0, dims.1 - 1), [128, 128, 128], 30, name);
    }
}

// ---------------------------------------------------------------- decoding: refusals

/// CRC-32 (IEEE) for patching PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A real 1x1 PNG whose IHDR (with a valid CRC) claims `width` x `height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(1, 1)),
        ImageFormat::Png,
    );
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, ... CRC over type + data.
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn refuses_decompression_bombs_from_the_header() {
    let start = Instant::now();
    let err = decode_rgb(&png_claiming(100_000, 100_000), DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&DEFAULT_MAX_PIXELS.to_string()), "{msg}");
    assert!(msg.contains("100000 x 100000"), "{msg}");
    assert!(msg.contains("decompression bomb"), "{msg}");

    // A JPEG whose SOF claims 60000 x 60000 (3.6 gigapixels).
    let mut bomb = jpeg(&RgbImage::new(16, 16));
    let sof = bomb
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF marker");
    bomb[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    bomb[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let start = Instant::now();
    let err = decode_rgb(&bomb, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
}

#[test]
fn pixel_limit_is_configurable() {
    let bytes = encode(
        &DynamicImage::ImageRgb8(RgbImage::new(10, 10)),
        ImageFormat::Png,
    );
    assert!(decode_rgb(&bytes, 100).is_ok());
    let err = decode_rgb(&bytes, 99).unwrap_err();
    assert!(err.to_string().contains("limit of 99 pixels"), "{err}");
    // The limit holds after the EXIF rotation too: it is on width * height.
    let rotated = with_exif_orientation(&jpeg(&RgbImage::new(20, 5)), 6);
    assert_eq!(
        decode_rgb(&rotated, 100).map(|i| i.dimensions()).ok(),
        Some((5, 20))
    );
}

#[test]
fn truncated_jpeg_is_a_clear_error() {
    let img = source(64, 64);
    let bytes = jpeg(&img);
    for cut in [bytes.len() / 2, 200, 20] {
        let err = decode_rgb(&bytes[..cut], DEFAULT_MAX_PIXELS)
            .err()
            .unwrap_or_else(|| panic!("a JPEG cut to {cut} of {} bytes decoded", bytes.len()));
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                ImageError::Decode { .. } | ImageError::Truncated { .. }
            ),
            "{err:?}"
        );
        assert!(msg.contains("JPEG") && msg.contains("truncated"), "{msg}");
    }
    // Cutting only the end-of-image marker is enough; bytes after it do not matter.
    let err = decode_rgb(&bytes[..bytes.len() - 2], DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, ImageError::Truncated { .. }), "{err:?}");
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"trailing garbage \xFF\xD8");
    assert_eq!(decode(&trailing), decode(&bytes));
    // An EOI inside an EXIF segment does not make a truncated file look complete.
    let mut with_app = bytes[..2].to_vec();
    with_app.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD9]);
    with_app.extend_from_slice(&bytes[2..bytes.len() / 2]);
    let err = decode_rgb(&with_app, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, ImageError::Truncated { .. }), "{err:?}");
}

#[test]
fn truncated_files_of_every_format_are_errors() {
    let img = DynamicImage::ImageRgb8(source(64, 48));
    let mut webp = Vec::new();
    WebPEncoder::new_lossless(&mut webp)
        .encode(img.as_bytes(), 64, 48, image::ExtendedColorType::Rgb8)
        .expect("encoding WebP");
    let mut gif = Vec::new();
    GifEncoder::new(&mut gif)
        .encode_frame(Frame::new(img.to_rgba8()))
        .expect("encoding GIF");
    let files = [
        ("PNG", encode(&img, ImageFormat::Png)),
        ("BMP", encode(&img, ImageFormat::Bmp)),
        ("TIFF", encode(&img, ImageFormat::Tiff)),
        ("WebP", webp),
        ("GIF", gif),
    ];
    for (format, bytes) in files {
        assert!(decode_rgb(&bytes, DEFAULT_MAX_PIXELS).is_ok(), "{format}");
        let err = decode_rgb(&bytes[..bytes.len() * 2 / 3], DEFAULT_MAX_PIXELS).err();
        assert!(
            matches!(err, Some(ImageError::Decode { .. })),
            "{format} cut to 2/3: {err:?}"
        );
    }
}

#[test]
fn truncated_png_is_a_clear_error() {
    let bytes = encode(&DynamicImage::ImageRgb8(source(64, 64)), ImageFormat::Png);
    let err = decode_rgb(&bytes[..bytes.len() / 2], DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("PNG"), "{err}");
}

#[test]
fn random_bytes_empty_and_unsupported_formats_are_clear_errors() {
    // Deterministic pseudo-random bytes (a 64-bit LCG).
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    let err = decode_rgb(&noise, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("JPEG, PNG, WebP, BMP, GIF and TIFF"),
        "{err}"
    );

    // Noise behind a valid signature reaches the decoder and fails there.
    for magic in [
        &b"\x89PNG\r\n\x1a\n"[..],
        b"\xFF\xD8\xFF",
        b"GIF89a",
        b"BM",
        b"II*\0",
    ] {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&noise);
        let err = decode_rgb(&bytes, DEFAULT_MAX_PIXELS).err();
        assert!(
            matches!(
                err,
                Some(ImageError::Decode { .. } | ImageError::TooLarge { .. })
            ),
            "magic {magic:?}: {err:?}"
        );
    }

    let err = decode_rgb(&[], DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, ImageError::Empty { .. }), "{err:?}");

    // Recognised but not enabled (a PNM file): still "not supported", not a panic.
    let err = decode_rgb(b"P6\n2 2\n255\n............", DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err:?}");
}

#[test]
fn file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("asl-cli-images-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let garbage = dir.join("not-an-image.jpg");
    std::fs::write(&garbage, b"hello, world").expect("writing a temp file");
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").expect("writing a temp file");
    let missing = dir.join("missing.png");
    for path in [&garbage, &empty, &missing] {
        let err = load_rgb(path, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let err = prepare(path, 32, ResizeMode::Squish, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert!(matches!(
        load_rgb(&missing, DEFAULT_MAX_PIXELS),
        Err(ImageError::Read { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- resize

#[test]
fn squish_of_an_image_at_size_is_bit_exact() {
    let img = source(50, 50);
    assert_eq!(resize(&img, 50, ResizeMode::Squish), img);
}

fn pillow_fixture(name: &str) -> RgbImage {
    load_rgb(&fixture(name), DEFAULT_MAX_PIXELS).unwrap_or_else(|e| panic!("fixture: {e}"))
}

#[test]
fn squish_matches_pillow_bilinear() {
    for (name, (w, h), size) in [
        ("resize_97x61_to_32.png", (97, 61), 32),
        ("resize_23x17_to_40.png", (23, 17), 40),
        ("resize_400x300_to_24.png", (400, 300), 24),
        ("resize_64x40_to_64.png", (64, 40), 64),
    ] {
        let ours = resize(&source(w, h), size, ResizeMode::Squish);
        let diff = max_abs_diff(&ours, &pillow_fixture(name));
        println!("{name}: max abs diff {diff}");
        assert!(diff <= 1, "{name}: max abs diff {diff} > 1");
    }
}

#[test]
fn crop_matches_timm_eval_transform() {
    for (name, (w, h), size, crop_pct) in [
        ("crop_97x61_to_40_0.875.png", (97, 61), 40, 0.875),
        ("crop_61x97_to_32_0.95.png", (61, 97), 32, 0.95),
    ] {
        let ours = resize(&source(w, h), size, ResizeMode::Crop { crop_pct });
        let diff = max_abs_diff(&ours, &pillow_fixture(name));
        println!("{name}: max abs diff {diff}");
        assert!(diff <= 1, "{name}: max abs diff {diff} > 1");
    }
}

#[test]
fn crop_geometry_of_a_non_square_image() {
    // 300x100 with a marker column every pixel: no resize happens at size 100, crop_pct 1
    // (shorter side already 100), so the crop offset is visible: round((300 - 100) / 2) = 100.
    let img = RgbImage::from_fn(300, 100, |x, y| {
        Rgb([(x % 256) as u8, (x / 256) as u8, y as u8])
    });
    let out = resize(&img, 100, ResizeMode::Crop { crop_pct: 1.0 });
    assert_eq!(out.dimensions(), (100, 100));
    assert_eq!(out.get_pixel(0, 0).0, [100, 0, 0]);
    assert_eq!(out.get_pixel(99, 99).0, [199, 0, 99]);

    // Portrait: the vertical offset, with Python's round-half-to-even: 100 x 201 gives
    // round(50.5) = 50, 100 x 203 gives round(51.5) = 52 (no resize: the shorter side is 100).
    for (height, top) in [(201, 50), (203, 52)] {
        let img = RgbImage::from_fn(100, height, |x, y| Rgb([x as u8, y as u8, 0]));
        let out = resize(&img, 100, ResizeMode::Crop { crop_pct: 1.0 });
        assert_eq!(out.dimensions(), (100, 100));
        assert_eq!(out.get_pixel(0, 0).0, [0, top, 0], "height {height}");
    }

    // With resizing: 640x480 at 224 / 0.875 is resized to 341x256, the crop keeps the middle,
    // so a centred feature stays centred.
    let img = RgbImage::from_fn(640, 480, |x, y| {
        let inside = (310..330).contains(&x) && (230..250).contains(&y);
        Rgb(if inside { [255, 255, 255] } else { [0, 0, 0] })
    });
    let out = resize(&img, 224, ResizeMode::Crop { crop_pct: 0.875 });
    assert_eq!(out.dimensions(), (224, 224));
    assert!(out.get_pixel(112, 112)[0] > 200);
    assert!(out.get_pixel(5, 5)[0] == 0 && out.get_pixel(218, 218)[0] == 0);
}

// ---------------------------------------------------------------- to_chw / prepare

#[test]
fn to_chw_is_planar_and_scaled() {
    let img = RgbImage::from_fn(3, 2, |x, y| Rgb([(10 * x + y) as u8, 255, (x * y) as u8]));
    let chw = to_chw(&img);
    assert_eq!(chw.len(), 3 * 3 * 2);
    let at = |c: usize, y: usize, x: usize| chw[c * 6 + y * 3 + x];
    for y in 0..2u32 {
        for x in 0..3u32 {
            let p = img.get_pixel(x, y);
            for c in 0..3 {
                assert_eq!(at(c, y as usize, x as usize), f32::from(p[c]) / 255.0);
            }
        }
    }
    assert_eq!(at(1, 0, 0), 1.0);
    assert_eq!(at(0, 1, 2), 21.0 / 255.0);
}

#[test]
fn prepare_loads_resizes_and_converts() {
    let dir = std::env::temp_dir().join(format!("asl-cli-images-prep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("source.png");
    source(97, 61).save(&path).expect("writing a temp PNG");
    let input = prepare(&path, 32, ResizeMode::Squish, DEFAULT_MAX_PIXELS).expect("prepare");
    let expected = to_chw(&pillow_fixture("resize_97x61_to_32.png"));
    assert_eq!(input.len(), 3 * 32 * 32);
    let worst = input
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1.0 / 255.0 + 1e-6, "max diff {worst}");
    let _ = std::fs::remove_dir_all(&dir);
}
