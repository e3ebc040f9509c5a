"""A torch ``Dataset`` over :class:`~vreid.data.ImageRecord` lists, and image loading.

Labels are contiguous class indices ``0 … n_ids-1`` of the records' vehicle ids (sorted by id), so
the classifier's rows follow the ids in increasing order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vreid.core.errors import DatasetError, VreidError
from vreid.data.files import is_image_name, walk_files
from vreid.data.images import open_image
from vreid.data.records import ImageRecord


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """Re-raise a :class:`VreidError` from a DataLoader worker with its own one-line message.

    DataLoader re-raises a worker's exception with the worker's traceback in the message; the
    user should see what is wrong (e.g. which image is unreadable), not the traceback.
    """
    try:
        yield
    except VreidError as err:
        text = str(err)
        if "Original Traceback" not in text:
            raise
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        for prefix in (f"{type(err).__module__}.{type(err).__name__}: ", f"{type(err).__name__}: "):
            if last.startswith(prefix):
                last = last[len(prefix) :]
                break
        raise type(err)(last) from None


def load_image(
    path: str | os.PathLike[str], *, target: tuple[int, int] | None = None
) -> Image.Image:
    """Open an image file as RGB (see :func:`vreid.data.images.open_image`: the pixel limit, and a
    reduction on read to at least ``target = (width, height)``); an unreadable, missing or
    oversized file is a :class:`DatasetError` naming it."""
    return open_image(path, target=target)


def needed_size(transform: Any) -> tuple[int, int] | None:
    """``(width, height)`` an image must keep for ``transform`` (the largest ``Resize`` of a
    torchvision v2 pipeline, e.g. the enlarge step of training), or ``None`` when unknown."""
    sizes: list[tuple[int, int]] = []

    def walk(t: Any) -> None:
        if isinstance(t, v2.Resize) and isinstance(t.size, list | tuple) and len(t.size) == 2:
            sizes.append((int(t.size[1]), int(t.size[0])))
        for child in getattr(t, "transforms", None) or []:
            walk(child)

    walk(transform)
    if not sizes:
        return None
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def to_pil(image: Any, *, target: tuple[int, int] | None = None) -> Image.Image:
    """A path, PIL image or array (H, W, 3) uint8 RGB / (H, W) grey → a PIL RGB image (a path is
    decoded by :func:`load_image`, reduced towards ``target``)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, str | os.PathLike):
        return load_image(image, target=target)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4)):
            return Image.fromarray(arr).convert("RGB")
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey array, got shape {arr.shape}")
    raise TypeError(f"expected an image path, PIL image or numpy array, got {type(image).__name__}")


def label_map(records: Sequence[ImageRecord], *, source: str = "dataset") -> dict[int, int]:
    """Map each vehicle id of ``records`` to a contiguous label (ids sorted ascending).

    Records without a vehicle id are an error: training needs every image's identity.
    """
    missing = [r for r in records if r.vehicle_id is None]
    if missing:
        raise DatasetError(
            f"{source}: {len(missing)} training images have no vehicle id "
            f"(first: {missing[0].path}); training needs labelled images"
        )
    ids = sorted({int(r.vehicle_id) for r in records})  # type: ignore[arg-type]
    return {vid: i for i, vid in enumerate(ids)}


class ReidImageDataset(Dataset):
    """Images of ``records`` with a transform; ``dataset[i] -> (image (3, H, W), label, i)``.

    ``labels`` is a Python list of the contiguous labels (what :class:`PKSampler` takes); when
    ``id_to_label`` is not given it is built from the records (see :func:`label_map`). Records
    without a vehicle id get label -1 when ``require_ids`` is False (query/gallery of a test set).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        id_to_label: dict[int, int] | None = None,
        require_ids: bool = True,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.target = needed_size(transform)
        if require_ids and id_to_label is None:
            id_to_label = label_map(self.records)
        self.id_to_label = id_to_label or {}
        self.labels: list[int] = [
            self.id_to_label.get(int(r.vehicle_id), -1) if r.vehicle_id is not None else -1
            for r in self.records
        ]

    @property
    def num_classes(self) -> int:
        """Number of distinct identities (classifier size)."""
        return len(self.id_to_label)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        record = self.records[index]
        image = load_image(record.path, target=self.target)
        return self.transform(image), self.labels[index], index


class ImageListDataset(Dataset):
    """Images given as paths, PIL images or arrays, with a transform: ``dataset[i] -> image``."""

    def __init__(
        self, images: Sequence[Any], transform: Callable[[Image.Image], torch.Tensor]
    ) -> None:
        self.images = list(images)
        self.transform = transform
        self.target = needed_size(transform)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(to_pil(self.images[index], target=self.target))


def image_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by relative path.

    Hidden files and anything under a hidden folder are skipped (see
    :func:`vreid.data.files.is_image_name`); links to folders are not followed.
    """
    root = Path(folder)
    return sorted(
        (p for p in walk_files(root) if is_image_name(p.name)),
        key=lambda p: p.relative_to(root).as_posix(),
    )


# identities held out of a training split (validation, attribute evaluation)


def split_holdout(
    records: Sequence[ImageRecord], fraction: float, *, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord], list[int]]:
    """Split records by identity: ``(train, held_out, held_out_ids)``.

    ``round(fraction · ids)`` identities (at least one when ``fraction > 0`` and there are two or
    more ids; never all of them) are drawn with ``seed``; every image of a held-out identity goes
    to ``held_out``.
    """
    ids = sorted({r.vehicle_id for r in records if r.vehicle_id is not None})
    n_hold = round(fraction * len(ids))
    if fraction > 0 and len(ids) >= 2:
        n_hold = min(max(n_hold, 1), len(ids) - 1)
    else:
        n_hold = 0
    rng = np.random.default_rng(seed)
    held = set(rng.choice(np.array(ids, dtype=np.int64), size=n_hold, replace=False).tolist())
    train = [r for r in records if r.vehicle_id not in held]
    hold = [r for r in records if r.vehicle_id in held]
    return train, hold, sorted(held)


def holdout_query_gallery(
    held: Sequence[ImageRecord],
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Held-out images as a re-id test ``(query, gallery)``: per identity and camera the first
    image is a query, the rest the gallery. Evaluate with the ``veri`` protocol (same identity
    and camera ignored) so that a query is not matched to its own track."""
    seen: set[tuple[Any, Any]] = set()
    query: list[ImageRecord] = []
    gallery: list[ImageRecord] = []
    for r in held:
        key = (r.vehicle_id, r.camera)
        if key in seen:
            gallery.append(r)
        else:
            seen.add(key)
            query.append(r)
    return query, gallery
