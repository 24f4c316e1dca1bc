//! Tests of `asl_tresnet::augment`: every operation against results computed by hand (or, where
//! noted, by Pillow 13.0.0 on the same tiny image), the RandAugment parameter tables of the
//! reference, and the properties the trainer relies on: seeded determinism, `none()` as the
//! identity, sizes kept.

use asl_tresnet::augment::{
    apply_op, augment, autocontrast, brightness, choose_op, color, contrast, cutout, cutout_rect,
    equalize, invert, op_param, posterize, rand_augment, random_cutout, rotate, sharpness, shear_x,
    shear_y, solarize, square_cutout_rect, translate_x, translate_y, AugmentConfig, RandAugmentOp,
    Rect, FILL, MAX_MAGNITUDE, RAND_AUGMENT_CUTOUT_COLOUR,
};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const F: u8 = 128;

/// A one-row image of the given pixels.
fn row(pixels: &[[u8; 3]]) -> RgbImage {
    RgbImage::from_fn(pixels.len() as u32, 1, |x, _| Rgb(pixels[x as usize]))
}

/// A gray image whose red channel is `values` (row-major), green and blue 0.
fn red_plane(w: u32, h: u32, values: &[u8]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([values[(y * w + x) as usize], 0, 0]))
}

fn red_values(img: &RgbImage) -> Vec<u8> {
    img.pixels().map(|p| p.0[0]).collect()
}

/// A smooth, colourful, non-square test image.
fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w.max(2).saturating_sub(1).max(1)) as u8,
            (y * 255 / h.max(2).saturating_sub(1).max(1)) as u8,
            ((x * 7 + y * 13) % 256) as u8,
        ])
    })
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

// ---------------------------------------------------------------------------------------------
// Point operations

#[test]
fn invert_maps_each_sample_to_255_minus_it() {
    let img = row(&[[0, 1, 2], [253, 254, 255]]);
    assert_eq!(invert(&img), row(&[[255, 254, 253], [2, 1, 0]]));
}

#[test]
fn posterize_keeps_the_top_bits() {
    let img = row(&[[0b1011_0111, 0xff, 0]]);
    let r = |bits| posterize(&img, bits).get_pixel(0, 0).0;
    assert_eq!(r(8), [0b1011_0111, 0xff, 0]);
    assert_eq!(r(4), [0b1011_0000, 0xf0, 0]);
    assert_eq!(r(3), [0b1010_0000, 0xe0, 0]);
    assert_eq!(r(1), [0b1000_0000, 0x80, 0]);
    assert_eq!(r(0), [0, 0, 0]);
}

#[test]
fn solarize_inverts_values_at_or_above_the_threshold() {
    let img = row(&[[0, 127, 128], [200, 227, 228], [255, 255, 255]]);
    assert_eq!(
        solarize(&img, 128.0),
        row(&[[0, 127, 127], [55, 28, 27], [0, 0, 0]])
    );
    // the reference's magnitude 1 threshold: 256 - 256 / 9 = 227.56 keeps 227, inverts 228
    assert_eq!(
        solarize(&img, op_param(RandAugmentOp::Solarize, 1)),
        row(&[[0, 127, 128], [200, 227, 27], [0, 0, 0]])
    );
    assert_eq!(solarize(&img, 256.0), img);
    assert_eq!(solarize(&img, 0.0), invert(&img));
}

#[test]
fn autocontrast_stretches_each_channel_separately() {
    // red spans 50..100, green is constant (left alone), blue already spans 0..255;
    // 100 maps to 254 because Pillow truncates 100 * 5.1 - 255 = 254.99999999999994
    // (Pillow 13.0.0 gives the same)
    let img = row(&[[50, 7, 0], [75, 7, 255], [100, 7, 128]]);
    assert_eq!(
        autocontrast(&img),
        row(&[[0, 7, 0], [127, 7, 255], [254, 7, 128]])
    );
}

