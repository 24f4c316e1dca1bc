#!/usr/bin/env python3
"""Generates the embedded demo dataset of `asl-cli demo` (see README.md next to this file).

Multi-label mosaics of real handwritten digits: each 32x32 RGB image is a 2x2 grid of 16x16
cells; 1 to 3 cells hold a handwritten digit from the UCI "Optical Recognition of Handwritten
Digits" test set (the 1797 8x8 images bundled with scikit-learn as `load_digits`), the others
stay blank. The labels of an image are the digit classes present (10 classes "0".."9"), so an
image has 1 to 3 positives out of 10: strong positive/negative imbalance.

The 1797 source digits are split first (per class, stratified) into disjoint pools for train,
val and test, so no handwritten digit of val/test is seen in training.

Outputs (in the folder of this script):
  {split}.png         the mosaics of a split tiled row-major in a sheet COLUMNS mosaics wide
                      (as many as the split has when fewer), blank cells after the last
  {split}_labels.csv  `image,labels` header, one row per mosaic in sheet order:
                      `00000.png,3 7` (labels space-separated, in class order)
  manifest.json       seed, library versions, per-split counts, per-class positives,
                      sha256 of the raw RGB bytes of each split (checked by the Rust tests)

Deterministic: run `python gen_demo_data.py` with the versions recorded in manifest.json to
reproduce the files byte for byte.
"""

import hashlib
import json
import os
import sys

import numpy as np
import PIL
import sklearn
from PIL import Image
from sklearn.datasets import load_digits

SEED = 20240917
SIDE = 32  # mosaic side (TResNet: a multiple of 4, at least 20)
CELL = 16  # 2x2 grid of 16x16 cells
COLUMNS = 50  # mosaics per sheet row (fewer for a split of under 50 mosaics)
LEVELS = 64  # intensity levels per channel
CLASSES = [str(d) for d in range(10)]
# (split, mosaics, fraction of the source digits of each class)
SPLITS = [("train", 2000, 0.78), ("val", 400, 0.19), ("test", 8, 0.03)]
# Probability of 1, 2 and 3 digits in a mosaic.
DIGITS_PER_IMAGE = [0.5, 0.3, 0.2]

HERE = os.path.dirname(os.path.abspath(__file__))


def split_sources(target, rng):
    """Per class, shuffles the source indices and cuts them into the SPLITS fractions."""
    pools = {name: [] for name, _, _ in SPLITS}
    for c in range(10):
        idx = np.flatnonzero(target == c)
        rng.shuffle(idx)
        n = len(idx)
        n_train = int(round(n * SPLITS[0][2]))
        n_val = int(round(n * SPLITS[1][2]))
        pools["train"].extend(idx[:n_train].tolist())
        pools["val"].extend(idx[n_train : n_train + n_val].tolist())
        pools["test"].extend(idx[n_train + n_val :].tolist())
    return {k: np.array(sorted(v)) for k, v in pools.items()}


def random_colour(rng, lo, hi):
    """An RGB colour: a random hue with saturation up to 0.6, value in [lo, hi]."""
    value = rng.uniform(lo, hi)
    sat = rng.uniform(0.0, 0.6)
    hue = rng.uniform(0.0, 1.0)
    rgb = np.array([hue + 0.0, hue + 1 / 3, hue + 2 / 3]) % 1.0
    rgb = np.abs(rgb * 6.0 - 3.0) - 1.0  # the HSV hue ramp
    rgb = np.clip(rgb, 0.0, 1.0)
    return value * (1.0 - sat + sat * rgb)


