"""Crop quality and speed: a detector trained on synthetic true boxes, judged on held-out images.

1. Data: a synthetic set (``vreid.synth.generate``, preset demo with ``--ids`` identities) unless
   ``--data`` names one; the detector trains on ``real/`` train images and is judged on
   ``real/`` query + gallery images (other identities, same cameras).
2. Detector: ``train_detector`` for ``--train-minutes`` on the CPU (or ``--checkpoint`` reuses one).
3. Quality on the held-out images, against the true boxes of ``vehicle_boxes.csv``:
   IoU of the chosen box (selection rule, no margin), of the crop box (margin 0.05), the share of
   the true box inside the crop (what cropping must not cut), and the reference: the uncropped
   image's full box.
4. Speed: ``crop_folder`` (batched, vectorised selection) against a straightforward per-image loop
   (one image per detector call, the rule in Python over the detections, PIL crop and save), same
   detector and images, on the CPU; the two must choose identical crop boxes.

Usage: ``python benchmarks/crop_quality.py [--train-minutes 12] [--ids 40] [--data ROOT]
[--checkpoint FILE] [--json OUT]``. Prints a table; the machine may be shared, so times are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vreid.engine.detector import evaluate_boxes, read_true_boxes, train_detector
from vreid.inference.crop import crop_folder
from vreid.inference.select import box_iou
from vreid.models.detectors import load_detector


def _coverage(crop: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Share of each true box (N, 4) inside the matching crop box (N, 4)."""
    lt = torch.maximum(crop[:, :2], truth[:, :2])
    rb = torch.minimum(crop[:, 2:], truth[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    return inter / (truth[:, 2:] - truth[:, :2]).prod(dim=1)


def _reference_loop(loaded, paths, dst: Path, margin: float, min_score: float) -> list[list[int]]:
    """Straightforward cropping: one image per detector call, the selection rule in Python."""
    boxes = []
    dst.mkdir(parents=True, exist_ok=True)
    for path in paths:
        with Image.open(path) as im:
            image = im.convert("RGB")
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        with torch.inference_mode():
            out = loaded.model([tensor])[0]
        w, h = image.size
        best, best_score = None, -1.0
        for box, score, label in zip(
            out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist(), strict=True
        ):
            if label not in loaded.vehicle_labels or score < min_score:
                continue
            x1, x2 = min(max(box[0], 0), w), min(max(box[2], 0), w)
            y1, y2 = min(max(box[1], 0), h), min(max(box[3], 0), h)
            area = max(x2 - x1, 0) * max(y2 - y1, 0) / (w * h)
            dist = math.hypot((x1 + x2) / 2 - w / 2, (y1 + y2) / 2 - h / 2) / (math.hypot(w, h) / 2)
            s = score * math.sqrt(area) * (1 - min(dist, 1))
            if s > best_score:
                best, best_score = box, s
        if best is None:
            crop = [0, 0, w, h]
        else:
            bw, bh = best[2] - best[0], best[3] - best[1]
            crop = [
                min(max(math.floor(best[0] - margin * bw), 0), w - 1),
                min(max(math.floor(best[1] - margin * bh), 0), h - 1),
                min(math.ceil(best[2] + margin * bw), w),
                min(math.ceil(best[3] + margin * bh), h),
            ]
        image.crop(crop).save(dst / path.name, quality=95)
        boxes.append(crop)
    return boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="synthetic root (with real/); default: generate")
    parser.add_argument("--ids", type=int, default=40, help="identities of the generated set")
    parser.add_argument("--checkpoint", type=Path, help="reuse a train-detector checkpoint")
    parser.add_argument("--train-minutes", type=float, default=12.0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--speed-images", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    work = Path(tempfile.mkdtemp(prefix="crop_bench_"))
    data = args.data
    if data is None:
        from vreid.synth import generate

        data = generate(work / "synth", preset="demo", ids=args.ids, seed=1, progress=False)
    real = data / "real"
    checkpoint = args.checkpoint
    train_info = {}
    if checkpoint is None:
        checkpoint = work / "detector.pt"
        result = train_detector(
            real, checkpoint, epochs=args.epochs, batch_size=8, image_size=args.image_size,
            max_minutes=args.train_minutes, lr=args.lr, held_out_splits=(), device="cpu",
            progress=True,
        )  # fmt: skip
        train_info = {
            "train_images": len(read_true_boxes(real, ["train"])),
            "epochs": result.epochs,
            "train_seconds": round(result.seconds, 1),
            "losses": [round(x, 3) for x in result.history],
        }
    loaded = load_detector(None, checkpoint, device="cpu")
    held_out = read_true_boxes(real, ["query", "gallery"])
    truth = torch.tensor([b.box for b in held_out])

    iou_box = evaluate_boxes(loaded, held_out, margin=0.0, min_score=args.min_score)
    from vreid.engine.detector import load_image
    from vreid.inference.crop import detect_crop_boxes

    crops, found = [], []
    for start in range(0, len(held_out), 8):
        images = [
            load_image(b.path).mul_(255).round_().to(torch.uint8)
            for b in held_out[start : start + 8]
        ]
        sel = detect_crop_boxes(loaded, images, margin=args.margin, min_score=args.min_score)
        crops.append(sel.crop_boxes.float())
        found.append(sel.found)
    crop_boxes = torch.cat(crops)
    found_all = torch.cat(found)
    iou_crop = box_iou(crop_boxes, truth)
    coverage = _coverage(crop_boxes, truth)
    sizes = torch.tensor(
        [[Image.open(b.path).size[1], Image.open(b.path).size[0]] for b in held_out]
    )
    full = torch.stack(
        [
            torch.zeros(len(held_out)),
            torch.zeros(len(held_out)),
            sizes[:, 1].float(),
            sizes[:, 0].float(),
        ],
        1,
    )
    iou_full = box_iou(full, truth)

    # speed on the CPU: batched crop_folder vs the per-image loop
    speed_src = work / "speed_src"
    speed_src.mkdir()
    paths = []
    for b in held_out[: args.speed_images]:
        target = speed_src / f"{b.split}_{b.name}"
        target.write_bytes(b.path.read_bytes())
        paths.append(target)
    t0 = time.perf_counter()
    report = crop_folder(
        speed_src, work / "speed_dst", weights=checkpoint, margin=args.margin,
        min_score=args.min_score, device="cpu", batch_size=8, progress=False,
    )  # fmt: skip
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_boxes = _reference_loop(
        loaded, sorted(paths), work / "ref_dst", args.margin, args.min_score
    )
    reference_s = time.perf_counter() - t0
    ours = {}
    for line in (work / "speed_dst" / "crop_boxes.csv").read_text().splitlines()[1:]:
        f = line.split(",")
        ours[f[0]] = [int(v) for v in f[1:5]]
    same = sum(ours[p.name] == r for p, r in zip(sorted(paths), ref_boxes, strict=True))

    n = len(held_out)
    rows = [
        ("held-out images (query + gallery)", f"{n}"),
        (f"vehicle found (min_score {args.min_score:.2f})", f"{found_all.float().mean():.3f}"),
        ("mean IoU, chosen box vs true box", f"{iou_box.mean():.3f}"),
        ("  share of images with IoU ≥ 0.8", f"{(iou_box >= 0.8).float().mean():.3f}"),
        (f"mean IoU, crop box (margin {args.margin}) vs true box", f"{iou_crop.mean():.3f}"),
        ("mean share of the true box inside the crop", f"{coverage.mean():.3f}"),
        ("reference: mean IoU, whole image vs true box", f"{iou_full.mean():.3f}"),
        (
            f"crop_folder, {len(paths)} images, CPU (incl. model load)",
            f"{len(paths) / batched_s:.2f} img/s",
        ),
        ("  detector loop only", f"{report.images_per_second:.2f} img/s"),
        ("reference per-image loop, CPU", f"{len(paths) / reference_s:.2f} img/s"),
        ("identical crop boxes, batched vs reference", f"{same}/{len(paths)}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"detector {loaded.name} ({loaded.source}); torch threads {torch.get_num_threads()}")
    if train_info:
        print(
            f"trained {train_info['epochs']} epochs on {train_info['train_images']} images in {train_info['train_seconds']} s; losses {train_info['losses']}"
        )
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "train": train_info}, indent=2) + "\n")


if __name__ == "__main__":
    main()