#[test]
fn equalize_spreads_a_known_histogram() {
    // 512 pixels: 255 of 10, 255 of 20, 2 of 30 in red and green; blue all 5 (one value: kept).
    // step = (512 - 2) / 255 = 2; lut[10] = 1 / 2 = 0, lut[20] = (1 + 255) / 2 = 128,
    // lut[30] = (1 + 510) / 2 = 255.
    let img = RgbImage::from_fn(32, 16, |x, y| {
        let i = y * 32 + x;
        let v = if i < 255 {
            10
        } else if i < 510 {
            20
        } else {
            30
        };
        Rgb([v, v, 5])
    });
    let out = equalize(&img);
    for (a, b) in img.pixels().zip(out.pixels()) {
        let want = match a.0[0] {
            10 => 0,
            20 => 128,
            _ => 255,
        };
        assert_eq!(b.0, [want, want, 5]);
    }
    // fewer than 256 pixels: step 0, nothing changes
    let small = row(&[[10, 10, 10], [20, 20, 20], [30, 30, 30]]);
    assert_eq!(equalize(&small), small);
}

// ---------------------------------------------------------------------------------------------
// ImageEnhance

#[test]
fn brightness_blends_with_black() {
    let img = row(&[[201, 200, 3], [0, 128, 255]]);
    assert_eq!(brightness(&img, 0.0), row(&[[0, 0, 0], [0, 0, 0]]));
    assert_eq!(brightness(&img, 1.0), img);
    // truncated, then clipped: 100.5 -> 100, 1.5 -> 1; 381.9 -> 255, 5.7 -> 5
    assert_eq!(brightness(&img, 0.5), row(&[[100, 100, 1], [0, 64, 127]]));
    assert_eq!(brightness(&img, 1.9), row(&[[255, 255, 5], [0, 243, 255]]));
}

#[test]
fn contrast_zero_gives_the_mean_luma_gray() {
    // luma 0 and 255, mean 127.5, int(127.5 + 0.5) = 128
    let img = row(&[[0, 0, 0], [255, 255, 255]]);
    assert_eq!(
        contrast(&img, 0.0),
        row(&[[128, 128, 128], [128, 128, 128]])
    );
    assert_eq!(contrast(&img, 1.0), img);
    // 128 + 0.5 * (0 - 128) = 64, 128 + 0.5 * 127 = 191.5 -> 191
    assert_eq!(contrast(&img, 0.5), row(&[[64, 64, 64], [191, 191, 191]]));
}

#[test]
fn color_zero_gives_the_grayscale() {
    // Pillow's luma: red 76, green 150, blue 29
    let img = row(&[[255, 0, 0], [0, 255, 0], [0, 0, 255]]);
    assert_eq!(
        color(&img, 0.0),
        row(&[[76, 76, 76], [150, 150, 150], [29, 29, 29]])
    );
    assert_eq!(color(&img, 1.0), img);
    // 76 + 0.5 * (255 - 76) = 165.5 -> 165, 76 * 0.5 = 38
    assert_eq!(color(&img, 0.5).get_pixel(0, 0).0, [165, 38, 38]);
}

#[test]
fn sharpness_blends_with_the_smoothed_image_and_keeps_the_border() {
    // one bright pixel in a black 3 x 3: smooth = round(5 v / 13)
    let mut img = RgbImage::new(3, 3);
    // (Pillow 13.0.0 gives the same)
    img.put_pixel(1, 1, Rgb([130, 255, 200]));
    let centre = |f: f32| sharpness(&img, f).get_pixel(1, 1).0;
    assert_eq!(centre(0.0), [50, 98, 77]); // 650/13 = 50, 1275/13 = 98.08, 1000/13 = 76.9
    assert_eq!(centre(1.0), [130, 255, 200]);
    assert_eq!(centre(2.0), [210, 255, 255]); // 50 + 2 * 80; clipped; clipped
    assert_eq!(centre(0.5), [90, 176, 138]); // 50 + 40; 98 + 78.5; 77 + 61.5
    for f in [0.0, 0.5, 2.0] {
        let out = sharpness(&img, f);
        for (x, y, p) in out.enumerate_pixels() {
            if (x, y) != (1, 1) {
                assert_eq!(p.0, [0, 0, 0], "border pixel ({x}, {y}) at factor {f}");
            }
        }
    }
    // images too small to have an interior are unchanged
    let tiny = row(&[[1, 2, 3], [200, 100, 50]]);
    assert_eq!(sharpness(&tiny, 0.0), tiny);
}

