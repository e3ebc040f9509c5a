"""Re-id mAP with vs without cropping: the same model and schedule on a synthetic set and its crops.

1. Crop ``DATA/real`` with a detector checkpoint (``vreid train-detector``, see
   ``benchmarks/crop_quality.py``) into a temporary folder.
2. Train the same re-id model with the same seed and schedule on the original and on the cropped
   set (``vreid.training.train``), evaluate on each set's own query/gallery (AIC protocol).
3. Print mAP and rank-1 side by side.

Usage: ``python benchmarks/crop_reid.py --data SYNTH_ROOT --weights detector.pt [--epochs 6]
[--set model.backbone=resnet18 …]``. Defaults are a CPU-sized GLAMOR (resnet18 trunk, 64×128).
The machine may be shared: the numbers are what one short run gave, not a converged comparison.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vreid.config import load_config
from vreid.preprocess import crop_dataset

SMALL = (
    "model.name=glamor",
    "model.backbone=resnet18",
    "model.image_size=[64,128]",
    "train.p=8",
    "train.k=4",
    "train.num_workers=0",
    "train.device=cpu",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic root (with real/)")
    parser.add_argument("--weights", type=Path, required=True, help="detector checkpoint")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-iters", type=int, default=None, help="iterations per epoch cap")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from vreid.training.loop import train

    work = Path(tempfile.mkdtemp(prefix="crop_reid_"))
    t0 = time.perf_counter()
    report = crop_dataset(
        args.data / "real", work / "real_cropped", weights=args.weights, device="cpu",
        progress=False,
    )  # fmt: skip
    crop_s = time.perf_counter() - t0
    schedule = [f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}"]
    if args.max_iters:
        schedule.append(f"train.max_iters_per_epoch={args.max_iters}")
    rows = []
    for label, root in (("uncropped", args.data / "real"), ("cropped", work / "real_cropped")):
        config = load_config(None, [*SMALL, *schedule, *args.overrides, f"data.root={root}"])
        t0 = time.perf_counter()
        result = train(config, work / f"run_{label}", progress=False)
        seconds = time.perf_counter() - t0
        last = next(h for h in reversed(result.history) if "mAP" in h)
        rows.append((label, last["mAP"], last["rank1"], seconds))
    print(
        f"cropped {report.cropped}/{report.images} images ({len(report.uncropped)} kept whole) "
        f"in {crop_s:.0f} s with {report.detector} ({report.weights})"
    )
    print(f"{'images':<10} {'mAP':>7} {'rank-1':>7} {'train s':>8}")
    for label, m, r1, s in rows:
        print(f"{label:<10} {m:>7.3f} {r1:>7.3f} {s:>8.0f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "crop": report.to_dict()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
