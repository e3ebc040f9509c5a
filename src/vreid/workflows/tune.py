"""Post-processing tuned on validation identities (``vreid tune``; the pipeline's ``tune`` stage).

The paper says its γ, k1, k2 and λ were "fine-tuned" without saying on what. vreid tunes them on
identities held out of the *training* split (``train.val_fraction``): the models never trained
on them, and the query/gallery (test) split is never read. Per identity and camera the first
held-out image is a query and the others the gallery (``holdout_query_gallery``), scored with the
``veri`` protocol so a query is not matched with its own camera's images.

The search is coordinate-wise: each setting in turn (γ_type, γ_colour, k1, k2, λ, ensemble
weights) takes the grid value of ``tune.<setting>`` that scores best with the others held at their
current best, starting from the config's values; a tie keeps the earlier (the config's) value. That
costs the sum of the grid sizes in chain runs instead of their product; the validation curve of
every value tried is kept for the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vreid.core.config import RetrievalConfig, TuneConfig
from vreid.retrieval.chain import FeaturePair, GroundTruth, RetrievalChain, score

#: The settings tuned, in the order they are searched.
TUNED = ("gamma_type", "gamma_colour", "k1", "k2", "lambda_value", "ensemble_weights")


@dataclass
class TuneResult:
    """What :func:`tune_retrieval` chose and measured."""

    chosen: dict[str, Any]
    """The tuned values (keys of ``retrieval``)."""
    default_score: float
    """The metric with the config's own values."""
    best_score: float
    """The metric with the chosen values."""
    metric: str
    curve: list[dict[str, Any]] = field(default_factory=list)
    """Every value tried: ``{"setting", "value", "score"}``, in search order."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "default_score": self.default_score,
            "best_score": self.best_score,
            "metric": self.metric,
            "curve": self.curve,
        }


def tune_retrieval(
    settings: RetrievalConfig,
    grid: TuneConfig,
    features: Mapping[str, FeaturePair],
    truth: GroundTruth,
    *,
    attributes: Mapping[str, FeaturePair] | None = None,
    gallery_tracks: Sequence[Any] | None = None,
    device: str | None = "auto",
) -> TuneResult:
    """Choose the retrieval settings of ``TUNED`` on validation features.

    ``features``: ``{model: (query (q, D), gallery (g, D))}`` of the validation images (the
    ensemble members, in order); ``attributes``: ``{"type"|"color": (q, E), (g, E)}``; ``truth``:
    their ids and cameras. Scores the chain's final row with ``grid.protocol`` and
    ``grid.metric``. Settings whose step the chain does not apply (γ without attributes, k1/k2/λ
    without re-ranking, weights of a single model) are left as they are.
    """
    current = settings.model_copy(deep=True)
    current.protocol = grid.protocol

    def evaluate(candidate: RetrievalConfig) -> float:
        chain = RetrievalChain(
            candidate,
            features,
            attributes=attributes,
            gallery_tracks=gallery_tracks,
            device=device,
        )
        return float(score(chain.final_distances(), truth, candidate)[grid.metric])

    best = default = evaluate(current)
    curve: list[dict[str, Any]] = []
    for setting in TUNED:
        if not _applies(setting, current, features, attributes):
            continue
        values = list(getattr(grid, setting))
        for value in values:
            if setting == "ensemble_weights" and len(value) != len(features):
                continue
            candidate = current.model_copy(update={setting: value})
            result = evaluate(candidate)
            curve.append({"setting": setting, "value": value, "score": result})
            if result > best + 1e-12:
                best, current = result, candidate
    chosen = {k: getattr(current, k) for k in TUNED}
    return TuneResult(chosen, default, best, grid.metric, curve)


def _applies(
    setting: str,
    settings: RetrievalConfig,
    features: Mapping[str, FeaturePair],
    attributes: Mapping[str, FeaturePair] | None,
) -> bool:
    if setting == "gamma_type":
        return bool(attributes) and "type" in attributes
    if setting == "gamma_colour":
        return bool(attributes) and "color" in attributes
    if setting in ("k1", "k2", "lambda_value"):
        return settings.rerank
    return len(features) > 1


def apply_tuned(settings: RetrievalConfig, chosen: Mapping[str, Any]) -> RetrievalConfig:
    """``settings`` with the tuned values of a ``tune.json``'s ``chosen``."""
    return settings.model_copy(update={k: chosen[k] for k in TUNED if k in chosen})