// ---------------------------------------------------------------------------------------------
// Geometry

#[test]
fn rotate_90_of_a_non_square_image_stays_in_the_same_canvas() {
    // 4 x 2, values 10..80 row-major; counter-clockwise about (2, 1): the middle two columns
    // receive the rotated content, the rest is fill (Pillow 13.0.0 agrees)
    let img = red_plane(4, 2, &[10, 20, 30, 40, 50, 60, 70, 80]);
    let out = rotate(&img, 90.0, FILL);
    assert_eq!(out.dimensions(), (4, 2));
    assert_eq!(red_values(&out), vec![F, 30, 70, F, F, 20, 60, F]);
    assert_eq!(out.get_pixel(0, 0).0, [F, F, F]);
}

#[test]
fn rotate_by_multiples_of_180_is_exact() {
    let img = red_plane(3, 2, &[1, 2, 3, 4, 5, 6]);
    assert_eq!(
        red_values(&rotate(&img, 180.0, FILL)),
        vec![6, 5, 4, 3, 2, 1]
    );
    assert_eq!(rotate(&img, 0.0, FILL), img);
    assert_eq!(rotate(&img, 360.0, FILL), img);
    assert_eq!(rotate(&img, -180.0, FILL), rotate(&img, 180.0, FILL));
}

#[test]
fn rotate_45_matches_pillow() {
    // Pillow 13.0.0, `rotate_with_fill(img, 45.0)` of the reference
    let img = red_plane(5, 5, &(1..=25).collect::<Vec<u8>>());
    let want = [
        F, 4, 9, 10, F, //
        2, 8, 9, 14, 20, //
        7, 7, 13, 19, 19, //
        6, 12, 17, 18, 24, //
        F, 16, 17, 22, F,
    ];
    assert_eq!(red_values(&rotate(&img, 45.0, FILL)), want.to_vec());
    // cases where Pillow's 16.16 fixed-point rounding decides which pixel is sampled
    let img = red_plane(3, 3, &(1..=9).collect::<Vec<u8>>());
    let want = [2, 3, 6, 4, 5, 9, 4, 8, 8];
    assert_eq!(red_values(&rotate(&img, 30.0, FILL)), want.to_vec());
    let img = red_plane(2, 2, &[1, 2, 3, 4]);
    assert_eq!(red_values(&rotate(&img, 45.0, FILL)), vec![2, 4, 3, 4]);
}

#[test]
fn translate_shifts_pixels_and_fills_the_rest() {
    let img = red_plane(4, 1, &[1, 2, 3, 4]);
    // Pillow's convention: a positive offset moves the content left
    assert_eq!(red_values(&translate_x(&img, 1.0, FILL)), vec![2, 3, 4, F]);
    assert_eq!(red_values(&translate_x(&img, -2.0, FILL)), vec![F, F, 1, 2]);
    // nearest: output x samples floor(x + 0.5 + offset), so 0.4 keeps, 0.5 shifts
    assert_eq!(translate_x(&img, 0.4, FILL), img);
    assert_eq!(red_values(&translate_x(&img, 0.5, FILL)), vec![2, 3, 4, F]);
    assert_eq!(red_values(&translate_x(&img, 9.0, FILL)), vec![F; 4]);
    let col = red_plane(1, 3, &[1, 2, 3]);
    assert_eq!(red_values(&translate_y(&col, 1.0, FILL)), vec![2, 3, F]);
    assert_eq!(red_values(&translate_y(&col, -1.0, FILL)), vec![F, 1, 2]);
    let green = Rgb([0, 255, 0]);
    assert_eq!(translate_y(&col, -1.0, green).get_pixel(0, 0), &green);
}

