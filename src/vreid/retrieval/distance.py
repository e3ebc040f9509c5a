"""Euclidean distances in float32 blocks, and the weighted average of distance matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def pairwise_distances(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    *,
    squared: bool = False,
    block: int = 4096,
) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` (n, D) and ``b`` (m, D) → float32 (n, m).

    Computed as |a|² + |b|² − 2·a·bᵀ by matrix products over ``block`` rows of ``a`` at a time,
    clamped at 0; ``squared=True`` returns squared distances.
    """
    ta = torch.as_tensor(a).to(torch.float32)
    tb = torch.as_tensor(b).to(torch.float32)
    if ta.ndim != 2 or tb.ndim != 2 or ta.shape[1] != tb.shape[1]:
        raise ValueError(
            f"expected (n, D) and (m, D) arrays, got {tuple(ta.shape)} and {tuple(tb.shape)}"
        )
    if block < 1:
        raise ValueError(f"block must be ≥ 1, got {block}")
    out = torch.empty((ta.shape[0], tb.shape[0]), dtype=torch.float32)
    sq_b = (tb * tb).sum(1)
    with torch.no_grad():
        for s in range(0, ta.shape[0], block):
            rows = ta[s : s + block]
            d = torch.addmm((rows * rows).sum(1)[:, None] + sq_b[None, :], rows, tb.T, alpha=-2.0)
            d.clamp_min_(0.0)
            out[s : s + block] = d if squared else d.sqrt_()
    return out.numpy()


def ensemble(distmats: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean Σ wᵢ·Dᵢ / Σ wᵢ of distance matrices of one shape (equal weights by default).

    The paper averages the re-ranked matrices of GLAMOR and Counter GLAMOR 1:1. Returns float32.
    """
    mats = [np.asarray(d) for d in distmats]
    if not mats:
        raise ValueError("ensemble needs at least one distance matrix")
    shape = mats[0].shape
    for i, d in enumerate(mats):
        if d.shape != shape:
            raise ValueError(f"distance matrix {i} has shape {d.shape}, matrix 0 has {shape}")
    w = np.ones(len(mats)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(mats),):
        raise ValueError(f"{w.size} weights for {len(mats)} distance matrices")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be ≥ 0 with a positive sum, got {w.tolist()}")
    out = np.zeros(shape, dtype=np.float64)
    for wi, d in zip(w, mats, strict=True):
        if wi:
            out += wi * d
    return (out / w.sum()).astype(np.float32)
