//! Tests of the charts: their sizes and content (measured in pixels),
//! degenerate input, and atomic PNG writing.

use std::collections::HashMap;

use super::{bar_chart, line_chart, save_png, Series, BAR_CHART_MAX_ROWS};
use image::{Rgb, RgbImage};

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        points,
    }
}

/// A colour, not a grey (text, axes, grid and background are greys).
fn coloured(p: &Rgb<u8>) -> bool {
    let (max, min) = (p.0.iter().max().unwrap(), p.0.iter().min().unwrap());
    max - min > 60
}

fn count_coloured(img: &RgbImage) -> usize {
    img.pixels().filter(|p| coloured(p)).count()
}

/// The most frequent non-grey colour among rows `y0..y1`.
fn dominant_colour(img: &RgbImage, y0: u32, y1: u32) -> Option<Rgb<u8>> {
    let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
    for y in y0..y1 {
        for x in 0..img.width() {
            let p = img.get_pixel(x, y);
            if coloured(p) {
                *counts.entry(p.0).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(c, n)| (n, c))
        .map(|(c, _)| Rgb(c))
}

/// Horizontal bands of consecutive rows holding coloured pixels: for each, the largest number of
/// coloured pixels in one of its rows (the bar's length in pixels).
fn bar_lengths(img: &RgbImage) -> Vec<usize> {
    let mut out = Vec::new();
    let mut current: Option<usize> = None;
    for y in 0..img.height() {
        let n = (0..img.width())
            .filter(|&x| coloured(img.get_pixel(x, y)))
            .count();
        match (n > 0, current) {
            (true, c) => current = Some(c.unwrap_or(0).max(n)),
            (false, Some(c)) => {
                out.push(c);
                current = None;
            }
            (false, None) => {}
        }
    }
    out.extend(current);
    out
}

/// A deterministic pseudo-random sequence in [0, 1).
fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// line_chart

fn training_curves() -> Vec<Series> {
    vec![
        series(
            "train loss",
            (0..30)
                .map(|e| (e as f64, 2.0 / (1.0 + e as f64)))
                .collect(),
        ),
        series(
            "val loss",
            (0..30)
                .map(|e| (e as f64, 2.2 / (1.0 + e as f64) + 0.1))
                .collect(),
        ),
    ]
}

#[test]
fn line_chart_has_its_size_and_draws_the_data() {
    let img = line_chart("Loss", "epoch", "loss", &training_curves(), None, None);
    assert_eq!(img.dimensions(), (960, 640));
    let empty = line_chart("Loss", "epoch", "loss", &[], None, None);
    assert_eq!(empty.dimensions(), (960, 640));
    // The data is drawn in colour, the rest in greys.
    assert_eq!(count_coloured(&empty), 0);
    assert!(count_coloured(&img) > 1000, "{}", count_coloured(&img));
    // Text, axes and grid are drawn even without data.
    assert!(empty.pixels().any(|p| *p != WHITE));
}

#[test]
fn line_chart_series_get_different_colours() {
    // One flat series near the top, one near the bottom.
    let s = vec![
        series("high", vec![(0.0, 0.9), (1.0, 0.9)]),
        series("low", vec![(0.0, 0.1), (1.0, 0.1)]),
    ];
    let img = line_chart("t", "x", "y", &s, Some((0.0, 1.0)), Some((0.0, 1.0)));
    let h = img.height();
    let top = dominant_colour(&img, 0, h / 2).expect("a coloured line at the top");
    let bottom = dominant_colour(&img, h / 2, h).expect("a coloured line at the bottom");
    assert_ne!(top, bottom);

    // Many series: still distinct colours (legend cut to what fits, no panic).
    let many: Vec<Series> = (0..40)
        .map(|i| {
            series(
                &format!("s{i}"),
                vec![(0.0, i as f64), (1.0, i as f64 + 0.5)],
            )
        })
        .collect();
    let img = line_chart("many", "x", "y", &many, None, None);
    let mut colours: Vec<[u8; 3]> = img.pixels().filter(|p| coloured(p)).map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() >= 30, "{} colours", colours.len());
}

#[test]
fn line_chart_ranges_come_from_the_data_unless_given() {
    let s = vec![series(
        "a",
        (0..=10).map(|i| (i as f64, i as f64)).collect(),
    )];
    let auto = line_chart("t", "x", "y", &s, None, None);
    // Only the part with x in [20, 30] would be visible: none of it.
    let outside = line_chart("t", "x", "y", &s, Some((20.0, 30.0)), None);
    assert!(count_coloured(&auto) > 500);
    // Only the legend swatch is coloured.
    assert!(
        count_coloured(&outside) < 200,
        "{}",
        count_coloured(&outside)
    );
}

#[test]
fn line_chart_is_deterministic() {
    let a = line_chart("Loss", "epoch", "loss", &training_curves(), None, None);
    let b = line_chart("Loss", "epoch", "loss", &training_curves(), None, None);
    assert!(a == b);
}

#[test]
fn line_chart_handles_degenerate_input() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    type Range = Option<(f64, f64)>;
    let cases: Vec<(Vec<Series>, Range, Range)> = vec![
        (vec![], None, None),
        (
            vec![series("tiny", vec![(0.0, 1e-310), (1e-310, 2e-310)])],
            None,
            None,
        ),
        (vec![series("", vec![])], None, None),
        (vec![series("one point", vec![(3.0, 4.0)])], None, None),
        (
            vec![series(
                "nan",
                vec![(nan, 1.0), (1.0, nan), (inf, 2.0), (2.0, -inf)],
            )],
            None,
            None,
        ),
        (
            vec![series("flat", vec![(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)])],
            None,
            None,
        ),
        (
            vec![series("same x", vec![(1.0, 0.0), (1.0, 1.0)])],
            Some((1.0, 1.0)),
            Some((0.5, 0.5)),
        ),
        (
            vec![series("reversed", vec![(0.0, 0.0), (1.0, 1.0)])],
            Some((1.0, 0.0)),
            Some((nan, inf)),
        ),
        (
            vec![series(
                "huge",
                vec![(-1e308, 1e308), (1e308, -1e308), (0.0, 1e-300)],
            )],
            None,
            None,
        ),
        (
            vec![series(
                &"very long name ".repeat(20),
                vec![(0.0, 1.0), (1.0, 0.0)],
            )],
            None,
            None,
        ),
        (
            vec![series("chat é 猫 \n\t", vec![(0.0, 1.0), (1.0, 0.0)])],
            None,
            None,
        ),
    ];
    for (s, xr, yr) in cases {
        let img = line_chart(&"a long title ".repeat(30), "", "", &s, xr, yr);
        assert_eq!(img.dimensions(), (960, 640));
    }
    // A single point is drawn as a marker; a NaN between two points leaves both visible.
    let one = line_chart("t", "x", "y", &[series("p", vec![(1.0, 1.0)])], None, None);
    let legend_only = line_chart("t", "x", "y", &[series("p", vec![])], None, None);
    assert!(count_coloured(&one) > count_coloured(&legend_only));
    // A NaN point is skipped and breaks the line: less is drawn than without it, more than the
    // two pieces' markers alone.
    let line = |pts: Vec<(f64, f64)>| {
        count_coloured(&line_chart("t", "x", "y", &[series("g", pts)], None, None))
    };
    let full = line(vec![(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]);
    let gap = line(vec![
        (0.0, 0.0),
        (1.0, 1.0),
        (nan, nan),
        (2.0, 2.0),
        (3.0, 3.0),
    ]);
    let dots = line(
        vec![(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
            .into_iter()
            .flat_map(|p| [p, (nan, nan)])
            .collect(),
    );
    assert!(dots < gap && gap < full, "{dots} {gap} {full}");
}

// ---------------------------------------------------------------------------------------------
// bar_chart

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class {i}")).collect()
}

#[test]
fn bar_chart_longer_bar_for_larger_value() {
    let img = bar_chart("AP", "AP (%)", &names(3), &[10.0, 90.0, 50.0], (0.0, 100.0));
    assert_eq!(img.width(), 1000);
    let bars = bar_lengths(&img);
    assert_eq!(bars.len(), 3, "{bars:?}");
    assert!(bars[0] < bars[2] && bars[2] < bars[1], "{bars:?}");
    // Lengths are proportional to the values (within a pixel or two).
    let ratio = bars[1] as f64 / bars[0] as f64;
    assert!((ratio - 9.0).abs() < 0.3, "{bars:?}");
}

#[test]
fn bar_chart_height_grows_with_the_bars_and_is_capped() {
    let h = |n: usize| {
        let values: Vec<f64> = (0..n).map(|i| i as f64 % 100.0).collect();
        bar_chart("AP", "AP (%)", &names(n), &values, (0.0, 100.0)).height()
    };
    let (h10, h80, h100) = (h(10), h(80), h(100));
    assert!(h10 < h80 && h80 < h100);
    // The same height per extra bar.
    assert_eq!((h80 - h10) / 70, (h100 - h80) / 20);
    assert!(h100 < 2400, "{h100}");
    // Beyond the cap: the cap plus one note line and one gap row.
    let h1000 = h(1000);
    assert!(h1000 > h100 && h1000 < h100 + 100, "{h1000} vs {h100}");
    assert_eq!(h1000, h(5000));
}

#[test]
fn bar_chart_beyond_the_cap_shows_highest_and_lowest() {
    let n = 1000;
    // Ascending values: the lowest block comes first (given order kept), then the highest.
    let values: Vec<f64> = (0..n).map(|i| (i + 1) as f64 / 10.0).collect();
    let img = bar_chart("AP", "AP (%)", &names(n), &values, (0.0, 100.0));
    let bars = bar_lengths(&img);
    assert_eq!(bars.len(), BAR_CHART_MAX_ROWS, "{bars:?}");
    assert!(bars[..50].iter().all(|&b| b < 50), "{bars:?}");
    assert!(bars[50..].iter().all(|&b| b > 600), "{bars:?}");

    // Shuffled values: the shown bars are the 50 longest and 50 shortest.
    let mut rnd = lcg(3);
    let values: Vec<f64> = (0..n).map(|_| 1.0 + rnd() * 98.0).collect();
    let img = bar_chart("AP", "AP (%)", &names(n), &values, (0.0, 100.0));
    let mut shown = bar_lengths(&img);
    assert_eq!(shown.len(), BAR_CHART_MAX_ROWS);
    shown.sort_unstable();
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let rel = |i: usize| shown[i] as f64 / shown[99] as f64;
    // The 50th shortest shown is the 50th lowest value, the 51st the 50th highest.
    assert!((rel(49) - sorted[49] / sorted[n - 1]).abs() < 0.01);
    assert!((rel(50) - sorted[n - 50] / sorted[n - 1]).abs() < 0.01);
}

#[test]
fn bar_chart_labels_are_cut_and_made_ascii() {
    let values = [40.0, 60.0];
    let render = |a: &str, b: &str| {
        bar_chart(
            "AP",
            "AP (%)",
            &[a.to_string(), b.to_string()],
            &values,
            (0.0, 100.0),
        )
    };
    // A long name is cut to 27 characters and "...".
    let long = "x".repeat(200);
    let cut = format!("{}...", "x".repeat(27));
    assert!(render(&long, "b") == render(&cut, "b"));
    assert!(render(&long, "b") != render(&"x".repeat(30), "b"));
    // Characters outside printable ASCII are drawn as '?'.
    assert!(render("chat é", "猫") == render("chat ?", "?"));
    // An empty name shows the index.
    assert!(render("", "b") == render("#0", "b"));
    assert!(render("", "b") != render("#1", "b"));
}

#[test]
fn bar_chart_handles_degenerate_input() {
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let empty = bar_chart("", "", &[], &[], (0.0, 100.0));
    assert_eq!(empty.width(), 1000);
    assert_eq!(count_coloured(&empty), 0);
    for (values, range) in [
        (vec![nan, inf, -inf, 50.0], (0.0, 100.0)),
        (vec![5.0, 5.0, 5.0], (5.0, 5.0)),
        (vec![1.0, 2.0], (nan, nan)),
        (vec![1.0, 2.0], (100.0, 0.0)),
        (vec![-50.0, 50.0, 150.0], (0.0, 100.0)),
        (vec![1e308, -1e308], (-inf, inf)),
        (vec![1e-310, 2e-310], (0.0, 3e-310)),
    ] {
        // Fewer names than values, one of them empty.
        let img = bar_chart(&"t".repeat(500), "v", &[String::new()], &values, range);
        assert_eq!(img.width(), 1000);
        assert!(count_coloured(&img) > 0, "{values:?} {range:?}");
    }
    // Non-finite values get no bar.
    let img = bar_chart("t", "v", &names(3), &[nan, 50.0, inf], (0.0, 100.0));
    assert_eq!(bar_lengths(&img).len(), 1);
}

#[test]
fn bar_chart_is_deterministic() {
    let values: Vec<f64> = (0..80).map(|i| (i * 37 % 100) as f64).collect();
    let a = bar_chart("AP", "AP (%)", &names(80), &values, (0.0, 100.0));
    let b = bar_chart("AP", "AP (%)", &names(80), &values, (0.0, 100.0));
    assert!(a == b);
}

// ---------------------------------------------------------------------------------------------
// save_png

#[test]
fn save_png_writes_a_readable_png_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/sub dir/chart.png");
    let img = line_chart("Loss", "epoch", "loss", &training_curves(), None, None);
    save_png(&img, &path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert!(back == img);
    // Overwriting replaces the file; no temporary file is left.
    let bars = bar_chart("AP", "AP (%)", &names(3), &[1.0, 2.0, 3.0], (0.0, 3.0));
    save_png(&bars, &path).unwrap();
    assert!(image::open(&path).unwrap().to_rgb8() == bars);
    let files: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["chart.png".to_string()]);
    // The bytes are a PNG.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn save_png_reports_errors_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let img = RgbImage::from_pixel(4, 4, WHITE);
    // A directory where the file should be: the rename fails, the temporary file is removed.
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    assert!(save_png(&img, &target).is_err());
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, vec!["taken".to_string()]);
    // A parent that is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(save_png(&img, &file.join("chart.png")).is_err());
    // No file name.
    assert!(save_png(&img, std::path::Path::new("/")).is_err());
}