#[test]
fn shear_moves_a_single_bright_pixel() {
    // factor 2 samples exactly at pixel centres: output (x, y) = input (x + 2 y + 1, y)
    let mut img = RgbImage::new(8, 3);
    img.put_pixel(5, 1, Rgb([255, 255, 255]));
    let out = shear_x(&img, 2.0, FILL);
    let expect_row = |y: u32, want: [u8; 8]| {
        let got: Vec<u8> = (0..8).map(|x| out.get_pixel(x, y).0[0]).collect();
        assert_eq!(got, want.to_vec(), "row {y}");
    };
    expect_row(0, [0, 0, 0, 0, 0, 0, 0, F]);
    expect_row(1, [0, 0, 255, 0, 0, F, F, F]);
    expect_row(2, [0, 0, 0, F, F, F, F, F]);

    // a fractional factor spreads it with Pillow's bicubic (a = -1), as Pillow 13.0.0 does
    let mut img = RgbImage::new(6, 4);
    img.put_pixel(3, 2, Rgb([255, 255, 255]));
    let want_x = [
        0, 0, 0, 0, 0, 0, //
        0, 0, 0, 0, 0, 0, //
        0, 0, 227, 75, 0, F, //
        0, 0, 0, 0, 0, F,
    ];
    assert_eq!(red_values(&shear_x(&img, 0.3, FILL)), want_x.to_vec());
    let want_y = [
        0, 0, 0, 13, 0, 0, //
        0, 0, 0, 253, 0, 0, //
        0, 0, 0, 0, 0, F, //
        0, 0, F, F, F, F,
    ];
    assert_eq!(red_values(&shear_y(&img, 0.3, FILL)), want_y.to_vec());
    assert_eq!(shear_x(&img, 0.0, FILL), img);
}

// ---------------------------------------------------------------------------------------------
// Cutout

#[test]
fn cutout_rect_has_the_reference_size_and_is_clipped() {
    // 224: int(112.5) = 112, half 56, both ends inclusive: 113 pixels
    let r = cutout_rect(224, 224, 0.5, (100, 120));
    assert_eq!(
        r,
        Rect {
            x: 44,
            y: 64,
            width: 113,
            height: 113
        }
    );
    assert_eq!(
        cutout_rect(224, 224, 0.5, (0, 0)),
        Rect {
            x: 0,
            y: 0,
            width: 57,
            height: 57
        }
    );
    assert_eq!(
        cutout_rect(224, 224, 0.5, (223, 200)),
        Rect {
            x: 167,
            y: 144,
            width: 57,
            height: 80
        }
    );
    // non-square: each dimension from its own side (40 -> 20, half 10; 20 -> 10, half 5)
    assert_eq!(
        cutout_rect(40, 20, 0.5, (10, 5)),
        Rect {
            x: 0,
            y: 0,
            width: 21,
            height: 11
        }
    );
    assert_eq!(
        cutout_rect(40, 20, 0.5, (20, 10)),
        Rect {
            x: 10,
            y: 5,
            width: 21,
            height: 11
        }
    );
    // a degenerate factor still gives a valid (one-pixel) rectangle, never a panic
    assert_eq!(cutout_rect(8, 8, f32::NAN, (3, 3)).width, 1);
    assert_eq!(cutout_rect(8, 8, 10.0, (3, 3)).width, 8);
    assert_eq!(cutout_rect(0, 0, 0.5, (0, 0)).width, 0);
}

