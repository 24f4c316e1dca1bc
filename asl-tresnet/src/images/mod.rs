//! Image decoding and preprocessing: from a file to the model's `[3, S, S]` input.
//!
//! What it does, in order ([`Preprocess`] runs all of it for a model's [`PretrainedCfg`]):
//! 1. [`load_rgb`] / [`decode_rgb`]: sniff the format from the content (JPEG, PNG, WebP, BMP, GIF,
//!    TIFF), refuse decompression bombs from the header alone, decode, convert to 8-bit RGB and
//!    apply the EXIF orientation.
//! 2. [`resize`]: squish to S x S (the ASL multi-label models) or resize the shorter side to
//!    `floor(S / crop_pct)` and centre-crop S x S (timm's ImageNet tags), with Pillow's bilinear
//!    filter (see below).
//! 3. [`to_chw`]: planar `f32` RGB in `[0, 1]` (pixels / 255), then the configuration's
//!    `(x - mean) / std` (TResNet's models use mean 0 and std 1: no change).
//!
//! Colour conversions (the same choices as Pillow's `convert("RGB")`): grayscale is replicated to
//! three channels; alpha is dropped and the colour channels are taken as stored (no compositing
//! over a background: a transparent pixel keeps whatever colour it stores); palette images are
//! expanded; 16-bit and float samples are scaled to 8 bits; CMYK/YCCK JPEGs are converted to RGB
//! by the JPEG decoder. ICC profiles are ignored, as Pillow's `convert` ignores them.
//!
//!
//! [`PretrainedCfg`]: crate::pretrained::PretrainedCfg
//!
//! Not for: augmentation (the training transforms are the augment module's) or writing images.

mod decode;
mod preprocess;
mod resample;
mod resize;

pub use decode::{decode_rgb, load_rgb, ImageError, DEFAULT_MAX_PIXELS};
pub use image::RgbImage;
pub use preprocess::{prepare, to_chw, Preprocess};
pub use resize::resize;
