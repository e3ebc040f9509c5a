"""The post-processing chain, once: what ``vreid pipeline``, ``vreid rank`` and ``vreid search`` run.

From per-model features to the rows of the results table (paper, section 3.4)::

    per model   D = N(d)                    d: squared Euclidean distance, N: row / row max
    ensemble    Σ wᵢ·Dᵢ / Σ wᵢ              wᵢ: retrieval.ensemble_weights (1:1 when null)
    +rerank     k-reciprocal re-ranking of each model, then the ensemble
    +metadata   d' = N(d) + γ_type·N(D_type) + γ_colour·N(D_colour) before re-ranking (or, with
                retrieval.rerank false, D = N(d') itself), then the ensemble
    +tracks     each gallery image takes the mean distance of its track

Rows, in order (``RetrievalChain.rows``; the last one is ``final``):

* one per model, named by its key in ``features`` — its own D = N(d) (:func:`model_distance`);
* ``ensemble`` — their weighted mean;
* with ``retrieval.rerank``: ``ensemble+rerank``, then ``ensemble+rerank+metadata`` when metadata
  is given; without: ``ensemble+metadata`` when metadata is given;
* ``<last row>+tracks`` when ``retrieval.track_average`` is on and some gallery image has a track
  (images without one keep their own distance).

Metadata is given when ``attributes`` holds the features of a head whose weight (``gamma_type``
for ``"type"``, ``gamma_colour`` for ``"color"``) is positive. Every row is a float32 (q, g)
matrix, smaller is more similar; every ensemble row of one model equals that model's step.

:func:`score` is the one scoring of a row (protocol and ``retrieval.top`` of the settings), and
``top_indices`` / ``write_submission`` (``vreid.retrieval.submission``) with ``retrieval.top`` the
one ranked-list writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.config import RetrievalConfig
from vreid.core.errors import ConfigError, DatasetError
from vreid.inference.features import load_features
from vreid.retrieval.distance import ensemble
from vreid.retrieval.metrics import evaluate
from vreid.retrieval.reranking import original_distance, rerank
from vreid.retrieval.tracks import average_by_track, has_tracks

ENSEMBLE = "ensemble"
RERANK = "+rerank"
METADATA = "+metadata"
TRACKS = "+tracks"

#: Attribute heads used as metadata, with the retrieval setting that weights each.
ATTRIBUTE_HEADS: tuple[tuple[str, str], ...] = (("type", "gamma_type"), ("color", "gamma_colour"))

FeaturePair = tuple[np.ndarray, np.ndarray]
"""``(query (q, D), gallery (g, D))`` features of one model or attribute head."""


def model_distance(
    query: np.ndarray, gallery: np.ndarray, *, device: str | None = "auto"
) -> np.ndarray:
    """One model's plain distance D = N(d), float32 (q, g): squared Euclidean distances divided by
    each query's largest distance to any query or gallery item (``original_distance`` without
    metadata). Ranks like the Euclidean distance; the scale every chain row starts from."""
    return original_distance(query, gallery, device=device)


@dataclass(frozen=True)
class _Step:
    """How a row is made: one model's D, an ensemble (re-ranked or not, with metadata or not), or
    the track average of the row before it."""

    kind: str  # "model" | "ensemble" | "tracks"
    model: str | None = None
    rerank: bool = False
    metadata: bool = False


def member_names(
    paths: Sequence[str | os.PathLike[str]], *, what: str, stem: bool = False
) -> list[str]:
    """Row names of ensemble members given as files or folders (their name or stem; their paths
    when two share one). The same file or folder given twice is a :class:`ConfigError`: the
    members are keyed by name, so it would silently count once."""
    seen: dict[str, str] = {}
    for p in paths:
        real = os.path.realpath(p)
        if real in seen:
            raise ConfigError(
                f"{p}: given twice as {what} (first as {seen[real]}); give each ensemble member "
                "once and weight them with retrieval.ensemble_weights"
            )
        seen[real] = str(p)
    names = [(Path(p).stem if stem else Path(p).name) or str(p) for p in paths]
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    return names


class RetrievalChain:
    """The chain on one query/gallery split; iterate it for ``(row, distances (q, g))`` in order.

    ``settings``: the ``retrieval`` config section (k1, k2, λ, γ's, ``rerank``,
    ``track_average``, ``ensemble_weights``). ``features``: ``{model: (query (q, D), gallery (g,
    D))}``, the ensemble members in order (``ensemble_weights`` follows it). ``attributes``:
    ``{"type" | "color": (query (q, E), gallery (g, E))}`` attribute-head features; a head whose
    weight is positive must be there when any is given. ``gallery_tracks``: (g,) track labels
    (``None`` / negative: no track). ``device``: of re-ranking and the distances (``runtime.device``).

    k1 and k2 are clamped to the number of items (q + g). Iterating computes every row (again on
    each pass; a row is yielded before the next is computed, and only the matrices a later row
    needs are kept); :meth:`final_distances` computes only what the final row needs.
    """

    def __init__(
        self,
        settings: RetrievalConfig,
        features: Mapping[str, FeaturePair],
        *,
        attributes: Mapping[str, FeaturePair] | None = None,
        gallery_tracks: Sequence[Any] | np.ndarray | None = None,
        device: str | None = "auto",
        progress: bool = False,
        rerankers: Mapping[str, Any] | None = None,
    ) -> None:
        if not features:
            raise ValueError("the retrieval chain needs the features of at least one model")
        self.settings = settings
        self.features = dict(features)
        self.models = list(self.features)
        self.device = device
        self.progress = progress
        # {model: f(query_feats, k1=, k2=, lambda_value=, metadata={head: (query (q, E),
        # gallery (g, E), weight)}) -> (q, g) or None}: the same re-ranking from stored gallery
        # neighbour lists (vreid.retrieval.online); None (lists without these heads/weights)
        # means the full `rerank` runs instead
        self.rerankers = dict(rerankers or {})
        q, g = (len(x) for x in self.features[self.models[0]])
        for name, (fq, fg) in self.features.items():
            if len(fq) != q or len(fg) != g:
                raise ValueError(
                    f"{name}: {len(fq)} query and {len(fg)} gallery rows, "
                    f"{self.models[0]} has {q} and {g}"
                )
        self.num_query, self.num_gallery = q, g
        weights = settings.ensemble_weights
        if weights is not None and len(weights) != len(self.models):
            raise ConfigError(
                f"retrieval.ensemble_weights {weights} has {len(weights)} entries for "
                f"{len(self.models)} ensemble members ({', '.join(self.models)})"
            )
        self.weights = weights
        self.metadata: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.metadata_heads: list[str] = []  # the heads applied, in ATTRIBUTE_HEADS order
        if attributes:
            for head, key in ATTRIBUTE_HEADS:
                weight = float(getattr(settings, key))
                if weight <= 0:
                    continue
                if head not in attributes:
                    raise ValueError(f"retrieval.{key}={weight} but no {head!r} attribute features")
                mq, mg = attributes[head]
                if len(mq) != q or len(mg) != g:
                    raise ValueError(
                        f"{head} attribute features: {len(mq)} query and {len(mg)} gallery rows "
                        f"for {q} and {g} images"
                    )
                self.metadata.append((mq, mg, weight))
                self.metadata_heads.append(head)
        self.tracks = None
        if settings.track_average and gallery_tracks is not None:
            if len(gallery_tracks) != g:
                raise ValueError(f"{len(gallery_tracks)} gallery track ids for {g} gallery images")
            if has_tracks(gallery_tracks):
                self.tracks = gallery_tracks
        self._steps = self._plan()

    # ---- the plan
    def _plan(self) -> dict[str, _Step]:
        name = ENSEMBLE
        chain = [(name, _Step("ensemble"))]
        rr, md = self.settings.rerank, bool(self.metadata)
        if rr:
            name += RERANK
            chain.append((name, _Step("ensemble", rerank=True)))
        if md:
            name += METADATA
            chain.append((name, _Step("ensemble", rerank=rr, metadata=True)))
        if self.tracks is not None:
            name += TRACKS
            chain.append((name, _Step("tracks")))
        clash = sorted(set(self.models) & {row for row, _ in chain})
        if clash:
            raise ValueError(f"model names {clash} clash with the names of the ensemble rows")
        return {**{m: _Step("model", model=m) for m in self.models}, **dict(chain)}

    @property
    def rows(self) -> list[str]:
        """Every row's name, in table order."""
        return list(self._steps)

    @property
    def final(self) -> str:
        """The row that ranked lists and submissions use: the last one."""
        return self.rows[-1]

    @property
    def steps(self) -> dict[str, Any]:
        """What the final row applied (for result files)."""
        return {
            "ensemble": self.models,
            "ensemble_weights": self.weights,
            "rerank": self.settings.rerank,
            "metadata": self.metadata_heads,
            "track_average": self.tracks is not None,
            "final": self.final,
        }

    # ---- computing
    def _member(self, model: str, *, rerank_it: bool, metadata: bool) -> np.ndarray:
        q, g = self.features[model]
        meta = self.metadata if metadata else ()
        if not rerank_it:
            return original_distance(q, g, metadata=meta, device=self.device)
        n = self.num_query + self.num_gallery
        s = self.settings
        if model in self.rerankers:
            out = self.rerankers[model](
                q,
                k1=min(s.k1, n),
                k2=min(s.k2, n),
                lambda_value=s.lambda_value,
                metadata=dict(zip(self.metadata_heads, meta, strict=True)),
            )
            if out is not None:
                return out
        return rerank(
            q,
            g,
            k1=min(s.k1, n),
            k2=min(s.k2, n),
            lambda_value=s.lambda_value,
            metadata=meta,
            device=self.device,
            progress=self.progress,
        )

    def _ensemble(self, step: _Step, members: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        mats = [
            members[m]
            if members is not None
            else self._member(m, rerank_it=step.rerank, metadata=step.metadata)
            for m in self.models
        ]
        return ensemble(mats, self.weights)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        plain: dict[str, np.ndarray] = {}
        last: np.ndarray | None = None
        for row, step in self._steps.items():
            if step.kind == "model":
                assert step.model is not None
                dist = plain[step.model] = self._member(step.model, rerank_it=False, metadata=False)
            elif step.kind == "ensemble":
                reuse = plain if not (step.rerank or step.metadata) else None
                dist = self._ensemble(step, reuse)
                plain.clear()
            else:
                assert last is not None
                assert self.tracks is not None
                dist = average_by_track(last, self.tracks)
            yield row, dist
            last = dist

    def final_distances(self) -> np.ndarray:
        """The final row's (q, g) float32 distances, computing no other row."""
        row = self.final
        step = self._steps[row]
        if step.kind == "tracks":
            row = self.rows[-2]
            step = self._steps[row]
        dist = self._ensemble(step)
        if self.tracks is not None:
            dist = average_by_track(dist, self.tracks)
        return dist

    def __repr__(self) -> str:
        return f"RetrievalChain({self.num_query}×{self.num_gallery}, rows={self.rows})"


# --------------------------------------------------------------------------------------------
# inputs: feature directories as `vreid extract` (and the pipeline's extract stage) write them


def load_pair(
    stem_dir: str | os.PathLike[str], query_names: Sequence[str], gallery_names: Sequence[str]
) -> FeaturePair:
    """``(query (q, D), gallery (g, D))`` from ``<stem_dir>/{query,gallery}.npy``, their name
    indices checked against the split's image names (errors name the file)."""

    q, _ = load_features(Path(stem_dir) / "query", expected_names=query_names)
    g, _ = load_features(
        Path(stem_dir) / "gallery", expected_names=gallery_names, expected_dim=q.shape[1]
    )
    return q, g


def load_attributes(
    attribute_dir: str | os.PathLike[str],
    settings: RetrievalConfig,
    query_names: Sequence[str],
    gallery_names: Sequence[str],
) -> dict[str, FeaturePair]:
    """The attribute features the settings weight: ``{head: (query (q, E), gallery (g, E))}``
    from ``<attribute_dir>/<head>/{query,gallery}.npy`` for each head with a positive γ."""
    return {
        head: load_pair(Path(attribute_dir) / head, query_names, gallery_names)
        for head, key in ATTRIBUTE_HEADS
        if getattr(settings, key) > 0
    }


# --------------------------------------------------------------------------------------------
# scoring


@dataclass(frozen=True)
class GroundTruth:
    """Vehicle ids (and cameras, ``None`` unless every image has one) of query and gallery."""

    query_ids: np.ndarray
    gallery_ids: np.ndarray
    query_cams: np.ndarray | None
    gallery_cams: np.ndarray | None


def ground_truth(query: Sequence[Any], gallery: Sequence[Any]) -> GroundTruth | None:
    """From records with ``vehicle_id`` and ``camera``: ``None`` unless every image has an id."""

    def column(records: Sequence[Any], attr: str) -> np.ndarray | None:
        values = [getattr(r, attr) for r in records]
        return None if any(v is None for v in values) else np.asarray(values)

    qid, gid = column(query, "vehicle_id"), column(gallery, "vehicle_id")
    if qid is None or gid is None:
        return None
    qcam, gcam = column(query, "camera"), column(gallery, "camera")
    if qcam is None or gcam is None:
        qcam = gcam = None
    return GroundTruth(qid, gid, qcam, gcam)


def check_protocol(truth: GroundTruth, settings: RetrievalConfig, where: str) -> None:
    """Raise :class:`DatasetError` (naming ``where``) when the protocol needs cameras that are
    missing."""
    if settings.protocol == "veri" and truth.query_cams is None:
        raise DatasetError(f"{where}: protocol 'veri' needs a camera for every image")


def score(distmat: np.ndarray, truth: GroundTruth, settings: RetrievalConfig) -> dict[str, Any]:
    """The metrics of one row: :func:`~vreid.retrieval.metrics.evaluate` under
    ``settings.protocol`` with ``max_rank = settings.top`` (AIC: mAP@top), plus ``full``: mAP,
    mINP and the number of valid queries over the whole gallery (``veri`` stays ``veri``, ``aic``
    becomes ``all``). JSON-ready (plain Python numbers)."""
    check_protocol(truth, settings, "scoring")
    args = (distmat, truth.query_ids, truth.gallery_ids, truth.query_cams, truth.gallery_cams)
    out = evaluate(*args, protocol=settings.protocol, max_rank=settings.top)
    full_protocol = "veri" if settings.protocol == "veri" else "all"
    full = evaluate(*args, protocol=full_protocol, max_rank=max(1, np.shape(distmat)[1]))
    out["full"] = {k: full[k] for k in ("mAP", "mINP", "num_valid_queries")}
    return out
