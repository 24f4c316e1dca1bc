//! Training augmentation: the ASL reference recipe, Cutout then RandAugment, on
//! [`image::RgbImage`]s, each operation with Pillow's semantics.
//!
//! # The reference
//! Alibaba-MIIL/ASL `train.py` builds the training transform as
//! `Resize((S, S))`, `CutoutPIL(cutout_factor=0.5)`, `RandAugment()`, `ToTensor()`:
//! - `CutoutPIL` (ASL `src/helper_functions/helper_functions.py`): one rectangle of
//!   `int(0.5 * side + 0.5)` pixels per dimension around a uniformly random pixel, clipped to the
//!   image, filled with a uniformly random colour; always applied. See [`cutout_rect`].
//! - `RandAugment` comes from the PyPI package `randaugment` 1.0.2 named in ASL's
//!   `requirements.txt` (jizongFox/pytorch-randaugment, `randaugment/randaugment.py`, itself
//!   DeepVoltaire/AutoAugment's `SubPolicy`): two operations, each drawn uniformly (with
//!   replacement) from the fifteen of [`RandAugmentOp::ALL`] with its own magnitude index uniform
//!   in 1..=9, each applied with probability 0.5. The magnitude index selects from a 10-point
//!   `np.linspace` per operation ([`op_param`]); shear, translate, colour, contrast, sharpness and
//!   brightness get a random sign, rotation does not (the reference only rotates
//!   counter-clockwise). Geometric operations fill with gray (128, 128, 128).
//!
//! # Order: after the resize
//! The reference resizes first and augments the `S x S` image, so a caller should do
//! decode → resize → [`augment`] → tensor. Two reasons beyond fidelity: RandAugment's cutout is
//! 2 to 20 *pixels* whatever the image size (so its strength depends on the resolution it sees),
//! and augmenting 224 x 224 costs far less than augmenting a multi-megapixel photo.
//!
//! # Determinism
//! Every random choice is drawn from the `rng` argument, in a fixed order, so a seeded generator
//! (e.g. `rand_chacha::ChaCha8Rng`) gives the same output for the same seed on every platform.
//! The stream differs from Python's, so the reference's exact draws are not reproduced, only
//! their distributions.
//!
//! # Deviations from the reference
//! - `CutoutPIL` swaps width and height (`h, w = x.size`), which only matters for non-square
//!   images (never in the reference, which resizes to a square first); here the horizontal extent
//!   follows the width and the vertical the height.
//! - Magnitude ranges, the number of operations and their probability are configurable
//!   ([`AugmentConfig`]); the default is the reference.
//! - An optional horizontal flip (not in the reference, a safe addition for most multi-label
//!   datasets), off by default.
//!
//! Not for: resizing ([`crate::images::resize`]) or tensor conversion ([`crate::images::to_chw`]).
//!
//! ```
//! use asl_cli::augment::{augment, AugmentConfig};
//! use rand::SeedableRng;
//! let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 77]));
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let out = augment(&img, &AugmentConfig::default(), &mut rng);
//! assert_eq!(out.dimensions(), img.dimensions());
//! ```

use image::{Rgb, RgbImage};
use rand::Rng;

/// The fill colour of the geometric operations: the reference's `fillcolor=(128, 128, 128)`
/// (and `rotate_with_fill`'s `(128,) * 4` background).
pub const FILL: Rgb<u8> = Rgb([128, 128, 128]);

/// The colour of RandAugment's own cutout (`Cutout.__call__` in the `randaugment` package).
pub const RAND_AUGMENT_CUTOUT_COLOUR: Rgb<u8> = Rgb([125, 122, 113]);

/// The largest magnitude index: the reference's ranges are 10-point `np.linspace`s indexed 0..=9.
pub const MAX_MAGNITUDE: u8 = 9;

/// What [`augment`] does. [`Default`] is the ASL recipe; [`AugmentConfig::none`] does nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Apply `CutoutPIL` (always, when on).
    pub cutout: bool,
    /// Cutout rectangle size as a fraction of the image side, per dimension (reference 0.5).
    pub cutout_factor: f32,
    /// Apply RandAugment after the cutout.
    pub rand_augment: bool,
    /// Operations drawn per image (reference 2).
    pub ops_per_image: usize,
    /// Inclusive range of the per-operation magnitude index, drawn uniformly for each operation
    /// (reference 1..=9). Values above [`MAX_MAGNITUDE`] are clamped; a reversed range is
    /// swapped.
    pub magnitude: (u8, u8),
    /// Probability that each drawn operation is applied (reference 0.5).
    pub op_probability: f32,
    /// Flip horizontally with probability 0.5 before everything else (not in the reference).
    pub hflip: bool,
}

