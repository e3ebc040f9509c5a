"""Crop every image of a dataset (or a plain folder) to its vehicle with a detector.

``crop_dataset(SRC, DST)`` writes DST so that it reads back as the same dataset: every image the
dataset's label files name is replaced by its crop under the same relative path, and every other
file (label, name and track files …) is copied unchanged. ``vehicle_boxes.csv`` (true boxes of our
synthetic data) is rewritten in the crops' coordinates. Images without a vehicle detection are
copied uncropped, byte for byte, and listed in ``DST/crop_uncropped.txt``.

Files written in DST besides the dataset:

* ``crop_settings.json`` — detector, weights (path and SHA-256), margin, min_score of this DST (a
  rerun with other settings is refused, so crops made in different ways never mix);
* ``crop_boxes.csv`` — ``image,x1,y1,x2,y2,found,confidence,width,height`` for every image: the
  crop box in the source image's pixels (x2, y2 exclusive) and the source size;
* ``crop_uncropped.txt`` — images kept whole (no vehicle found);
* ``crop_report.json`` — the settings, counts and timing of the last run.

Resumable: each finished image is written atomically (temporary file + rename) and then appended to
the journal ``DST/.crop_progress.csv`` with its size and BLAKE2b digest; a rerun skips only images
the journal lists whose file in DST still has that size and digest (a file placed there by hand, or
emptied or corrupted since, is cropped again), and removes temporary files an interrupted run left
behind. The journal is folded into ``crop_boxes.csv`` when the run completes, and kept for the
next run's check.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vreid.core.artefacts import atomic_path, write_json_atomic, write_text_atomic
from vreid.core.config import CropConfig
from vreid.core.devices import resolve_device
from vreid.core.errors import ConfigError, DatasetError
from vreid.core.progress import progress_bar
from vreid.data import load_dataset
from vreid.data.files import is_image_name, walk_files
from vreid.data.images import ImageReadError, open_image
from vreid.inference.select import Selection, flatten_detections, select_boxes
from vreid.models.detectors import LoadedDetector, detector_spec, file_sha256, load_detector

SETTINGS_FILE = "crop_settings.json"
BOXES_FILE = "crop_boxes.csv"
UNCROPPED_FILE = "crop_uncropped.txt"
REPORT_FILE = "crop_report.json"
JOURNAL_FILE = ".crop_progress.csv"
TRUE_BOXES_FILE = "vehicle_boxes.csv"
_OUR_FILES = frozenset({SETTINGS_FILE, BOXES_FILE, UNCROPPED_FILE, REPORT_FILE, JOURNAL_FILE})
_BOX_FIELDS = ("image", "x1", "y1", "x2", "y2", "found", "confidence", "width", "height")
# Temporary files of vreid.core.artefacts.atomic_path: ".<stem>.<random>.tmp<suffix>".
_TEMP_NAME = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class CropBox:
    """Where one image was cropped (source-image pixels; x2, y2 exclusive)."""

    image: str
    """Path relative to the dataset root, with forward slashes."""
    x1: int
    y1: int
    x2: int
    y2: int
    found: bool
    """A vehicle was detected (otherwise the box is the whole image and the file was copied)."""
    confidence: float
    width: int
    """Width of the source image."""
    height: int
    """Height of the source image."""

    def row(self) -> list[str]:
        return [
            self.image,
            str(self.x1),
            str(self.y1),
            str(self.x2),
            str(self.y2),
            "1" if self.found else "0",
            f"{self.confidence:.4f}",
            str(self.width),
            str(self.height),
        ]

    @classmethod
    def from_row(cls, row: Sequence[str]) -> CropBox:
        image, x1, y1, x2, y2, found, conf, w, h = row
        return cls(
            image, int(x1), int(y1), int(x2), int(y2), found == "1", float(conf), int(w), int(h)
        )


@dataclass
class CropReport:
    """What a crop run did."""

    src: Path
    dst: Path
    detector: str
    weights: str
    """Where the detector's weights came from."""
    device: str
    images: int
    """Images of the dataset (cropped or kept whole, this run or an earlier one)."""
    processed: int
    """Images run through the detector by this run."""
    skipped: int
    """Images finished by an earlier run and skipped."""
    cropped: int
    """Images cropped (over all runs)."""
    uncropped: list[str] = field(default_factory=list)
    """Images without a detection, kept whole (over all runs); also in ``crop_uncropped.txt``."""
    copied_files: int = 0
    """Other files copied unchanged (labels, names, tracks, images not named by the labels)."""
    seconds: float = 0.0
    """Wall time of the detector loop of this run."""
    report_path: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": str(self.src),
            "dst": str(self.dst),
            "detector": self.detector,
            "weights": self.weights,
            "device": self.device,
            "images": self.images,
            "processed": self.processed,
            "skipped": self.skipped,
            "cropped": self.cropped,
            "uncropped": len(self.uncropped),
            "copied_files": self.copied_files,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
        }


