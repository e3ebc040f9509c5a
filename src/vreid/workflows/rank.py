"""The ranking stage: feature files of a split in, distances, ranked lists, ``track2.txt`` and
metrics out (what ``vreid rank`` runs).

Per model directory (``query.npy`` / ``gallery.npy`` + name indices, as ``vreid extract`` writes
them, the ensemble members in order) and an optional attribute directory, it runs the retrieval
chain (:class:`vreid.retrieval.chain.RetrievalChain`, the same as ``vreid pipeline`` and
``vreid search``) and scores every row as the pipeline does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.artefacts import write_json_atomic, write_npy_atomic, write_text_atomic
from vreid.core.config import Config, save_config
from vreid.core.errors import DatasetError, VreidError
from vreid.data import load_from_config
from vreid.retrieval.chain import (
    RetrievalChain,
    check_protocol,
    ground_truth,
    load_attributes,
    load_pair,
    member_names,
    score,
)
from vreid.retrieval.submission import top_indices, write_submission

OUTPUTS = (
    "distances",
    "distances.npy",
    "ranked_lists.txt",
    "track2.txt",
    "metrics.json",
    "rank.json",
    "config.yaml",
)


@dataclass
class RankResult:
    """What :func:`rank_split` wrote and measured."""

    out_dir: Path
    rows: list[str] = field(default_factory=list)
    """The chain's rows, in order (``distances/<row>.npy`` each)."""
    final: str = ""
    """The row of the ranked lists and ``track2.txt``."""
    files: list[Path] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] | None = None
    """``{row: metrics}`` as in ``metrics.json`` (``None`` without ground truth)."""

    @property
    def final_metrics(self) -> dict[str, Any] | None:
        """The metrics of the final row."""
        return None if self.metrics is None else self.metrics[self.final]


def _clear_rows(folder: Path, keep: Sequence[str]) -> None:
    """Remove the ``.npy`` files of rows not in ``keep`` (left by an earlier configuration)."""
    if folder.is_dir():
        for p in folder.glob("*.npy"):
            if p.stem not in keep:
                p.unlink()


def rank_split(
    feature_dirs: Sequence[str | os.PathLike[str]],
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    config: Config | None = None,
    attribute_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> RankResult:
    """Rank the query split of ``data_root`` against its gallery from feature files.

    ``feature_dirs``: one directory per model (its name is the model's row), the ensemble in
    order (``retrieval.ensemble_weights`` follows it); ``attribute_dir``: ``<dir>/type/`` and
    ``<dir>/color/`` attribute features, used as metadata with ``retrieval.gamma_type`` /
    ``gamma_colour``. Gallery tracks of the dataset are averaged over when ``retrieval.
    track_average`` is on and some gallery image has a track.

    Writes into ``out_dir``: ``distances/<row>.npy`` ((q, g) float32, every row of the chain),
    ``distances.npy`` (the final row),
    ``ranked_lists.txt`` (per line: query name, then the top ``retrieval.top`` gallery names of
    the final row), ``track2.txt``, ``metrics.json`` (``{row: metrics}``, the table of the
    pipeline's ``metrics.json``; only when the dataset has ground-truth ids), ``rank.json`` (rows,
    final row, steps applied, inputs) and ``config.yaml``. Refuses to overwrite a previous result
    unless ``overwrite``. Bad inputs raise :class:`FeatureFileError` / :class:`DatasetError`
    naming the file.
    """

    cfg = config or Config()
    rc = cfg.retrieval
    out = Path(out_dir)
    if not feature_dirs:
        raise VreidError("rank: give at least one feature directory")
    existing = [out / name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise VreidError(
            f"{existing[0]} already exists; pass --overwrite to replace it or choose another --out"
        )
    dataset = load_from_config(cfg.data, root=data_root)
    for split in ("query", "gallery"):
        if not dataset.splits.get(split):
            raise DatasetError(f"{data_root}: the dataset has no {split} images to rank")
    query, gallery = dataset["query"], dataset["gallery"]
    qnames, gnames = [r.name for r in query], [r.name for r in gallery]
    truth = ground_truth(query, gallery)
    if truth is not None:
        check_protocol(truth, rc, str(data_root))

    attributes = (
        load_attributes(attribute_dir, rc, qnames, gnames) if attribute_dir is not None else None
    )
    names = member_names(feature_dirs, what="a feature directory")
    features = {
        name: load_pair(d, qnames, gnames) for name, d in zip(names, feature_dirs, strict=True)
    }
    chain = RetrievalChain(
        rc,
        features,
        attributes=attributes,
        gallery_tracks=[r.track for r in gallery],
        device=cfg.runtime.device,
        progress=progress,
    )

    result = RankResult(out, rows=chain.rows, final=chain.final)
    metrics: dict[str, dict[str, Any]] = {}
    final: np.ndarray | None = None
    (out / "distances").mkdir(parents=True, exist_ok=True)
    _clear_rows(out / "distances", chain.rows)
    for row, dist in chain:
        result.files.append(write_npy_atomic(out / "distances" / f"{row}.npy", dist))
        if truth is not None:
            metrics[row] = score(dist, truth, rc)
        if row == chain.final:
            final = dist
    assert final is not None
    top = top_indices(final, rc.top)
    lines = [
        " ".join([qn, *(gnames[j] for j in idx)]) + "\n"
        for qn, idx in zip(qnames, top.tolist(), strict=True)
    ]
    result.files += [
        write_npy_atomic(out / "distances.npy", final),  # the final row, as search writes it
        write_text_atomic(out / "ranked_lists.txt", "".join(lines)),
        write_submission(final, out / "track2.txt", top=rc.top),
        save_config(cfg, out / "config.yaml"),
    ]
    record = {
        "rows": chain.rows,
        "final": chain.final,
        "steps": chain.steps,
        "inputs": {
            "features": [str(d) for d in feature_dirs],
            "attributes": None if attribute_dir is None else str(attribute_dir),
            "data": str(data_root),
        },
    }
    result.files.append(write_json_atomic(out / "rank.json", record))
    if truth is not None:
        result.metrics = metrics
        result.files.append(write_json_atomic(out / "metrics.json", metrics))
    elif (out / "metrics.json").exists():
        (out / "metrics.json").unlink()  # an earlier run's, with ground truth
    return result