#[test]
fn cutout_fills_exactly_the_clipped_rectangle() {
    let img = gradient(10, 6);
    let colour = Rgb([1, 2, 3]);
    let rect = Rect {
        x: 7,
        y: 4,
        width: 10,
        height: 10,
    };
    let out = cutout(&img, rect, colour);
    for (x, y, p) in out.enumerate_pixels() {
        if x >= 7 && y >= 4 {
            assert_eq!(p, &colour, "({x}, {y})");
        } else {
            assert_eq!(p, img.get_pixel(x, y), "({x}, {y})");
        }
    }
}

#[test]
fn random_cutout_paints_one_rectangle_of_one_random_colour() {
    let img = RgbImage::from_pixel(30, 20, Rgb([0, 0, 0]));
    let mut colours = std::collections::HashSet::new();
    for seed in 0..20 {
        let out = random_cutout(&img, 0.5, &mut rng(seed));
        let changed: Vec<(u32, u32, Rgb<u8>)> = out
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 != [0, 0, 0])
            .map(|(x, y, p)| (x, y, *p))
            .collect();
        assert!(!changed.is_empty(), "seed {seed}");
        let colour = changed[0].2;
        assert!(changed.iter().all(|c| c.2 == colour));
        colours.insert(colour.0);
        let (x0, x1) = (
            changed.iter().map(|c| c.0).min().unwrap(),
            changed.iter().map(|c| c.0).max().unwrap(),
        );
        let (y0, y1) = (
            changed.iter().map(|c| c.1).min().unwrap(),
            changed.iter().map(|c| c.1).max().unwrap(),
        );
        // a full rectangle, at most 16 x 11 (30 -> 15, half 7; 20 -> 10, half 5)
        assert_eq!(
            changed.len() as u32,
            (x1 - x0 + 1) * (y1 - y0 + 1),
            "seed {seed}"
        );
        assert!(x1 - x0 < 16 && y1 - y0 < 11, "seed {seed}");
    }
    assert!(colours.len() > 10, "colours should vary: {colours:?}");
}

#[test]
fn rand_augment_cutout_square_is_half_open_and_clipped() {
    assert_eq!(
        square_cutout_rect(32, 32, 20, (15, 16)),
        Rect {
            x: 5,
            y: 6,
            width: 20,
            height: 20
        }
    );
    assert_eq!(
        square_cutout_rect(32, 32, 7, (0, 31)),
        Rect {
            x: 0,
            y: 28,
            width: 3,
            height: 4
        }
    );
    assert_eq!(square_cutout_rect(32, 32, 1, (5, 5)).width, 0);
    // through apply_op: an 18-pixel square (magnitude 8) of the reference's colour
    let img = RgbImage::from_pixel(64, 64, Rgb([0, 0, 0]));
    let out = apply_op(&img, RandAugmentOp::Cutout, 8, &mut rng(3));
    let n = out
        .pixels()
        .filter(|p| **p == RAND_AUGMENT_CUTOUT_COLOUR)
        .count();
    assert!(n > 0 && n <= 18 * 18, "{n}");
}

// ---------------------------------------------------------------------------------------------
// RandAugment parameters and sampling