# ----------------------------------------------------------------------------------------------
# reading images


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes images to (3, H, W) uint8 tensors; an unreadable file gives its error message."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:
        path = self.paths[index]
        try:
            array = np.asarray(open_image(path))
        except ImageReadError as err:
            return index, err.reason
        return index, torch.from_numpy(array.copy()).permute(2, 0, 1)


def _collate(items: list[tuple[int, torch.Tensor | str]]) -> list[tuple[int, torch.Tensor | str]]:
    return items


# ----------------------------------------------------------------------------------------------
# the crop loop


def _is_image(path: Path) -> bool:
    return is_image_name(path.name)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _check_roots(src: Path, dst: Path, detector: str | None) -> tuple[Path, Path]:
    if detector is not None:
        detector_spec(detector)  # fail on a misspelt name before reading anything
    if not src.is_dir():
        raise DatasetError(f"{src}: source folder not found")
    src_r, dst_r = src.resolve(), dst.resolve()
    if dst_r == src_r or dst_r.is_relative_to(src_r) or src_r.is_relative_to(dst_r):
        raise ConfigError(
            f"destination {dst} overlaps the source {src}; choose a DST outside SRC (crops are "
            "written next to a copy of the labels, never over the originals)"
        )
    return src_r, dst_r


def _settings_of(loaded: LoadedDetector, margin: float, min_score: float) -> dict[str, Any]:
    # The content hash, not just the path: a detector re-trained into the same file must not
    # resume over crops the old one made.
    sha = file_sha256(loaded.weights_file) if loaded.weights_file is not None else None
    return {
        "detector": loaded.name,
        "weights": loaded.source,
        "weights_sha256": sha,
        "margin": margin,
        "min_score": min_score,
    }


def _claim_dst(dst: Path, settings: dict[str, Any]) -> None:
    """Record the settings in DST, or refuse when DST holds crops made with other settings."""
    path = dst / SETTINGS_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != settings:
            raise ConfigError(
                f"{path}: {dst} holds crops made with other settings ({previous}) than now "
                f"({settings}); pass another DST or delete it to start again"
            )
        return
    if dst.exists() and any(dst.iterdir()):
        raise ConfigError(
            f"{dst} exists and is not a crop output (no {SETTINGS_FILE}); pass a new or empty DST"
        )
    write_json_atomic(path, settings)


def _remove_stale_temporaries(dst: Path) -> int:
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(dst):
        for name in filenames:
            if _TEMP_NAME.match(name):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def _read_journal(path: Path) -> dict[str, tuple[CropBox, int, str]]:
    """``image → (box, size, digest)`` of the journal's rows; a torn last line (interrupted write)
    or a row without its file fingerprint is ignored (that image is done again)."""
    entries: dict[str, tuple[CropBox, int, str]] = {}
    if not path.is_file():
        return entries
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    lines = text.split("\n")
    lines = lines[:-1]  # after the last newline: empty, or a line whose writing was cut off
    for row in csv.reader(lines):
        if len(row) != len(_BOX_FIELDS) + 2 or row[0] == "image":
            continue
        try:
            box = CropBox.from_row(row[: len(_BOX_FIELDS)])
            size = int(row[-2])
        except ValueError:
            continue
        entries[box.image] = (box, size, row[-1])
    return entries


