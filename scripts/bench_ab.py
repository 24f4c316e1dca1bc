#!/usr/bin/env python3
"""A/B of two asl-cli binaries with `asl-cli bench`, in alternating rounds in one run (this
machine is noisy: compare within a run, never across runs). Prints images/s per round, the
per-round ratio B/A and its median for each shape.

Usage: python3 scripts/bench_ab.py A_BIN B_BIN [--rounds 4] [--threads 2] [--runs 5]
"""
import argparse
import json
import statistics
import subprocess

SHAPES = [
    ("tresnet_m@224 b1", ["--arch", "tresnet_m", "--input-size", "224", "--batch-size", "1"]),
    ("tresnet_m@224 b8", ["--arch", "tresnet_m", "--input-size", "224", "--batch-size", "8"]),
    ("train step tresnet_m@224 b8",
     ["--arch", "tresnet_m", "--input-size", "224", "--batch-size", "8", "--train"]),
]


def images_per_s(exe, shape, threads, runs):
    out = subprocess.run([exe, "bench", *shape, "--threads", str(threads), "--runs", str(runs),
                          "--format", "json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["images_per_s"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    ratios = {name: [] for name, _ in SHAPES}
    for r in range(args.rounds):
        for name, shape in SHAPES:
            a = images_per_s(args.a, shape, args.threads, args.runs)
            b = images_per_s(args.b, shape, args.threads, args.runs)
            ratios[name].append(b / a)
            print(f"round {r + 1} {name}: A {a:.2f} B {b:.2f} img/s, B/A {b / a:.2f}", flush=True)
    for name, rs in ratios.items():
        print(f"{name}: median B/A {statistics.median(rs):.2f} "
              f"(rounds: {', '.join(f'{x:.2f}' for x in rs)})")


if __name__ == "__main__":
    main()
