"""AIC Track 2 submissions: ``track2.txt``, one line per query (query order), the 100 nearest
gallery images as space-separated 1-based indices, nearest first.

Galleries smaller than 100 images (synthetic demo splits) list the whole gallery on every line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vreid.core.artefacts import write_text_atomic
from vreid.core.errors import SubmissionError

TOP = 100


def top_indices(distmat: np.ndarray, top: int = TOP) -> np.ndarray:
    """0-based indices (q, min(top, g)) of each row's nearest columns, ties by column index."""
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (q, g), got shape {dist.shape}")
    if not np.isfinite(dist).all():
        raise ValueError("distmat contains NaN or inf")
    k = min(top, dist.shape[1])
    if k == 0:
        return np.zeros((dist.shape[0], 0), dtype=np.int64)
    if k < dist.shape[1]:
        # the k smallest values per row, plus every column tied with the k-th (stable order)
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
        rows, cols = np.nonzero(dist <= kth)
    else:
        rows, cols = np.indices(dist.shape).reshape(2, -1)
    order = np.lexsort((cols, dist[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=dist.shape[0])
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = slot < k
    out = np.empty((dist.shape[0], k), dtype=np.int64)
    out[rows[keep], slot[keep]] = cols[keep]
    return out


def write_submission(distmat: np.ndarray, path: str | os.PathLike[str], top: int = TOP) -> Path:
    """Write ``track2.txt`` for a (q, g) distance matrix atomically; returns the path."""
    ranks = top_indices(distmat, top) + 1
    text = "".join(" ".join(map(str, row)) + "\n" for row in ranks.tolist())
    return write_text_atomic(path, text)


def check_submission(
    path: str | os.PathLike[str], num_queries: int, num_gallery: int, top: int = TOP
) -> np.ndarray:
    """Validate a submission file; returns its 1-based indices (num_queries, min(top, g)).

    Checks: one line per query, exactly min(top, num_gallery) whitespace-separated integers per
    line, each in 1..num_gallery, no repeats. Raises :class:`SubmissionError` naming the file,
    the line and what is wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise SubmissionError(f"{p}: submission file not found")
    expected = min(top, num_gallery)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SubmissionError(f"{p}: not a UTF-8 text file") from None
    if len(lines) != num_queries:
        raise SubmissionError(f"{p}: {len(lines)} lines, expected one per query ({num_queries})")
    out = np.empty((num_queries, expected), dtype=np.int64)
    for n, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != expected:
            raise SubmissionError(
                f"{p}, line {n}: {len(tokens)} gallery indices, expected {expected}"
            )
        try:
            values = [int(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not t.lstrip("+-").isdigit())
            raise SubmissionError(f"{p}, line {n}: {bad!r} is not an integer index") from None
        row = np.asarray(values)
        out_of_range = (row < 1) | (row > num_gallery)
        if out_of_range.any():
            raise SubmissionError(
                f"{p}, line {n}: index {row[out_of_range][0]} outside 1..{num_gallery} "
                "(indices are 1-based gallery positions)"
            )
        uniq, counts = np.unique(row, return_counts=True)
        if (counts > 1).any():
            raise SubmissionError(
                f"{p}, line {n}: index {uniq[counts > 1][0]} appears {counts.max()} times"
            )
        out[n - 1] = row
    return out
