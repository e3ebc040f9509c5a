"""Batched feature extraction with a model, and query/gallery evaluation during training.

:func:`extract_features` is the one place features are computed: the training loop's evaluation
and :class:`vreid.retrieval.Extractor` both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vreid.data.image_datasets import ReidImageDataset
from vreid.data.records import ImageRecord
from vreid.data.transforms import build_transforms
from vreid.inference.extract import eval_loader, extract_features
from vreid.retrieval.distance import pairwise_distances
from vreid.retrieval.metrics import evaluate


def evaluate_model(
    model: nn.Module,
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    *,
    image_size: tuple[int, int],
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    flip: bool = False,
    normalize: bool = True,
    protocol: str = "aic",
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """mAP, CMC and mINP of ``model`` on a query/gallery split with ground-truth vehicle ids.

    Features come from :func:`extract_features`; distances and metrics from
    :mod:`vreid.retrieval` (``pairwise_distances``, ``evaluate`` with ``protocol``).
    """

    transform = build_transforms(tuple(image_size), train=False)
    feats = []
    for name, records in (("query", query), ("gallery", gallery)):
        ds = ReidImageDataset(records, transform, require_ids=False)
        loader = eval_loader(
            ds, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda"
        )
        feats.append(
            extract_features(
                model,
                loader,
                device,
                flip=flip,
                normalize=normalize,
                amp_dtype=amp_dtype,
                progress=progress,
                description=f"eval {name}",
                transient=True,
            )
        )
    distmat = pairwise_distances(feats[0].numpy(), feats[1].numpy())
    q_ids = [int(r.vehicle_id) for r in query]  # type: ignore[arg-type]
    g_ids = [int(r.vehicle_id) for r in gallery]  # type: ignore[arg-type]
    cams_known = all(r.camera is not None for r in (*query, *gallery))
    q_cams = [int(r.camera) for r in query] if cams_known else None  # type: ignore[arg-type]
    g_cams = [int(r.camera) for r in gallery] if cams_known else None  # type: ignore[arg-type]
    return evaluate(distmat, q_ids, g_ids, q_cams, g_cams, protocol=protocol)
