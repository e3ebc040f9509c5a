"""Retrieval metrics: mAP, CMC and mINP under the AIC, VeRi and plain protocols, vectorised.

Rankings sort each query's row by distance with ties broken by gallery index (a stable sort).
Protocols:

* ``"aic"`` — the AI City Challenge's mAP@100: the precision at each true match within the top
  ``max_rank`` summed, divided by the number of the query's true matches in the whole gallery.
* ``"veri"`` — gallery images with the query's id *and* camera are removed first; full-length AP.
* ``"all"`` — full-length AP, nothing removed.

CMC rank-k is the fraction of queries whose first true match lies within the top k (k = 1 …
``max_rank``); mINP (Ye et al. 2021) is the mean of (number of true matches) / (rank of the last
true match). Queries without a true match (after removal) are skipped and counted. All three use
the ranking after the protocol's removal; only AP is truncated (``"aic"``).

How it stays fast without sorting indices: each row's values are sorted (a SIMD value sort), and a
match's rank is the number of smaller distances (a batched binary search) plus the equal ones up to
its own index (counted exactly only where ties exist).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

PROTOCOLS = ("aic", "veri", "all")


def _ranks_of(
    work: np.ndarray, sorted_vals: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """1-based stable ranks of the entries (rows[n], cols[n]) of ``work`` (B, g).

    ``sorted_vals`` (B, k) holds each row's k smallest values in order, and every entry asked for
    must be ≤ the row's k-th value (so every smaller value is among them).
    """
    values = work[rows, cols]
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.bincount(rows, minlength=work.shape[0])
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    padded = np.full((work.shape[0], int(counts.max())), np.inf, dtype=work.dtype)
    padded[rows, slot] = values
    sv, pv = torch.from_numpy(sorted_vals), torch.from_numpy(padded)
    less = torch.searchsorted(sv, pv, side="left").numpy()[rows, slot]
    upto = torch.searchsorted(sv, pv, side="right").numpy()[rows, slot]
    rank = less + 1
    # equal distances (or a value at the edge of the k smallest): count the equal ones with a
    # smaller or equal column index exactly
    edge = values >= sorted_vals[rows, -1]
    tied = np.flatnonzero((upto - less > 1) | edge)
    if tied.size:
        g = work.shape[1]
        step = max(1, (1 << 22) // g)
        col_index = np.arange(g)
        for s in range(0, tied.size, step):
            t = tied[s : s + step]
            same = work[rows[t]] == values[t, None]
            rank[t] = less[t] + (same & (col_index[None, :] <= cols[t, None])).sum(1)
    return rank


def _padded_sorted(b: int, rows: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Per-row ascending ranks (B, M), padded with inf."""
    counts = np.bincount(rows, minlength=b)
    out = np.full((b, max(int(counts.max()) if rows.size else 0, 1)), np.inf)
    if rows.size:
        slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out[rows, slot] = ranks
    return np.sort(out, axis=1)


def _last_match_rank(work: np.ndarray, matches: np.ndarray) -> np.ndarray:
    """Stable rank of each row's last true match (0 where there is none). (B,)"""
    masked = np.where(matches, work, -np.inf)
    v_last = masked.max(1)
    col_index = np.arange(work.shape[1])
    j_last = np.where(matches & (work == v_last[:, None]), col_index[None, :], -1).max(1)
    less = (work < v_last[:, None]).sum(1)
    equal = ((work == v_last[:, None]) & (col_index[None, :] <= j_last[:, None])).sum(1)
    return np.where(matches.any(1), less + equal, 0)


