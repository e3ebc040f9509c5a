"""Batched feature extraction with a model, and query/gallery evaluation during training.

:func:`extract_features` is the one place features are computed: the training loop's evaluation
and :class:`vreid.retrieval.Extractor` both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vreid.datasets.records import ImageRecord
from vreid.progress import progress_bar
from vreid.training.data import worker_errors


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: DataLoader | Sequence[Any],
    device: torch.device,
    *,
    flip: bool = False,
    normalize: bool = True,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    description: str = "features",
    transient: bool = False,
) -> torch.Tensor:
    """Features of every image the loader yields, in order: float32 CPU tensor (N, D).

    The loader yields image batches (B, 3, H, W), or tuples whose first item is the batch. With
    ``flip`` the features of each image and its mirror image are averaged; with ``normalize`` each
    row is scaled to unit L2 norm (after the flip average). The model is run in eval mode and its
    previous mode is restored.
    """
    was_training = model.training
    model.eval()
    chunks: list[torch.Tensor] = []
    total = len(loader) if hasattr(loader, "__len__") else None
    autocast = torch.autocast(
        device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    )
    try:
        with worker_errors(), progress_bar(disable=not progress, transient=transient) as bar:
            task = bar.add_task(description, total=total, info="")
            for batch in loader:
                images = batch[0] if isinstance(batch, list | tuple) else batch
                images = images.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast:
                    feats = model(images).float()
                    if flip:
                        feats = (feats + model(images.flip(-1)).float()) / 2
                if normalize:
                    feats = F.normalize(feats, dim=1)
                chunks.append(feats.cpu())
                bar.advance(task)
    finally:
        model.train(was_training)
    if not chunks:
        dim = getattr(model, "feature_dim", 0)
        return torch.zeros((0, int(dim)), dtype=torch.float32)
    return torch.cat(chunks)


def eval_loader(
    dataset: Dataset, *, batch_size: int, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    """An ordered, non-shuffling loader with its own generator (it never draws from the global RNG,
    so evaluating does not change what a training run does next)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
    )


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
    from vreid.retrieval import evaluate, pairwise_distances
    from vreid.training.data import ReidImageDataset
    from vreid.training.transforms import build_transforms

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
