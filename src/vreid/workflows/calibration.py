"""Calibration of a generated dataset: how far a colour histogram gets, and a contact sheet.

The colour-histogram baseline is the floor every learned model must beat: if it scored high, the
data would be solvable by colour alone. ``colour_histogram_features`` is reused by the pipeline as
that floor.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vreid.core.artefacts import atomic_path, write_json_atomic
from vreid.core.errors import DatasetError
from vreid.data import load_dataset
from vreid.data.images import SOURCE_SIZE, open_image
from vreid.data.records import ImageRecord
from vreid.retrieval.metrics import evaluate

HIST_BINS = (8, 4, 4)
"""Joint HSV histogram bins (hue, saturation, value)."""


def _path_of(item: str | os.PathLike[str] | ImageRecord) -> Path:
    return item.path if isinstance(item, ImageRecord) else Path(item)


def colour_histogram_features(
    images: Sequence[str | os.PathLike[str] | ImageRecord],
    *,
    bins: tuple[int, int, int] = HIST_BINS,
    size: int = 64,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Joint HSV colour histograms of images (paths or records): (N, prod(bins)) float32.

    Each image (or its ``boxes[i]`` = (x1, y1, x2, y2) region, pixels) is resized to
    ``size``×``size``; the histogram is L1-normalised and square-rooted (Hellinger), so the
    Euclidean distance between two features compares the distributions.
    """
    n = len(images)
    pixels = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, item in enumerate(images):
        path = _path_of(item)
        im = open_image(path, target=None if boxes is not None else (size, size))
        box = None
        if boxes is not None:  # boxes are in the file's pixels
            scale = im.width / im.info[SOURCE_SIZE][0]
            box = tuple(float(x) * scale for x in boxes[i])
        try:
            small = im.resize((size, size), Image.BILINEAR, box=box)
        except ValueError as err:
            raise DatasetError(
                f"{path}: box {tuple(boxes[i])} does not fit the image ({err})"
            ) from None
        pixels[i] = np.asarray(small.convert("HSV"))
    hb, sb, vb = bins
    h = pixels[..., 0].astype(np.int64) * hb // 256
    s = pixels[..., 1].astype(np.int64) * sb // 256
    v = pixels[..., 2].astype(np.int64) * vb // 256
    flat = ((h * sb + s) * vb + v).reshape(n, -1)
    d = hb * sb * vb
    offsets = np.arange(n)[:, None] * d
    counts = np.bincount((flat + offsets).ravel(), minlength=n * d).reshape(n, d)
    hist = counts / counts.sum(1, keepdims=True)
    return np.sqrt(hist).astype(np.float32)


def colour_histogram_baseline(real_root: str | os.PathLike[str]) -> dict[str, float | str | int]:
    """AIC mAP and rank-1 of colour-histogram retrieval on a dataset's query → gallery split:
    on whole images, on the true vehicle boxes (when ``vehicle_boxes.csv`` exists), and the mAP
    of the whole-image ranking against shuffled ids (chance)."""

    ds = load_dataset(real_root)
    if not ds.has_ground_truth:
        raise DatasetError(f"{real_root}: query/gallery have no vehicle ids; cannot calibrate")
    q, g = ds["query"], ds["gallery"]
    qids = np.array([r.vehicle_id for r in q])
    gids = np.array([r.vehicle_id for r in g])

    def score(fq: np.ndarray, fg: np.ndarray, gallery_ids: np.ndarray) -> dict:
        dist = (fq**2).sum(1)[:, None] + (fg**2).sum(1)[None] - 2 * fq @ fg.T
        return evaluate(dist, qids, gallery_ids, protocol="aic", max_rank=100)

    fq, fg = colour_histogram_features(q), colour_histogram_features(g)
    whole = score(fq, fg, gids)
    # chance level: the same ranking against gallery ids in a random order
    chance = score(fq, fg, np.random.default_rng(0).permutation(gids))
    result: dict[str, float | str | int] = {
        "colour_hist_mAP": whole["mAP"],
        "colour_hist_rank1": whole["rank1"],
        "chance_mAP": chance["mAP"],
        "protocol": "aic (AP over the top 100)",
        "queries": len(q),
        "gallery": len(g),
    }
    boxes_file = Path(real_root) / "vehicle_boxes.csv"
    if boxes_file.is_file():  # the same inside the true boxes: the vehicle's colours alone
        box_of = _read_boxes(boxes_file)
        bq = np.array([box_of[("query", r.name)] for r in q])
        bg = np.array([box_of[("gallery", r.name)] for r in g])
        fq, fg = colour_histogram_features(q, boxes=bq), colour_histogram_features(g, boxes=bg)
        boxed = score(fq, fg, gids)
        result["colour_hist_box_mAP"] = boxed["mAP"]
        result["colour_hist_box_rank1"] = boxed["rank1"]
    return result


