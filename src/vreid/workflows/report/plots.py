"""Matplotlib figures of the report: CMC curves, training curves, confusion matrices.

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


def plot_cmc(
    results: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    max_rank: int = 50,
    title: str = "CMC",
) -> Path:
    """Plot the CMC curve of each result (``{label: evaluate-dict}``, using its ``cmc`` list).

    ``cmc[i]`` is the fraction of queries with a true match within the top ``i + 1``.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for label, res in results.items():
        cmc = np.asarray(res.get("cmc", []), dtype=float)[:max_rank]
        if cmc.size == 0:
            continue
        ranks = np.arange(1, cmc.size + 1)
        ax.plot(ranks, 100 * cmc, label=f"{label} (R1 {100 * cmc[0]:.1f})", lw=1.6)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, max_rank)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def read_scalars(log_dir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Scalar series of a training run: ``{tag: [(step, value), …]}``, sorted by step.

    Reads ``history.json`` in ``log_dir`` or its parent when present (``{tag: [[step, value], …]}``
    or a list of per-epoch dicts with an ``epoch`` key), else the TensorBoard event files under
    ``log_dir``. Returns ``{}`` when neither exists.
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


def _history_json(path: Path) -> dict[str, list[tuple[int, float]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, list[tuple[int, float]]] = {}
    if isinstance(data, list):
        for i, row in enumerate(data):
            step = int(row.get("epoch", i))
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    out.setdefault(key, []).append((step, float(value)))
    elif isinstance(data, dict):
        for key, points in data.items():
            if isinstance(points, list):
                out[key] = [(int(s), float(v)) for s, v in points]
    return {k: sorted(v) for k, v in out.items()}


def plot_training_curves(
    runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    path: str | os.PathLike[str],
    *,
    max_panels: int = 6,
) -> Path | None:
    """One panel per scalar tag (loss, mAP, lr …); each run (``{label: scalars}``) a line.

    Returns ``None`` (and writes nothing) when no run has any scalar.
    """
    tags: list[str] = []
    for scalars in runs.values():
        for tag in scalars:
            if tag not in tags:
                tags.append(tag)
    if not tags:
        return None
    # Losses first, then metrics, then the rest; at most ``max_panels``.
    tags.sort(key=lambda t: (0 if "loss" in t.lower() else 1 if "map" in t.lower() else 2, t))
    tags = tags[:max_panels]
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
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if "lr" in tag.lower() and all(v > 0 for p in runs.values() for _, v in p.get(tag, [])):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(tags) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return save_figure(fig, path)
