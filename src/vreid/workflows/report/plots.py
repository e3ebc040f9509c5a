"""Matplotlib figures of the report: CMC curves, training curves (per epoch), confusion matrices.

Every function writes one PNG atomically and returns its path. Matplotlib runs on the ``Agg``
backend (no display needed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.artefacts import save_figure

# plot_confusion is re-exported: the report draws the attribute confusion matrices with it
from vreid.core.figures import plot_confusion as plot_confusion
from vreid.core.figures import pyplot


def cmc_figure(
    results: Mapping[str, Mapping[str, Any]],
    *,
    max_rank: int = 50,
    title: str = "CMC",
) -> Any:
    """The CMC figure of :func:`plot_cmc` (a matplotlib ``Figure``): one curve per result, the
    legend in one column below the axes (long row names never cover the curves)."""
    plt = pyplot()
    curves = {
        label: np.asarray(res.get("cmc", []), dtype=float)[:max_rank]
        for label, res in results.items()
    }
    curves = {label: cmc for label, cmc in curves.items() if cmc.size}
    fig, ax = plt.subplots(figsize=(7, 4.2 + 0.24 * len(curves)), dpi=100, layout="constrained")
    for label, cmc in curves.items():
        ranks = np.arange(1, cmc.size + 1)
        ax.plot(ranks, 100 * cmc, label=f"{label} (R1 {100 * cmc[0]:.1f})", lw=1.6)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, max_rank)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        fig.legend(loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    return fig


def plot_cmc(
    results: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    max_rank: int = 50,
    title: str = "CMC",
) -> Path:
    """Plot the CMC curve of each result (``{label: evaluate-dict}``, using its ``cmc`` list);
    the labels are the legend's entries (below the axes).

    ``cmc[i]`` is the fraction of queries with a true match within the top ``i + 1``.
    """
    return save_figure(cmc_figure(results, max_rank=max_rank, title=title), path)


def read_scalars(log_dir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Scalar series of a training run: ``{tag: [(step, value), …]}``, sorted by step.

    Reads ``history.json`` in ``log_dir`` or its parent when present (``{tag: [[step, value], …]}``
    or a list of per-epoch dicts with an ``epoch`` key: the step is the epoch, and an evaluation's
    metrics are named by its split, ``validation mAP`` / ``test mAP``), else the TensorBoard event
    files under ``log_dir``. Returns ``{}`` when neither exists.
    """
    log_dir = Path(log_dir)
    for candidate in (log_dir / "history.json", log_dir.parent / "history.json"):
        if candidate.is_file():
            return _history_json(candidate)
    events = sorted(log_dir.rglob("events.out.tfevents.*")) if log_dir.is_dir() else []
    if not events:
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for ev_dir in sorted({e.parent for e in events}):
        acc = EventAccumulator(str(ev_dir), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points = series.setdefault(tag, {})
            for s in acc.Scalars(tag):
                points[int(s.step)] = float(s.value)  # a resumed run overwrites repeated steps
    return {tag: sorted(points.items()) for tag, points in series.items()}


# Retrieval metrics of a training history's evaluation; named by the split they were computed on
# (``eval_split``: "validation" with train.val_fraction > 0, else "test").
_EVAL_METRICS = frozenset({"mAP", "rank1", "rank5", "rank10", "mINP"})


def _history_json(path: Path) -> dict[str, list[tuple[int, float]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, list[tuple[int, float]]] = {}
    if isinstance(data, list):
        for i, row in enumerate(data):
            step = int(row.get("epoch", i))
            split = row.get("eval_split")
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    tag = f"{split} {key}" if split and key in _EVAL_METRICS else key
                    out.setdefault(tag, []).append((step, float(value)))
    elif isinstance(data, dict):
        for key, points in data.items():
            if isinstance(points, list):
                out[key] = [(int(s), float(v)) for s, v in points]
    return {k: sorted(v) for k, v in out.items()}


# Per-epoch bookkeeping of a history, not a training curve.
_NOT_CURVES = frozenset({"iterations", "images_per_s"})


def _panel_order(tag: str) -> tuple[int, str]:
    low = tag.lower()
    if low == "loss":
        return 0, tag
    if "map" in low:
        return 1, tag
    return (2 if "loss" in low or low in ("ce", "triplet") else 3), tag


def training_figure(
    runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    *,
    max_panels: int = 6,
    xlabel: str = "epoch",
) -> Any:
    """The figure of :func:`plot_training_curves` (a matplotlib ``Figure``), or ``None`` when no
    run has a curve: one panel per tag — the loss, the evaluation's mAP (``validation mAP`` when
    the history has it), the loss parts, then the rest (rank-1, learning rate …) — without the
    per-epoch bookkeeping (iterations, images/s); ``xlabel`` names the x axis."""
    tags: list[str] = []
    for scalars in runs.values():
        for tag in scalars:
            if tag not in tags and tag not in _NOT_CURVES:
                tags.append(tag)
    if not tags:
        return None
    tags = sorted(tags, key=_panel_order)[:max_panels]
    plt = pyplot()
    cols = min(3, len(tags))
    rows = (len(tags) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=90, squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        for label, scalars in runs.items():
            points = scalars.get(tag)
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, label=label, lw=1.4, marker="." if len(points) < 30 else "")
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if "lr" in tag.lower() and all(v > 0 for p in runs.values() for _, v in p.get(tag, [])):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(tags) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return fig


def plot_training_curves(
    runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    path: str | os.PathLike[str],
    *,
    max_panels: int = 6,
) -> Path | None:
    """Write the training curves of ``runs`` (``{label: scalars}`` per epoch, each run a line;
    see :func:`training_figure`). Returns ``None`` (and writes nothing) when there is no curve."""
    fig = training_figure(runs, max_panels=max_panels)
    return None if fig is None else save_figure(fig, path)
