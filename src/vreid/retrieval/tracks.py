"""Track-level distance averaging: every gallery image takes the mean distance of its track."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _track_codes(gallery_track_ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Consecutive track codes 0..T-1 per gallery image, −1 for images without a track.

    ``None``, NaN and negative integers mean "no track".
    """
    arr = np.asarray(gallery_track_ids)
    if np.issubdtype(arr.dtype, np.integer):  # the usual case: vectorised
        codes = np.full(arr.shape[0], -1, dtype=np.int64)
        has = arr >= 0
        codes[has] = np.unique(arr[has], return_inverse=True)[1]
        return codes
    codes = np.full(len(gallery_track_ids), -1, dtype=np.int64)
    keys: dict[Any, int] = {}
    for j, t in enumerate(gallery_track_ids):
        if t is None or (isinstance(t, float) and np.isnan(t)):
            continue
        if isinstance(t, (int, np.integer)) and t < 0:
            continue
        codes[j] = keys.setdefault(t, len(keys))
    return codes


def has_tracks(gallery_track_ids: Sequence[Any] | np.ndarray) -> bool:
    """Whether some gallery image has a track (``None``, NaN and negative ints mean none)."""
    return bool((_track_codes(gallery_track_ids) >= 0).any())


def average_by_track(
    distmat: np.ndarray, gallery_track_ids: Sequence[Any] | np.ndarray
) -> np.ndarray:
    """Replace each query-to-gallery distance by the query's mean distance to that image's track.

    ``distmat`` (q, g); ``gallery_track_ids`` (g,) — any hashable track labels, with ``None`` /
    negative ints for images outside every track (they keep their own distance). Returns float32
    (q, g); the means are accumulated in float64.
    """
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (q, g), got shape {dist.shape}")
    if len(gallery_track_ids) != dist.shape[1]:
        raise ValueError(f"{len(gallery_track_ids)} track ids for {dist.shape[1]} gallery columns")
    codes = _track_codes(gallery_track_ids)
    out = dist.astype(np.float32, copy=True)
    in_track = np.flatnonzero(codes >= 0)
    if in_track.size == 0:
        return out
    order = in_track[np.argsort(codes[in_track], kind="stable")]
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, order.size])
    step = max(1, (1 << 24) // max(order.size, 1))
    for s in range(0, dist.shape[0], step):  # row chunks bound the memory
        block = dist[s : s + step, order].astype(np.float64)
        means = np.add.reduceat(block, starts, axis=1) / sizes
        out[s : s + step, order] = np.repeat(means, sizes, axis=1)
    return out
