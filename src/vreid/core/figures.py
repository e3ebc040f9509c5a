"""Matplotlib helpers shared by the stages that draw (training's attribute evaluation, the report).

Lives below both so that training need not import the report. Figures use the ``Agg`` backend (no
display needed) and are written atomically (:func:`vreid.core.artefacts.save_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.artefacts import save_figure


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the ``Agg`` backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    confusion: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Write a confusion matrix (C, C) of counts, rows = true class and columns = prediction, as
    a PNG: cells shaded by the share of their row and annotated with their count, each true class
    labelled with its number of images."""
    counts = np.asarray(confusion, dtype=np.float64)
    n = counts.shape[0]
    if counts.shape != (n, n) or len(class_names) != n:
        raise ValueError(f"confusion {counts.shape} does not match {len(class_names)} classes")
    support = counts.sum(1)
    norm = np.divide(
        counts, support[:, None], out=np.zeros_like(counts), where=support[:, None] > 0
    )
    plt = pyplot()
    size = 1.5 + 0.55 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), list(class_names), rotation=45, ha="right", fontsize=8)
    labels = [f"{c} ({int(s)})" for c, s in zip(class_names, support, strict=True)]
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (images)")
    if title:
        ax.set_title(title, fontsize=10)
    for i, j in zip(*np.nonzero(counts), strict=True):
        ax.text(
            j,
            i,
            str(int(counts[i, j])),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if norm[i, j] > 0.5 else "black",
        )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
