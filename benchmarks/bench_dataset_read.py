"""Time ``load_dataset`` on an AIC20-sized tree (36,935 train / 1,052 query / 18,290 gallery names).

Images are empty files: reading only lists and stats them. The reference is the straightforward
reader making the same records: ``xml.etree`` on the decoded label file, one ``os.path.exists``
per image, no validation (duplicates, name escapes, name/label agreement, ranges).
Usage: ``python benchmarks/bench_dataset_read.py [--scale 1.0] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from vreid.data import ImageRecord, load_dataset, write_aic

SIZES = {"train": 36935, "query": 1052, "gallery": 18290}
DIRS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}


def build(root: Path, scale: float) -> None:
    splits = {}
    for split, n in SIZES.items():
        n = max(1, int(n * scale))
        folder = root / DIRS[split]
        folder.mkdir(parents=True)
        names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
        for name in names:
            (folder / name).touch()
        splits[split] = [
            ImageRecord(folder / nm, nm, split, i % 333, i % 36, i // 40)
            for i, nm in enumerate(names)
        ]
    write_aic(root, splits)


def reference(root: Path) -> int:
    """Plain reader making the same records: ElementTree, one exists() per image, no checks."""
    count = 0
    for split, stem in (("train", "train"), ("query", "query"), ("gallery", "test")):
        text = (root / f"{stem}_label.xml").read_bytes().decode("utf-8")
        text = text.replace('encoding="gb2312"', 'encoding="utf-8"', 1)
        items = list(ET.fromstring(text.encode()).iter("Item"))
        names = [item.get("imageName") for item in items]
        track_of = {}
        track_file = root / f"{stem}_track_id.txt"
        if track_file.exists():
            for t, line in enumerate(track_file.read_text().splitlines()):
                for tok in line.split():
                    track_of[names[int(tok) - 1]] = t
        records = []
        for item, name in zip(items, names, strict=True):
            path = root / DIRS[split] / name
            if not os.path.exists(path):
                raise FileNotFoundError(name)
            vid, cam = item.get("vehicleID"), item.get("cameraID")
            records.append(
                ImageRecord(
                    path,
                    name,
                    split,
                    int(vid) if vid is not None else None,
                    int(cam[1:]) if cam is not None else None,
                    track_of.get(name),
                )
            )
        count += len(records)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build(root, args.scale)
        print(
            f"built {sum(max(1, int(n * args.scale)) for n in SIZES.values())} files "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        rows = []
        for name, fn in (
            ("vreid load_dataset", lambda: sum(len(v) for v in load_dataset(root).splits.values())),
            ("reference (etree + exists)", lambda: reference(root)),
        ):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                n = fn()
                times.append(time.perf_counter() - t)
            rows.append((name, n, min(times)))
        print(f"{'reader':<28} {'images':>8} {'best of ' + str(args.repeats):>12}")
        for name, n, best in rows:
            print(f"{name:<28} {n:>8} {best:>10.3f} s")


if __name__ == "__main__":
    main()