impl Default for AugmentConfig {
    /// The ASL reference: cutout 0.5 always, RandAugment with 2 operations of magnitude 1..=9
    /// each applied with probability 0.5, no flip.
    fn default() -> Self {
        Self {
            cutout: true,
            cutout_factor: 0.5,
            rand_augment: true,
            ops_per_image: 2,
            magnitude: (1, MAX_MAGNITUDE),
            op_probability: 0.5,
            hflip: false,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all: [`augment`] returns a copy of its input (for validation, or to
    /// train without augmentation).
    pub fn none() -> Self {
        Self {
            cutout: false,
            rand_augment: false,
            hflip: false,
            ..Self::default()
        }
    }
}

/// Augments one training image (already resized to the model size, see the module docs):
/// optional flip, then Cutout, then RandAugment, as `cfg` says. The output has the input's size.
pub fn augment(img: &RgbImage, cfg: &AugmentConfig, rng: &mut impl Rng) -> RgbImage {
    let mut out = img.clone();
    if img.width() == 0 || img.height() == 0 {
        return out;
    }
    if cfg.hflip && rng.random::<f32>() < 0.5 {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    if cfg.cutout {
        out = random_cutout(&out, cfg.cutout_factor, rng);
    }
    if cfg.rand_augment {
        out = rand_augment(&out, cfg, rng);
    }
    out
}

/// RandAugment alone: `cfg.ops_per_image` times, draw an operation and a magnitude
/// ([`choose_op`]) and apply it ([`apply_op`]) with probability `cfg.op_probability`.
pub fn rand_augment(img: &RgbImage, cfg: &AugmentConfig, rng: &mut impl Rng) -> RgbImage {
    let mut out = img.clone();
    for _ in 0..cfg.ops_per_image {
        let (op, magnitude) = choose_op(cfg.magnitude, rng);
        // `random.random() < p` as in `SubPolicy.__call__`; never panics on odd probabilities.
        if rng.random::<f32>() < cfg.op_probability {
            out = apply_op(&out, op, magnitude, rng);
        }
    }
    out
}

/// The fifteen RandAugment operations, in the reference's `get_trans_list` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RandAugmentOp {
    /// [`invert`].
    Invert,
    /// A gray square of 2..20 pixels ([`square_cutout_rect`]).
    Cutout,
    /// [`sharpness`] with factor `1 ± 0.1 m`.
    Sharpness,
    /// [`autocontrast`].
    AutoContrast,
    /// [`posterize`] to 8..4 bits.
    Posterize,
    /// [`shear_x`] by `± 0.3 m / 9`.
    ShearX,
    /// [`translate_x`] by `± (150 / 331) m / 9` of the width.
    TranslateX,
    /// [`translate_y`] by `± (150 / 331) m / 9` of the height.
    TranslateY,
    /// [`shear_y`] by `± 0.3 m / 9`.
    ShearY,
    /// [`rotate`] counter-clockwise by `30 m / 9` degrees.
    Rotate,
    /// [`equalize`].
    Equalize,
    /// [`contrast`] with factor `1 ± 0.1 m`.
    Contrast,
    /// [`color`] with factor `1 ± 0.1 m`.
    Color,
    /// [`solarize`] above `256 - 256 m / 9`.
    Solarize,
    /// [`brightness`] with factor `1 ± 0.1 m`.
    Brightness,
}

impl RandAugmentOp {
    /// All operations, in the reference's order (the index drawn by [`choose_op`]).
    pub const ALL: [RandAugmentOp; 15] = [
        RandAugmentOp::Invert,
        RandAugmentOp::Cutout,
        RandAugmentOp::Sharpness,
        RandAugmentOp::AutoContrast,
        RandAugmentOp::Posterize,
        RandAugmentOp::ShearX,
        RandAugmentOp::TranslateX,
        RandAugmentOp::TranslateY,
        RandAugmentOp::ShearY,
        RandAugmentOp::Rotate,
        RandAugmentOp::Equalize,
        RandAugmentOp::Contrast,
        RandAugmentOp::Color,
        RandAugmentOp::Solarize,
        RandAugmentOp::Brightness,
    ];
}

/// `np.linspace(lo, hi, 10)[index]` computed as numpy does (the last point is `hi` exactly).
fn linspace10(lo: f64, hi: f64, index: u8) -> f64 {
    if index >= MAX_MAGNITUDE {
        hi
    } else {
        f64::from(index) * ((hi - lo) / 9.0) + lo
    }
}

/// The unsigned parameter of `op` at magnitude index `magnitude` (clamped to 0..=9), from the
/// reference's `SubPolicy` ranges:
///
/// | op | parameter | range over 0..=9 |
/// |---|---|---|
/// | ShearX/Y | shear factor | 0 .. 0.3 |
/// | TranslateX/Y | fraction of the width/height | 0 .. 150/331 |
/// | Rotate | degrees | 0 .. 30 |
/// | Color, Contrast, Sharpness, Brightness | deviation of the factor from 1 | 0 .. 0.9 |
/// | Posterize | bits kept | 8, 8, 7, 7, 6, 6, 5, 5, 4, 4 |
/// | Solarize | threshold | 256 .. 0 |
/// | Cutout | square side in pixels | 0, 2, 4, 7, 9, 11, 13, 16, 18, 20 |
/// | Invert, AutoContrast, Equalize | none | 0 |
///
/// ```
/// use asl_cli::augment::{op_param, RandAugmentOp};
/// assert_eq!(op_param(RandAugmentOp::Rotate, 9), 30.0);
/// assert_eq!(op_param(RandAugmentOp::Posterize, 1), 8.0);
/// ```
pub fn op_param(op: RandAugmentOp, magnitude: u8) -> f64 {
    // np.round(np.linspace(8, 4, 10)) and np.round(np.linspace(0, 20, 10)), rounded by numpy
    // (half to even; no point falls on a half).
    const POSTERIZE_BITS: [u8; 10] = [8, 8, 7, 7, 6, 6, 5, 5, 4, 4];
    const CUTOUT_PIXELS: [u8; 10] = [0, 2, 4, 7, 9, 11, 13, 16, 18, 20];
    let m = magnitude.min(MAX_MAGNITUDE);
    match op {
        RandAugmentOp::ShearX | RandAugmentOp::ShearY => linspace10(0.0, 0.3, m),
        RandAugmentOp::TranslateX | RandAugmentOp::TranslateY => linspace10(0.0, 150.0 / 331.0, m),
        RandAugmentOp::Rotate => linspace10(0.0, 30.0, m),
        RandAugmentOp::Color
        | RandAugmentOp::Contrast
        | RandAugmentOp::Sharpness
        | RandAugmentOp::Brightness => linspace10(0.0, 0.9, m),
        RandAugmentOp::Posterize => f64::from(POSTERIZE_BITS[usize::from(m)]),
        RandAugmentOp::Solarize => linspace10(256.0, 0.0, m),
        RandAugmentOp::Cutout => f64::from(CUTOUT_PIXELS[usize::from(m)]),
        RandAugmentOp::Invert | RandAugmentOp::AutoContrast | RandAugmentOp::Equalize => 0.0,
    }
}

/// Draws one RandAugment operation uniformly from [`RandAugmentOp::ALL`], then its magnitude
/// index uniformly from the inclusive `magnitude` range (clamped to 0..=9, swapped if reversed).
pub fn choose_op(magnitude: (u8, u8), rng: &mut impl Rng) -> (RandAugmentOp, u8) {
    let op = RandAugmentOp::ALL[rng.random_range(0..RandAugmentOp::ALL.len())];
    let (a, b) = (
        magnitude.0.min(MAX_MAGNITUDE),
        magnitude.1.min(MAX_MAGNITUDE),
    );
    let m = rng.random_range(a.min(b)..=a.max(b));
    (op, m)
}

/// `random.choice([-1, 1])`.
fn random_sign(rng: &mut impl Rng) -> f64 {
    if rng.random::<bool>() {
        1.0
    } else {
        -1.0
    }
}

/// Applies `op` at magnitude index `magnitude` as the reference's `SubPolicy` does, drawing the
/// sign (and, for cutout, the position) from `rng`. See [`op_param`] for the parameters.
pub fn apply_op(img: &RgbImage, op: RandAugmentOp, magnitude: u8, rng: &mut impl Rng) -> RgbImage {
    let p = op_param(op, magnitude);
    let (w, h) = img.dimensions();
    match op {
        RandAugmentOp::Invert => invert(img),
        RandAugmentOp::Cutout => {
            if w == 0 || h == 0 {
                return img.clone();
            }
            // the reference draws the x centre first, then the y centre
            let cx = rng.random_range(0..w);
            let cy = rng.random_range(0..h);
            let rect = square_cutout_rect(w, h, p as u32, (cx, cy));
            cutout(img, rect, RAND_AUGMENT_CUTOUT_COLOUR)
        }
        RandAugmentOp::Sharpness => sharpness(img, (1.0 + random_sign(rng) * p) as f32),
        RandAugmentOp::AutoContrast => autocontrast(img),
        RandAugmentOp::Posterize => posterize(img, p as u8),
        RandAugmentOp::ShearX => shear_x(img, random_sign(rng) * p, FILL),
        RandAugmentOp::TranslateX => translate_x(img, random_sign(rng) * p * f64::from(w), FILL),
        RandAugmentOp::TranslateY => translate_y(img, random_sign(rng) * p * f64::from(h), FILL),
        RandAugmentOp::ShearY => shear_y(img, random_sign(rng) * p, FILL),
        // `rotate_with_fill(img, magnitude)`: the random sign is commented out in the reference
        RandAugmentOp::Rotate => rotate(img, p, FILL),
        RandAugmentOp::Equalize => equalize(img),
        RandAugmentOp::Contrast => contrast(img, (1.0 + random_sign(rng) * p) as f32),
        RandAugmentOp::Color => color(img, (1.0 + random_sign(rng) * p) as f32),
        RandAugmentOp::Solarize => solarize(img, p),
        RandAugmentOp::Brightness => brightness(img, (1.0 + random_sign(rng) * p) as f32),
    }
}

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
/// use asl_cli::augment::{cutout_rect, Rect};
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
