"""Time the image integrity check (``vreid data check``) on generated JPEGs.

Compares ``check_images`` (verify + reduced-scale decode, threads) with the straightforward
reference: one thread, ``Image.open(p).verify()`` then a full ``Image.open(p).load()``.
Usage: ``python benchmarks/bench_data_check.py [--images 2000] [--size 256]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vreid.data import ImageRecord
from vreid.data.inspect import check_images


def reference(paths: list[Path]) -> int:
    bad = 0
    for p in paths:
        try:
            with Image.open(p) as img:
                img.verify()
            with Image.open(p) as img:
                img.load()
        except Exception:
            bad += 1
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        paths = []
        for i in range(args.images):
            p = folder / f"{i:06d}.jpg"
            Image.fromarray(np.roll(base, i, axis=1)).save(p, quality=90)
            paths.append(p)
        paths[7].write_bytes(paths[7].read_bytes()[:-500])  # one truncated file
        records = [ImageRecord(p, p.name, "train") for p in paths]
        rows = []
        for name, fn in (
            (
                "check_images, 1 thread",
                lambda: len(check_images(records, workers=1, progress=False)),
            ),
            (
                "check_images, 2 threads",
                lambda: len(check_images(records, workers=2, progress=False)),
            ),
            ("reference (verify + load)", lambda: reference(paths)),
        ):
            t = time.perf_counter()
            bad = fn()
            rows.append((name, bad, time.perf_counter() - t))
        print(f"{args.images} JPEGs of {args.size}x{args.size}")
        print(f"{'checker':<28} {'bad':>4} {'seconds':>8} {'images/s':>9}")
        for name, bad, sec in rows:
            print(f"{name:<28} {bad:>4} {sec:>8.2f} {args.images / sec:>9.0f}")


if __name__ == "__main__":
    main()