#[test]
fn op_params_follow_the_reference_ranges() {
    use RandAugmentOp::*;
    for m in 0..=MAX_MAGNITUDE {
        let mf = f64::from(m);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(op_param(Rotate, m), 30.0 * mf / 9.0), "rotate {m}");
        assert!(close(op_param(ShearX, m), 0.3 * mf / 9.0), "shear {m}");
        assert!(close(op_param(ShearY, m), op_param(ShearX, m)));
        assert!(close(op_param(TranslateX, m), 150.0 / 331.0 * mf / 9.0));
        assert!(close(op_param(TranslateY, m), op_param(TranslateX, m)));
        for op in [Color, Contrast, Sharpness, Brightness] {
            assert!(close(op_param(op, m), 0.1 * mf), "{op:?} {m}");
        }
        assert!(close(op_param(Solarize, m), 256.0 - 256.0 * mf / 9.0));
        for op in [Invert, AutoContrast, Equalize] {
            assert_eq!(op_param(op, m), 0.0);
        }
    }
    // the largest values: 30 degrees, 0.3 shear, 150/331 of the side, factors within 0.1..1.9
    assert_eq!(op_param(Rotate, 9), 30.0);
    assert_eq!(op_param(ShearX, 9), 0.3);
    assert_eq!(op_param(TranslateX, 9), 150.0 / 331.0);
    assert_eq!(op_param(Brightness, 9), 0.9);
    assert_eq!(op_param(Solarize, 9), 0.0);
    let bits: Vec<f64> = (0..=9).map(|m| op_param(Posterize, m)).collect();
    assert_eq!(bits, vec![8., 8., 7., 7., 6., 6., 5., 5., 4., 4.]);
    let cut: Vec<f64> = (0..=9).map(|m| op_param(Cutout, m)).collect();
    assert_eq!(cut, vec![0., 2., 4., 7., 9., 11., 13., 16., 18., 20.]);
    // beyond 9 is clamped
    assert_eq!(op_param(Rotate, 200), 30.0);
}

#[test]
fn choose_op_respects_the_magnitude_range_and_covers_every_op() {
    let mut r = rng(11);
    let mut seen_ops = std::collections::HashSet::new();
    let mut seen_m = std::collections::HashSet::new();
    for _ in 0..3000 {
        let (op, m) = choose_op((3, 5), &mut r);
        assert!((3..=5).contains(&m), "{m}");
        seen_ops.insert(op);
        seen_m.insert(m);
    }
    assert_eq!(seen_ops.len(), RandAugmentOp::ALL.len());
    assert_eq!(seen_m.len(), 3);
    for _ in 0..200 {
        let (_, m) = choose_op((7, 2), &mut r);
        assert!((2..=7).contains(&m), "reversed range: {m}");
        assert_eq!(choose_op((12, 40), &mut r).1, MAX_MAGNITUDE);
    }
}