def _fingerprint(path: Path) -> tuple[int, str]:
    """``(size, BLAKE2b digest)`` of a file, what the journal records of each finished crop."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _verified(dst: Path, entries: dict[str, tuple[CropBox, int, str]]) -> dict[str, CropBox]:
    """The journal's images whose file in DST is still the one the journal recorded (same size and
    digest); anything else (missing, emptied, replaced, corrupt) is done again."""
    done = {}
    for rel, (box, size, digest) in entries.items():
        path = dst / rel
        try:
            if path.stat().st_size != size or _fingerprint(path) != (size, digest):
                continue
        except OSError:
            continue
        done[rel] = box
    return done


def _save_crop(
    tensor: torch.Tensor, box: CropBox, src_path: Path, dst_path: Path, quality: int
) -> tuple[int, str]:
    """Write the crop of ``tensor`` (3, H, W) uint8, or copy the source file when nothing was found;
    returns the written file's :func:`_fingerprint` (recorded in the journal)."""
    with atomic_path(dst_path) as tmp:
        if not box.found:
            shutil.copyfile(src_path, tmp)
        else:
            region = tensor[:, box.y1 : box.y2, box.x1 : box.x2].permute(1, 2, 0).numpy()
            image = Image.fromarray(np.ascontiguousarray(region))
            if dst_path.suffix.lower() in {".jpg", ".jpeg"}:
                image.save(tmp, quality=quality)
            else:
                image.save(tmp)
        fingerprint = _fingerprint(tmp)
    return fingerprint