def evaluate(
    distmat: np.ndarray,
    query_ids: Sequence[Any] | np.ndarray,
    gallery_ids: Sequence[Any] | np.ndarray,
    query_cams: Sequence[Any] | np.ndarray | None = None,
    gallery_cams: Sequence[Any] | np.ndarray | None = None,
    *,
    protocol: str = "aic",
    max_rank: int = 100,
) -> dict[str, Any]:
    """Score a (q, g) distance matrix against vehicle ids (and cameras for ``"veri"``).

    Returns ``{"protocol", "max_rank", "mAP", "cmc" (list, rank 1..max_rank), "rank1", "rank5",
    "rank10", "mINP", "num_valid_queries", "num_skipped_queries"}`` with plain Python numbers
    (``rankK`` is ``None`` when K > ``max_rank``).
    Raises ``ValueError`` for mismatched shapes, non-finite distances, a missing camera list
    under ``"veri"``, or when no query has a true match.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be ≥ 1, got {max_rank}")
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (q, g), got shape {dist.shape}")
    if not np.issubdtype(dist.dtype, np.floating):
        dist = dist.astype(np.float64)
    q, g = dist.shape
    qid, gid = np.asarray(query_ids), np.asarray(gallery_ids)
    if qid.shape != (q,) or gid.shape != (g,):
        raise ValueError(
            f"distmat is {q}×{g} but there are {qid.size} query ids and {gid.size} gallery ids"
        )
    if not np.isfinite(dist).all():
        raise ValueError("distmat contains NaN or inf")
    qcam = gcam = None
    if protocol == "veri":
        if query_cams is None or gallery_cams is None:
            raise ValueError("protocol 'veri' needs query_cams and gallery_cams")
        qcam, gcam = np.asarray(query_cams), np.asarray(gallery_cams)
        if qcam.shape != (q,) or gcam.shape != (g,):
            raise ValueError(f"camera lists have {qcam.size} / {gcam.size} entries for {q}×{g}")

    ap, inp, first = np.zeros(q), np.zeros(q), np.full(q, np.inf)
    valid = np.zeros(q, dtype=bool)
    step = max(1, (1 << 24) // max(g, 1))
    for s in range(0, q, step):  # row chunks bound the memory, never a loop per query
        e = min(q, s + step)
        same_id = qid[s:e, None] == gid[None, :]
        removed = None
        if protocol == "veri":
            removed = same_id & (qcam[s:e, None] == gcam[None, :])
            same_id = same_id & ~removed
        work = dist[s:e].astype(np.float64 if dist.dtype == np.float64 else np.float32)
        if removed is not None:
            work[removed] = np.inf
        if protocol == "aic":
            # only the top max_rank matter for AP and CMC: partition instead of sorting
            k = min(max_rank, g)
            smallest = np.sort(np.partition(work, k - 1, axis=1)[:, :k], axis=1)
            rows, cols = np.nonzero(same_id & (work <= smallest[:, -1:]))
        else:
            smallest = np.sort(work, axis=1)
            rows, cols = np.nonzero(same_id)
        ranks = _padded_sorted(e - s, rows, _ranks_of(work, smallest, rows, cols))
        n = same_id.sum(1)
        nth = np.arange(1, ranks.shape[1] + 1)[None, :]
        precision = np.where(np.isfinite(ranks), nth / ranks, 0.0)
        if protocol == "aic":
            precision = np.where(ranks <= max_rank, precision, 0.0)
        has = n > 0
        valid[s:e] = has
        ap[s:e] = np.where(has, precision.sum(1) / np.maximum(n, 1), 0.0)
        first[s:e] = ranks[:, 0]
        inp[s:e] = np.where(has, n / np.maximum(_last_match_rank(work, same_id), 1), 0.0)

    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a true match in the gallery; mAP is undefined")
    ks = np.arange(1, max_rank + 1)
    cmc = (first[valid, None] <= ks[None, :]).mean(0)

    def at(k: int) -> float | None:
        return float(cmc[k - 1]) if k <= max_rank else None

    return {
        "protocol": protocol,
        "max_rank": max_rank,
        "mAP": float(ap[valid].mean()),
        "cmc": [float(c) for c in cmc],
        "rank1": at(1),
        "rank5": at(5),
        "rank10": at(10),
        "mINP": float(inp[valid].mean()),
        "num_valid_queries": num_valid,
        "num_skipped_queries": q - num_valid,
    }