#[test]
fn signed_ops_go_both_ways_and_rotate_only_counter_clockwise() {
    // translate by 150/331 * 16 = 7.25 pixels either way: the fill appears on either side
    let img = RgbImage::from_pixel(16, 16, Rgb([0, 0, 0]));
    let (mut left, mut right) = (0, 0);
    for seed in 0..40 {
        let out = apply_op(&img, RandAugmentOp::TranslateX, 9, &mut rng(seed));
        match (out.get_pixel(0, 0).0[0], out.get_pixel(15, 0).0[0]) {
            (0, F) => left += 1,
            (F, 0) => right += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(left > 5 && right > 5, "{left} {right}");
    // rotate has no random sign in the reference: always the same output
    let img = gradient(12, 9);
    let first = apply_op(&img, RandAugmentOp::Rotate, 9, &mut rng(0));
    assert_eq!(first, rotate(&img, 30.0, FILL));
    for seed in 1..10 {
        assert_eq!(
            apply_op(&img, RandAugmentOp::Rotate, 9, &mut rng(seed)),
            first
        );
    }
}

#[test]
fn every_op_keeps_the_size_at_every_magnitude() {
    for (w, h) in [(1, 1), (2, 3), (17, 9), (32, 32)] {
        let img = gradient(w, h);
        for op in RandAugmentOp::ALL {
            for m in 0..=MAX_MAGNITUDE {
                let out = apply_op(&img, op, m, &mut rng(u64::from(m)));
                assert_eq!(out.dimensions(), (w, h), "{op:?} {m}");
            }
        }
    }
    let empty = RgbImage::new(0, 0);
    for op in RandAugmentOp::ALL {
        assert_eq!(apply_op(&empty, op, 9, &mut rng(0)).dimensions(), (0, 0));
    }
    assert_eq!(
        augment(&empty, &AugmentConfig::default(), &mut rng(0)).dimensions(),
        (0, 0)
    );
}

// ---------------------------------------------------------------------------------------------
// The pipeline

#[test]
fn default_config_is_the_reference_recipe() {
    let cfg = AugmentConfig::default();
    assert!(cfg.cutout && cfg.rand_augment && !cfg.hflip);
    assert_eq!(cfg.cutout_factor, 0.5);
    assert_eq!(cfg.ops_per_image, 2);
    assert_eq!(cfg.magnitude, (1, 9));
    assert_eq!(cfg.op_probability, 0.5);
    let none = AugmentConfig::none();
    assert!(!none.cutout && !none.rand_augment && !none.hflip);
}

#[test]
fn same_seed_gives_the_same_image_and_different_seeds_differ() {
    let img = gradient(40, 30);
    let cfg = AugmentConfig::default();
    let outputs: Vec<RgbImage> = (0..8).map(|s| augment(&img, &cfg, &mut rng(s))).collect();
    for (s, out) in outputs.iter().enumerate() {
        assert_eq!(out, &augment(&img, &cfg, &mut rng(s as u64)), "seed {s}");
    }
    for i in 0..outputs.len() {
        for j in i + 1..outputs.len() {
            assert_ne!(outputs[i], outputs[j], "seeds {i} and {j}");
        }
    }
}

#[test]
fn none_is_the_identity_and_draws_nothing() {
    let img = gradient(23, 17);
    let mut r = rng(5);
    assert_eq!(augment(&img, &AugmentConfig::none(), &mut r), img);
    assert_eq!(r.random::<u64>(), rng(5).random::<u64>());
    // RandAugment alone with no ops, or probability 0, is also the identity
    let cfg = AugmentConfig {
        cutout: false,
        ops_per_image: 0,
        ..AugmentConfig::default()
    };
    assert_eq!(augment(&img, &cfg, &mut rng(1)), img);
    let cfg = AugmentConfig {
        op_probability: 0.0,
        ops_per_image: 5,
        ..cfg
    };
    assert_eq!(rand_augment(&img, &cfg, &mut rng(1)), img);
}

#[test]
fn default_config_changes_the_image_and_keeps_its_size() {
    for (w, h) in [(40, 30), (32, 32), (9, 31)] {
        let img = gradient(w, h);
        for seed in 0..10 {
            let out = augment(&img, &AugmentConfig::default(), &mut rng(seed));
            assert_eq!(out.dimensions(), (w, h));
            assert_ne!(out, img, "{w}x{h} seed {seed}");
        }
    }
}

#[test]
fn hflip_flips_about_half_the_time() {
    let img = gradient(8, 4);
    let flipped = image::imageops::flip_horizontal(&img);
    let cfg = AugmentConfig {
        hflip: true,
        ..AugmentConfig::none()
    };
    let mut n_flipped = 0;
    for seed in 0..100 {
        let out = augment(&img, &cfg, &mut rng(seed));
        if out == flipped {
            n_flipped += 1;
        } else {
            assert_eq!(out, img);
        }
    }
    assert!((25..=75).contains(&n_flipped), "{n_flipped}");
}

#[test]
fn augmenting_a_model_size_image_is_quick() {
    // the trainer augments one 448 x 448 image per sample; a debug build should manage a few
    // dozen a second even with the slowest ops (bicubic shears)
    let img = gradient(448, 448);
    let start = std::time::Instant::now();
    for op in [
        RandAugmentOp::ShearX,
        RandAugmentOp::Rotate,
        RandAugmentOp::Sharpness,
    ] {
        let out = apply_op(&img, op, 9, &mut rng(0));
        assert_eq!(out.dimensions(), (448, 448));
    }
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