def _read_boxes(path: Path) -> dict[tuple[str, str], tuple[float, ...]]:
    """``vehicle_boxes.csv`` as {(split, image name): (x1, y1, x2, y2)}."""
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out[(row["split"], row["image_name"])] = tuple(
                    float(row[k]) for k in ("x1", "y1", "x2", "y2")
                )
            except (KeyError, TypeError, ValueError):
                raise DatasetError(
                    f"{path}, line {line}: expected split,image_name,x1,y1,x2,y2"
                ) from None
    return out


def contact_sheet(
    real_root: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    rows: int = 8,
    columns: int = 8,
    thumb: int = 96,
) -> Path:
    """One PNG: rows = identities (those seen by most cameras), columns = cameras.

    Each cell shows the middle frame of the identity's track in that camera (blank if unseen).
    """

    ds = load_dataset(real_root)
    by_id_cam: dict[tuple[int, int], list[ImageRecord]] = {}
    for r in ds:
        if r.vehicle_id is not None and r.camera is not None:
            by_id_cam.setdefault((r.vehicle_id, r.camera), []).append(r)
    cams_of: dict[int, set[int]] = {}
    for vid, cam in by_id_cam:
        cams_of.setdefault(vid, set()).add(cam)
    ids = sorted(cams_of, key=lambda v: (-len(cams_of[v]), v))[:rows]
    cams = sorted({c for v in ids for c in cams_of[v]})
    counts = {c: sum(c in cams_of[v] for v in ids) for c in cams}
    cams = sorted(sorted(cams, key=lambda c: -counts[c])[:columns])
    label_w, label_h = 56, 16
    sheet = Image.new(
        "RGB", (label_w + thumb * len(cams), label_h + thumb * len(ids)), (40, 40, 40)
    )
    draw = ImageDraw.Draw(sheet)
    for j, c in enumerate(cams):
        draw.text((label_w + j * thumb + thumb // 2 - 12, 2), f"c{c:03d}", fill=(230, 230, 230))
    for i, vid in enumerate(ids):
        draw.text((4, label_h + i * thumb + thumb // 2 - 6), f"id {vid}", fill=(230, 230, 230))
        for j, c in enumerate(cams):
            recs = by_id_cam.get((vid, c))
            if not recs:
                continue
            recs = sorted(recs, key=lambda r: (r.split, r.name))
            im = open_image(recs[len(recs) // 2].path, target=(thumb, thumb))
            tile = im.resize((thumb, thumb), Image.BILINEAR)
            sheet.paste(tile, (label_w + j * thumb, label_h + i * thumb))
    out = Path(out_png)
    with atomic_path(out) as tmp:
        sheet.save(tmp, optimize=True)
    return out


def calibration_report(out: str | os.PathLike[str]) -> dict[str, float | str | int]:
    """Calibrate a generated dataset ``out``: writes ``out/calibration.json`` and
    ``out/contact_sheet.png``; returns the numbers."""
    out = Path(out)
    numbers = colour_histogram_baseline(out / "real")
    write_json_atomic(out / "calibration.json", numbers)
    contact_sheet(out / "real", out / "contact_sheet.png")
    return numbers
