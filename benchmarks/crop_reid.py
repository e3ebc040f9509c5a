"""Re-id mAP with vs without cropping: the whole pipeline twice, same preset, seed and schedule.

1. Data: the demo synthetic set (``vreid.synth.generate``, preset ``demo``, seed 0: the data
   ``make demo`` uses) unless ``--data`` names one.
2. Detector: ``--weights FILE`` (a ``vreid train-detector`` checkpoint or torchvision COCO file),
   else one trained here on the true boxes of the set's *train* images only (the query and gallery
   images it later crops are never seen), ``--detector-epochs`` passes.
3. ``vreid.workflows.pipeline.run_pipeline`` with the preset (default ``demo``: GLAMOR + Counter GLAMOR,
   synthetic pre-training, fine-tuning, attributes, re-ranking, track averaging) on the set as it
   is, then with ``crop.enabled=true`` (every image of the real, simulation and attribute sets
   cropped before any training). Everything else is identical.
4. Prints every Table-2 row (AIC mAP@100 and rank-1, %) side by side, and what cropping did.

Re-running with the same ``--out`` reuses the finished pipeline stages.

Usage: ``python benchmarks/crop_reid.py [--data ROOT] [--weights DET.pt] [--preset demo]
[--out DIR] [--set key=value …] [--json OUT]``. About 15-20 minutes on 2 idle CPU cores with the
defaults. Single runs on a small synthetic set: vary ``--set train.seed=N`` to see the spread
(docs/readme/crop.md: single rows moved by up to 7 points between two seeds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vreid.core.config import load_config, resolve_config
from vreid.workflows.pipeline import run_pipeline


def _train_detector(real: Path, out: Path, epochs: int) -> Path:
    from vreid.engine.detector import train_detector

    t0 = time.perf_counter()
    result = train_detector(
        real, out, epochs=epochs, batch_size=8, lr=1.5e-3, image_size=128, device="cpu",
        train_splits=("train",), held_out_splits=("query", "gallery"), progress=True,
    )  # fmt: skip
    print(
        f"detector: {result.epochs} epochs on the train images in {time.perf_counter() - t0:.0f} s"
        f"; held-out mean IoU {result.held_out_iou}"
    )
    return out


def _draw_examples(src: Path, cropped: Path, out: Path, count: int = 8) -> Path:
    """Query images with the true box (red) and the crop box (green), each beside its crop."""
    import csv

    from PIL import Image, ImageDraw

    from vreid.core.artefacts import atomic_path

    with (src / "vehicle_boxes.csv").open() as fh:
        truth = {r["image_name"]: r for r in csv.DictReader(fh) if r["split"] == "query"}
    with (cropped / "crop_boxes.csv").open() as fh:
        crops = {r["image"]: r for r in csv.DictReader(fh) if r["image"].startswith("image_query/")}
    names = sorted(crops)[:: max(1, len(crops) // count)][:count]
    cell = 160
    sheet = Image.new("RGB", (2 * cell * 4, cell * ((len(names) + 3) // 4)), "white")
    for i, rel in enumerate(names):
        with Image.open(src / rel) as im:
            original = im.convert("RGB")
        t, c = truth[Path(rel).name], crops[rel]
        draw = ImageDraw.Draw(original)
        draw.rectangle([float(t[k]) for k in ("x1", "y1", "x2", "y2")], outline="red", width=3)
        draw.rectangle([int(c[k]) - 0.5 for k in ("x1", "y1", "x2", "y2")], outline="lime", width=3)
        with Image.open(cropped / rel) as im:
            crop = im.convert("RGB")
        x, y = (i % 4) * 2 * cell, (i // 4) * cell
        for j, picture in enumerate((original, crop)):
            picture.thumbnail((cell - 4, cell - 4))
            sheet.paste(picture, (x + j * cell + 2, y + 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="synthetic root (real/, simulation/)")
    parser.add_argument("--weights", type=Path, help="detector weights; default: train one")
    parser.add_argument("--detector-epochs", type=int, default=5)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--out", type=Path, help="folder for the two runs (default: temporary)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--figure", type=Path, help="write example query crops (PNG) here")
    args = parser.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="crop_reid_"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        from vreid.synth import generate

        data = work / "synth"
        if not (data / "synth.json").is_file():
            generate(data, preset="demo", seed=0, progress=False)
    weights = args.weights or work / "detector.pt"
    if not weights.is_file():
        _train_detector(data / "real", weights, args.detector_epochs)

    base = [f"data.root={data / 'real'}", f"data.sim_root={data / 'simulation'}", *args.overrides]
    runs = {
        "uncropped": base,
        "cropped": [*base, "crop.enabled=true", f"crop.weights={weights}", "runtime.device=cpu"],
    }
    metrics, seconds, cached = {}, {}, {}
    for label, overrides in runs.items():
        config = load_config(resolve_config(args.preset), overrides)
        t0 = time.perf_counter()
        result = run_pipeline(config, work / f"run_{label}", progress=False)
        seconds[label] = time.perf_counter() - t0
        cached[label] = not result["ran"]
        if result["metrics"] is None:
            raise SystemExit(f"{label}: the run wrote no metrics (no ground truth?)")
        metrics[label] = result["metrics"]

    run_dir = work / "run_cropped"
    roots = json.loads((run_dir / "data_roots.json").read_text())
    crop = json.loads((Path(roots["real"]) / "crop_report.json").read_text())
    print(
        f"cropping ({crop['detector']}, {crop['weights']}): {crop['cropped']}/{crop['images']} real "
        f"images cropped, {crop['uncropped']} kept whole (no vehicle found), "
        f"{crop['images_per_second']:.0f} images/s"
    )
    rows = list(metrics["uncropped"])
    width = max(len(r) for r in rows)
    print(f"{'AIC mAP@100 / rank-1, %':<{width}}  {'uncropped':>15}  {'cropped':>15}  {'Δ mAP':>6}")
    table = []
    for row in rows:
        a, b = metrics["uncropped"][row], metrics["cropped"][row]
        cells = [f"{100 * m['mAP']:6.1f} / {100 * m['cmc'][0]:5.1f}" for m in (a, b)]
        delta = 100 * (b["mAP"] - a["mAP"])
        print(f"{row:<{width}}  {cells[0]:>15}  {cells[1]:>15}  {delta:>+6.1f}")
        table.append({"row": row, "uncropped": a, "cropped": b})
    times = ", ".join(
        f"{label} " + ("cached (an earlier run's stages)" if cached[label] else f"{s:.0f} s")
        for label, s in seconds.items()
    )
    print(f"pipeline wall time (cropping included): {times}")
    if args.figure:
        print(f"examples: {_draw_examples(data / 'real', Path(roots['real']), args.figure)}")
    if args.json:
        args.json.write_text(
            json.dumps({"table": table, "seconds": seconds, "crop": crop}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
