"""The ranking stage: feature files of a split in, distances, ranked lists, ``track2.txt`` and
metrics out (what ``vreid rank`` runs).

Per model directory (``query.npy`` / ``gallery.npy`` + name indices, as ``vreid extract``
writes them): optional attribute distances as metadata, k-reciprocal re-ranking (or the plain
normalised distance), then the ensemble of the models, then track averaging.
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
from vreid.inference.features import load_features
from vreid.retrieval.distance import ensemble
from vreid.retrieval.metrics import evaluate
from vreid.retrieval.reranking import original_distance, rerank
from vreid.retrieval.submission import top_indices, write_submission
from vreid.retrieval.tracks import average_by_track

#: Attribute heads used as metadata, with the config field that weights each.
ATTRIBUTE_HEADS = (("type", "gamma_type"), ("color", "gamma_colour"))

OUTPUTS = ("distances.npy", "ranked_lists.txt", "track2.txt", "metrics.json", "config.yaml")


@dataclass
class RankResult:
    """What :func:`rank_split` wrote and measured."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    """Metrics of the final distances (``None`` without ground truth)."""
    model_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Metrics of each model's own (re-ranked) distances, before ensemble and tracks."""


def _load_pair(
    stem_dir: Path, query_names: Sequence[str], gallery_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    q, _ = load_features(stem_dir / "query", expected_names=query_names)
    g, _ = load_features(
        stem_dir / "gallery", expected_names=gallery_names, expected_dim=q.shape[1]
    )
    return q, g


def _ids(records: Sequence[Any], attr: str) -> np.ndarray | None:
    values = [getattr(r, attr) for r in records]
    if any(v is None for v in values):
        return None
    return np.asarray(values)


def rank_split(
    feature_dirs: Sequence[str | os.PathLike[str]],
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    config: Config | None = None,
    attribute_dir: str | os.PathLike[str] | None = None,
    data_format: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> RankResult:
    """Rank the query split of ``data_root`` against its gallery from feature files.

    Writes into ``out_dir``: ``distances.npy`` (final (q, g) float32), ``ranked_lists.txt``
    (per line: query name, then the top gallery names), ``track2.txt``, ``metrics.json`` (only when
    the dataset has ground-truth ids) and ``config.yaml``. Refuses to overwrite a previous result
    unless ``overwrite``. Bad inputs raise :class:`FeatureFileError` / :class:`DatasetError`
    naming the file.
    """
    from vreid.data import load_dataset

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
    dataset = load_dataset(data_root, data_format or cfg.data.format)
    for split in ("query", "gallery"):
        if not dataset.splits.get(split):
            raise DatasetError(f"{data_root}: the dataset has no {split} images to rank")
    query, gallery = dataset["query"], dataset["gallery"]
    qnames, gnames = [r.name for r in query], [r.name for r in gallery]

    metadata: list[tuple[np.ndarray, np.ndarray, float]] = []
    if attribute_dir is not None:
        for head, key in ATTRIBUTE_HEADS:
            weight = getattr(rc, key)
            if weight > 0:
                mq, mg = _load_pair(Path(attribute_dir) / head, qnames, gnames)
                metadata.append((mq, mg, weight))

    names = [Path(d).name or str(d) for d in feature_dirs]
    if len(set(names)) != len(names):
        names = [str(d) for d in feature_dirs]
    weights = rc.ensemble_weights
    if weights is not None and len(weights) != len(feature_dirs):
        raise VreidError(
            f"retrieval.ensemble_weights has {len(weights)} entries for {len(feature_dirs)} "
            "feature directories"
        )
    qid, gid = _ids(query, "vehicle_id"), _ids(gallery, "vehicle_id")
    qcam, gcam = _ids(query, "camera"), _ids(gallery, "camera")
    has_truth = qid is not None and gid is not None
    if has_truth and rc.protocol == "veri" and (qcam is None or gcam is None):
        raise DatasetError(f"{data_root}: protocol 'veri' needs a camera for every image")

    def score(dist: np.ndarray) -> dict[str, Any]:
        return evaluate(dist, qid, gid, qcam, gcam, protocol=rc.protocol, max_rank=rc.top)

    result = RankResult(out)
    per_model = []
    for name, stem_dir in zip(names, feature_dirs, strict=True):
        q, g = _load_pair(Path(stem_dir), qnames, gnames)
        if rc.rerank:
            dist = rerank(
                q,
                g,
                k1=rc.k1,
                k2=rc.k2,
                lambda_value=rc.lambda_value,
                metadata=metadata,
                device=cfg.runtime.device,
                progress=progress,
            )
        else:
            dist = original_distance(q, g, metadata=metadata, device=cfg.runtime.device)
        if has_truth:
            result.model_metrics[name] = score(dist)
        per_model.append(dist)
    final = per_model[0] if len(per_model) == 1 else ensemble(per_model, weights)
    del per_model
    tracks = [r.track for r in gallery]
    tracked = rc.track_average and any(t is not None for t in tracks)
    if tracked:
        final = average_by_track(final, tracks)

    out.mkdir(parents=True, exist_ok=True)
    write_npy_atomic(out / "distances.npy", final)
    top = top_indices(final, rc.top)
    lines = [
        " ".join([qn, *(gnames[j] for j in row)]) + "\n"
        for qn, row in zip(qnames, top.tolist(), strict=True)
    ]
    result.files = [
        out / "distances.npy",
        write_text_atomic(out / "ranked_lists.txt", "".join(lines)),
        write_submission(final, out / "track2.txt", top=rc.top),
        save_config(cfg, out / "config.yaml"),
    ]
    if has_truth:
        result.metrics = score(final)
        record = {
            "final": result.metrics,
            "models": result.model_metrics,
            "steps": {
                "rerank": rc.rerank,
                "metadata": [head for head, key in ATTRIBUTE_HEADS if getattr(rc, key) > 0]
                if attribute_dir is not None
                else [],
                "ensemble": names,
                "track_average": tracked,
            },
            "inputs": {"features": [str(d) for d in feature_dirs], "data": str(data_root)},
        }
        result.files.append(write_json_atomic(out / "metrics.json", record))
    return result
