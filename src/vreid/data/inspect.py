"""Dataset summaries (``vreid data info``) and the image integrity check (``vreid data check``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vreid.data.images import ImageReadError, open_image
from vreid.data.records import ImageRecord, ReidDataset


@dataclass(frozen=True)
class SplitSummary:
    """Counts for one split; coverage values are fractions of the split's images in [0, 1]."""

    split: str
    images: int
    ids: int
    """Distinct vehicle ids (0 when no image carries one)."""
    id_coverage: float
    cameras: int
    tracks: int
    color_coverage: float
    type_coverage: float


def summarize(dataset: ReidDataset) -> list[SplitSummary]:
    """One :class:`SplitSummary` per split of ``dataset``, in split order."""

    def distinct(values: list[int | None]) -> int:
        return len({v for v in values if v is not None})

    def coverage(values: list[int | None]) -> float:
        return sum(v is not None for v in values) / len(values) if values else 0.0

    out = []
    for split, records in dataset.splits.items():
        n = len(records)
        vids = [r.vehicle_id for r in records]
        out.append(
            SplitSummary(
                split=split,
                images=n,
                ids=distinct(vids),
                id_coverage=coverage(vids),
                cameras=distinct([r.camera for r in records]),
                tracks=distinct([r.track for r in records]),
                color_coverage=coverage([r.color for r in records]),
                type_coverage=coverage([r.type for r in records]),
            )
        )
    return out


@dataclass(frozen=True)
class BadImage:
    """An image that Pillow cannot open, verify or decode."""

    path: Path
    reason: str


def check_image(path: Path) -> str | None:
    """``None`` if ``path`` opens, verifies and decodes with Pillow, else the reason it does not.

    Decoding uses JPEG draft mode (reduced-scale DCT) so the whole stream is read cheaply.
    """
    try:
        open_image(path, target=(64, 64))  # the pixel limit, and the whole stream decoded
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.verify()
    except ImageReadError as err:
        return err.reason.replace(str(path), "<file>")
    except Exception as err:  # Pillow raises many types for corrupt data
        return f"{type(err).__name__}: {err}".replace(str(path), "<file>")
    return None


def check_images(
    records: Sequence[ImageRecord], *, workers: int | None = None, progress: bool = True
) -> list[BadImage]:
    """Open, verify and decode every record's image; return the bad ones in record order."""
    workers = workers or min(8, os.cpu_count() or 1)
    paths = [r.path for r in records]
    results: list[str | None] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(check_image, paths)
        if progress:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task("checking images", total=len(paths))
                for result in it:
                    results.append(result)
                    bar.advance(task)
        else:
            results = list(it)
    return [BadImage(p, r) for p, r in zip(paths, results, strict=True) if r is not None]
