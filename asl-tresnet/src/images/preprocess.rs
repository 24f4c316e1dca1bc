//! From a decoded image to the model's input: resize, planar `f32`, normalisation.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::{load_rgb, resize, ImageError};
use crate::pretrained::{PretrainedCfg, ResizeMode};

/// Planar (CHW) `f32` RGB in `[0, 1]`: pixels / 255, no normalisation; length `3 * w * h`,
/// the red plane first.
///
/// ```
/// let img = image::RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 51]));
/// assert_eq!(asl_tresnet::images::to_chw(&img), vec![1.0, 1.0, 0.0, 0.0, 0.2, 0.2]);
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

/// A model's preprocessing: resize to `size` as `resize` says, planar RGB in `[0, 1]`, then
/// `(x - mean) / std` per channel.
///
/// ```
/// use asl_tresnet::images::Preprocess;
/// let p = Preprocess::squish(32);
/// let img = image::RgbImage::from_pixel(64, 48, image::Rgb([255, 0, 0]));
/// let x = p.apply(&img);
/// assert_eq!(x.len(), 3 * 32 * 32);
/// assert_eq!((x[0], x[32 * 32]), (1.0, 0.0));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub size: u32,
    pub resize: ResizeMode,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Images with more pixels than this are refused ([`super::DEFAULT_MAX_PIXELS`]).
    pub max_pixels: u64,
}

impl Preprocess {
    /// The preprocessing `cfg` describes.
    pub fn new(cfg: &PretrainedCfg) -> Preprocess {
        Preprocess {
            size: cfg.input_size as u32,
            resize: cfg.resize,
            mean: cfg.mean,
            std: cfg.std,
            max_pixels: super::DEFAULT_MAX_PIXELS,
        }
    }

    /// Squish to `size` x `size`, no normalisation: what the ASL models and the trainer use.
    pub fn squish(size: u32) -> Preprocess {
        Preprocess {
            size,
            resize: ResizeMode::Squish,
            mean: crate::pretrained::config::TRESNET_MEAN,
            std: crate::pretrained::config::TRESNET_STD,
            max_pixels: super::DEFAULT_MAX_PIXELS,
        }
    }

    /// With another pixel limit.
    pub fn with_max_pixels(self, max_pixels: u64) -> Preprocess {
        Preprocess { max_pixels, ..self }
    }

    /// The model input of a decoded image: `3 * size * size` values.
    pub fn apply(&self, img: &RgbImage) -> Vec<f32> {
        self.normalise(to_chw(&resize(img, self.size, self.resize)))
    }

    /// The model input of an image file.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, ImageError> {
        Ok(self.apply(&load_rgb(path, self.max_pixels)?))
    }

    /// A batch `[N, 3, S, S]` of decoded images on `device`.
    pub fn batch(&self, images: &[RgbImage], device: &Device) -> candle_core::Result<Tensor> {
        let s = self.size as usize;
        let data: Vec<f32> = images.iter().flat_map(|img| self.apply(img)).collect();
        Tensor::from_vec(data, (images.len(), 3, s, s), device)
    }

    /// `(x - mean) / std` per plane (nothing to do for mean 0 and std 1).
    fn normalise(&self, mut x: Vec<f32>) -> Vec<f32> {
        if self.mean == [0.0; 3] && self.std == [1.0; 3] {
            return x;
        }
        let plane = x.len() / 3;
        for (c, values) in x.chunks_mut(plane.max(1)).enumerate().take(3) {
            let (m, s) = (self.mean[c], self.std[c]);
            values.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_is_per_channel() {
        let p = Preprocess {
            mean: [0.5, 0.0, 1.0],
            std: [0.5, 2.0, 1.0],
            ..Preprocess::squish(2)
        };
        let img = RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 0]));
        let x = p.apply(&img);
        assert_eq!(&x[..4], &[1.0; 4]);
        assert_eq!(&x[4..8], &[0.5; 4]);
        assert_eq!(&x[8..], &[-1.0; 4]);
    }
}