def _crop_images(
    src: Path,
    dst: Path,
    images: Sequence[str],
    loaded: LoadedDetector,
    *,
    device: torch.device,
    margin: float,
    min_score: float,
    batch_size: int,
    workers: int,
    quality: int,
    progress: bool,
) -> tuple[dict[str, CropBox], int, int, float]:
    """Run the detector over ``images`` (relative paths) not finished yet; return all boxes,
    the number processed now, the number skipped and the seconds spent."""
    _remove_stale_temporaries(dst)
    # Only what the journal says was finished counts, and only while the file is still the one
    # written then (a file placed in DST, emptied or corrupted since is cropped again).
    wanted = set(images)
    journal = {k: v for k, v in _read_journal(dst / JOURNAL_FILE).items() if k in wanted}
    done = _verified(dst, journal)
    todo = [rel for rel in images if rel not in done]

    loader = torch.utils.data.DataLoader(
        _ImageFiles([src / rel for rel in todo]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
    )
    bar = progress_bar(disable=not progress)
    start = time.perf_counter()
    journal_path = dst / JOURNAL_FILE
    with (
        bar,
        journal_path.open("a", newline="", encoding="utf-8", errors="surrogateescape") as journal,
    ):
        task = bar.add_task("crop", total=len(todo), info="")
        writer = csv.writer(journal, lineterminator="\n")
        processed = 0
        for batch in loader:
            for index, item in batch:
                if isinstance(item, str):
                    raise DatasetError(
                        f"{src / todo[index]}: cannot read image ({item}); replace or remove the "
                        "file and run again (finished crops are kept)"
                    )
            tensors = [item for _, item in batch]
            assert all(isinstance(t, torch.Tensor) for t in tensors)
            selection = _detect_and_select(
                loaded, tensors, device=device, margin=margin, min_score=min_score
            )
            for row, (index, tensor) in enumerate(batch):
                rel = todo[index]
                assert isinstance(tensor, torch.Tensor)
                x1, y1, x2, y2 = (int(v) for v in selection.crop_boxes[row])
                box = CropBox(
                    rel,
                    x1,
                    y1,
                    x2,
                    y2,
                    bool(selection.found[row]),
                    float(selection.confidence[row]),
                    int(tensor.shape[2]),
                    int(tensor.shape[1]),
                )
                size, digest = _save_crop(tensor, box, src / rel, dst / rel, quality)
                writer.writerow([*box.row(), str(size), digest])
                done[rel] = box
            journal.flush()
            processed += len(batch)
            elapsed = time.perf_counter() - start
            bar.update(task, advance=len(batch), info=f"{processed / max(elapsed, 1e-9):.1f} img/s")
    seconds = time.perf_counter() - start
    return done, processed, len(images) - len(todo), seconds


@torch.inference_mode()
def _detect_and_select(
    loaded: LoadedDetector,
    images: Sequence[torch.Tensor],
    *,
    device: torch.device,
    margin: float,
    min_score: float,
) -> Selection:
    """Detect on a batch of (3, H, W) uint8 images and choose one crop box per image."""
    inputs = [img.to(device, non_blocking=True).float().div_(255) for img in images]
    outputs = loaded.model(inputs)
    boxes, scores, labels, image_index = flatten_detections(outputs)
    sizes = torch.tensor([[img.shape[1], img.shape[2]] for img in images])
    return select_boxes(
        boxes,
        scores,
        labels,
        image_index,
        sizes,
        vehicle_labels=loaded.vehicle_labels,
        min_score=min_score,
        margin=margin,
    )


def detect_crop_boxes(
    loaded: LoadedDetector,
    images: Sequence[torch.Tensor],
    *,
    margin: float = 0.05,
    min_score: float = 0.5,
) -> Selection:
    """Crop boxes for in-memory images: ``images`` are (3, H, W) uint8 tensors; the detector runs on
    the device its model lives on. Returns a :class:`~vreid.inference.select.Selection`."""
    device = next(loaded.model.parameters()).device
    return _detect_and_select(loaded, images, device=device, margin=margin, min_score=min_score)


def _copy_files(src: Path, dst: Path, rels: Iterable[str]) -> int:
    count = 0
    for rel in rels:
        target = dst / rel
        source = src / rel
        if (
            target.is_file()
            and target.stat().st_size == source.stat().st_size
            and target.read_bytes() == source.read_bytes()
        ):
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        count += 1
    return count


def _translate_true_boxes(
    src: Path, dst: Path, boxes: dict[str, CropBox], split_dirs: dict[str, str]
) -> None:
    """Rewrite ``vehicle_boxes.csv`` (``split,image_name,x1,y1,x2,y2``) in crop coordinates."""
    path = src / TRUE_BOXES_FILE
    if not path.is_file():
        return
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        for line_no, row in enumerate(reader, start=1):
            if line_no == 1 and row and row[0] == "split":
                writer.writerow(row)
                continue
            if not row:
                continue
            if len(row) != 6:
                raise DatasetError(f"{path}:{line_no}: expected split,image_name,x1,y1,x2,y2")
            split, name = row[0], row[1]
            rel = f"{split_dirs.get(split, split)}/{name}"
            box = boxes.get(rel)
            try:
                coords = [float(v) for v in row[2:]]
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: box coordinates must be numbers") from None
            if box is not None:
                w, h = box.x2 - box.x1, box.y2 - box.y1
                coords = [
                    min(max(coords[0] - box.x1, 0), w),
                    min(max(coords[1] - box.y1, 0), h),
                    min(max(coords[2] - box.x1, 0), w),
                    min(max(coords[3] - box.y1, 0), h),
                ]
            writer.writerow([split, name, *(f"{c:g}" for c in coords)])
    write_text_atomic(dst / TRUE_BOXES_FILE, out.getvalue())


def _finish(
    dst: Path,
    images: Sequence[str],
    boxes: dict[str, CropBox],
    report: CropReport,
) -> CropReport:
    ordered = [boxes[rel] for rel in images]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_BOX_FIELDS)
    writer.writerows(b.row() for b in ordered)
    write_text_atomic(dst / BOXES_FILE, out.getvalue())
    report.uncropped = [b.image for b in ordered if not b.found]
    report.cropped = len(ordered) - len(report.uncropped)
    write_text_atomic(dst / UNCROPPED_FILE, "".join(f"{rel}\n" for rel in report.uncropped))
    report.report_path = write_json_atomic(dst / REPORT_FILE, report.to_dict())
    # The journal stays: it is what a later run verifies finished crops against.
    return report


def _run(
    src: Path,
    dst: Path,
    images: Sequence[str],
    other_files: Sequence[str],
    *,
    detector: str | None,
    weights: str | os.PathLike[str] | None,
    margin: float,
    min_score: float,
    device: str | torch.device,
    batch_size: int,
    workers: int,
    quality: int,
    progress: bool,
    split_dirs: dict[str, str],
) -> CropReport:
    if not 0 <= margin <= 1:
        raise ConfigError(f"margin {margin}: must lie in [0, 1] (a fraction of the box size)")
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size}: must be ≥ 1")
    dev = resolve_device(device)
    loaded = load_detector(detector, weights, device=dev)
    _claim_dst(dst, _settings_of(loaded, margin, min_score))
    copied = _copy_files(src, dst, [f for f in other_files if f != TRUE_BOXES_FILE])
    boxes, processed, skipped, seconds = _crop_images(
        src,
        dst,
        images,
        loaded,
        device=dev,
        margin=margin,
        min_score=min_score,
        batch_size=batch_size,
        workers=workers,
        quality=quality,
        progress=progress,
    )
    _translate_true_boxes(src, dst, boxes, split_dirs)
    report = CropReport(
        src=src,
        dst=dst,
        detector=loaded.name,
        weights=loaded.source,
        device=str(dev),
        images=len(images),
        processed=processed,
        skipped=skipped,
        cropped=0,
        copied_files=copied,
        seconds=seconds,
    )
    return _finish(dst, images, boxes, report)


