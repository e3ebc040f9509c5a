"""Retrieval: distances, k-reciprocal re-ranking, track averaging, metrics, submissions, and the
chain of them every entry point runs (:class:`~vreid.retrieval.chain.RetrievalChain`).

Names are imported lazily so that importing :mod:`vreid.retrieval` stays cheap. The re-ranking
function lives in ``reranking.py`` (not ``rerank.py``): a submodule named like the function would
replace it as the package attribute as soon as the submodule is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RetrievalChain": "vreid.retrieval.chain",
    "score": "vreid.retrieval.chain",
    "pairwise_distances": "vreid.retrieval.distance",
    "ensemble": "vreid.retrieval.distance",
    "rerank": "vreid.retrieval.reranking",
    "original_distance": "vreid.retrieval.reranking",
    "average_by_track": "vreid.retrieval.tracks",
    "has_tracks": "vreid.retrieval.tracks",
    "evaluate": "vreid.retrieval.metrics",
    "write_submission": "vreid.retrieval.submission",
    "top_indices": "vreid.retrieval.submission",
    "check_submission": "vreid.retrieval.submission",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vreid.retrieval' has no attribute {name!r}")
