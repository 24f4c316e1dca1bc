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
//! use asl_tresnet::augment::{augment, AugmentConfig};
//! use rand::SeedableRng;
//! let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 77]));
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let out = augment(&img, &AugmentConfig::default(), &mut rng);
//! assert_eq!(out.dimensions(), img.dimensions());
//! ```

mod colour;
mod cutout;
mod geometry;

use image::{Rgb, RgbImage};
use rand::Rng;

pub use colour::{
    autocontrast, brightness, color, contrast, equalize, invert, posterize, sharpness, solarize,
};
pub use cutout::{cutout, cutout_rect, random_cutout, square_cutout_rect, Rect};
pub use geometry::{affine, rotate, shear_x, shear_y, translate_x, translate_y, Resample};

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
/// use asl_tresnet::augment::{op_param, RandAugmentOp};
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