def crop_folder(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    detector: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    margin: float = 0.05,
    min_score: float = 0.5,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    workers: int = 0,
    quality: int = 95,
    progress: bool = True,
) -> CropReport:
    """Crop every image under the folder ``src`` (recursively) into ``dst``, same relative paths;
    other files are copied. See :func:`crop_dataset` for the arguments."""
    src_root, dst_root = _check_roots(Path(src), Path(dst), detector)
    files = walk_files(src_root)
    images = [_relative(p, src_root) for p in files if _is_image(p)]
    others = [
        _relative(p, src_root) for p in files if not _is_image(p) and p.name not in _OUR_FILES
    ]
    return _run(
        src_root,
        dst_root,
        images,
        others,
        detector=detector,
        weights=weights,
        margin=margin,
        min_score=min_score,
        device=device,
        batch_size=batch_size,
        workers=workers,
        quality=quality,
        progress=progress,
        split_dirs={},
    )


# Folder of each split in the AIC layouts (vehicle_boxes.csv names the split, not the folder).
_AIC_SPLIT_DIRS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}


def crop_settings(crop: CropConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`crop_dataset` / :func:`crop_folder` that the ``crop``
    config section sets (detector, weights, margin, min_score, batch_size)."""
    return {
        "detector": crop.detector,
        "weights": crop.weights,
        "margin": crop.margin,
        "min_score": crop.min_score,
        "batch_size": crop.batch_size,
    }


def crop_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    detector: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    margin: float = 0.05,
    min_score: float = 0.5,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    format: str = "auto",
    workers: int = 0,
    quality: int = 95,
    progress: bool = True,
) -> CropReport:
    """Crop every image of every split of the dataset at ``src`` into ``dst`` (see the module
    docstring for what DST holds), so that ``load_dataset(dst)`` gives the same records.

    Args:
        src: dataset root (any format :func:`vreid.data.load_dataset` reads).
        dst: output root; new, empty, or an earlier crop output of the same settings (resumed).
        detector: torchvision detector name (:data:`~vreid.models.detectors.DETECTORS`);
            ``None``: the architecture stored in a ``vreid train-detector`` checkpoint, else
            ``fasterrcnn_mobilenet_v3_large_fpn``.
        weights: weights file; ``None``: torchvision's COCO weights, from the torch hub cache or
            downloaded there on first use (an error offline).
        margin: fraction of the box's width/height added on each side before cropping.
        min_score: detections less confident than this are ignored.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda:0`` …
        batch_size: images per detector call.
        format: dataset format passed to ``load_dataset``.
        workers: image-decoding worker processes (0: decode in this process).
        quality: JPEG quality of the written crops.
        progress: show a progress bar.
    """

    src_root, dst_root = _check_roots(Path(src), Path(dst), detector)
    dataset = load_dataset(src_root, format)
    images: list[str] = []
    seen: set[str] = set()
    for record in dataset:
        path = Path(record.path).resolve()
        if not path.is_relative_to(src_root):
            raise DatasetError(
                f"{src_root}: image {record.name!r} of split {record.split} lies outside the "
                f"dataset root ({path}); fix the label file"
            )
        rel = _relative(path, src_root)
        if rel not in seen:
            seen.add(rel)
            images.append(rel)
    files = walk_files(src_root)
    others = [
        _relative(p, src_root)
        for p in files
        if _relative(p, src_root) not in seen and p.name not in _OUR_FILES
    ]
    return _run(
        src_root,
        dst_root,
        images,
        others,
        detector=detector,
        weights=weights,
        margin=margin,
        min_score=min_score,
        device=device,
        batch_size=batch_size,
        workers=workers,
        quality=quality,
        progress=progress,
        split_dirs=_AIC_SPLIT_DIRS,
    )