def render_digit(image8, size):
    """An 8x8 digit (0..16) resized to size x size with bilinear filtering, as alpha in [0, 1]."""
    grey = Image.fromarray((image8 * (255.0 / 16.0)).round().astype(np.uint8), mode="L")
    return np.asarray(grey.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255.0


def make_mosaic(images, pool, rng, used):
    """One mosaic from digits of `pool` (without repeating a digit within the mosaic)."""
    k = rng.choice([1, 2, 3], p=DIGITS_PER_IMAGE)
    cells = rng.choice(4, size=k, replace=False)
    sources = rng.choice(pool, size=k, replace=False)
    background = random_colour(rng, 0.0, 0.18)
    canvas = np.ones((SIDE, SIDE, 3)) * background
    for cell, src in zip(cells, sources):
        used.append(int(src))
        size = int(rng.integers(11, CELL + 1))  # 11..16 px
        dy, dx = rng.integers(0, CELL - size + 1, size=2)
        y = (cell // 2) * CELL + dy
        x = (cell % 2) * CELL + dx
        alpha = render_digit(images[src], size)[:, :, None]
        alpha = alpha * rng.uniform(0.7, 1.0)  # intensity jitter
        ink = random_colour(rng, 0.75, 1.0)
        region = canvas[y : y + size, x : x + size]
        canvas[y : y + size, x : x + size] = region * (1.0 - alpha) + ink * alpha
    # 64 levels per channel (the source digits have 17): the sheets compress about 30% better.
    levels = np.clip(canvas, 0.0, 1.0) * (LEVELS - 1)
    return (levels.round() * (255.0 / (LEVELS - 1))).round().astype(np.uint8), sources


def main():
    rng = np.random.default_rng(SEED)
    digits = load_digits()
    images, target = digits.images, digits.target
    pools = split_sources(target, rng)
    manifest = {
        "generator": "gen_demo_data.py",
        "seed": SEED,
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "Pillow": PIL.__version__,
        },
        "source": "scikit-learn load_digits (UCI Optical Recognition of Handwritten Digits, "
        "test set optdigits.tes, 1797 images)",
        "image_side": SIDE,
        "cell": CELL,
        "levels": LEVELS,
        "classes": CLASSES,
        "splits": {},
    }
    for name, count, _ in SPLITS:
        pool = pools[name]
        columns = min(COLUMNS, count)
        sheet_rows = (count + columns - 1) // columns
        sheet = np.zeros((sheet_rows * SIDE, columns * SIDE, 3), dtype=np.uint8)
        raw = hashlib.sha256()
        lines = ["image,labels"]
        positives = np.zeros(len(CLASSES), dtype=int)
        per_image = {1: 0, 2: 0, 3: 0}
        used = []
        for i in range(count):
            mosaic, sources = make_mosaic(images, pool, rng, used)
            r, c = divmod(i, columns)
            sheet[r * SIDE : (r + 1) * SIDE, c * SIDE : (c + 1) * SIDE] = mosaic
            raw.update(mosaic.tobytes())
            present = sorted(set(int(target[s]) for s in sources))
            positives[present] += 1
            per_image[len(present)] += 1
            lines.append(f"{i:05d}.png," + " ".join(CLASSES[p] for p in present))
        Image.fromarray(sheet, mode="RGB").save(
            os.path.join(HERE, f"{name}.png"), optimize=True, compress_level=9
        )
        with open(os.path.join(HERE, f"{name}_labels.csv"), "w", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
        manifest["splits"][name] = {
            "images": count,
            "columns": columns,
            "source_digits": int(len(pool)),
            "source_digits_used": len(set(used)),
            "positives_per_class": positives.tolist(),
            "images_with_k_positives": {str(k): v for k, v in per_image.items()},
            "positive_rate": round(float(positives.sum()) / (count * len(CLASSES)), 4),
            "rgb_sha256": raw.hexdigest(),
        }
    # Disjoint source pools (also asserted here, not only claimed).
    assert not set(pools["train"]) & set(pools["val"])
    assert not set(pools["train"]) & set(pools["test"])
    assert not set(pools["val"]) & set(pools["test"])
    with open(os.path.join(HERE, "manifest.json"), "w", newline="\n") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps(manifest["splits"], indent=2))


if __name__ == "__main__":
    main()
