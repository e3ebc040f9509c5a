"""The attribute model at inference: load a checkpoint, predict colour/type, write the per-head
penultimate features that metadata re-ranking uses (:func:`extract_attribute_features`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vreid.core.artefacts import refuse_overwrite
from vreid.core.devices import resolve_device
from vreid.core.errors import CheckpointError
from vreid.core.progress import progress_bar
from vreid.data import ImageRecord
from vreid.data.image_datasets import ReidImageDataset
from vreid.data.transforms import build_transforms
from vreid.inference.extract import eval_loader
from vreid.inference.features import save_features
from vreid.models.attributes import AttributeModel
from vreid.models.checkpoint import build_from_arch, load_checkpoint, load_state_dict_checked

_LIGHT_AUGMENT = {"brightness": 0.0, "contrast": 0.0, "pca_p": 0.0, "erasing_p": 0.0}


FEATURE_KINDS: tuple[str, ...] = ("color", "type", "color_probs", "type_probs")
"""Sub-folders of an attribute feature directory: per-head features, then per-head probabilities."""


ATTRIBUTE_CHECKPOINT = "checkpoints/attributes.pt"
"""Path of the final attribute-model checkpoint inside a ``train_attributes`` output folder."""


def attribute_transforms(
    image_size: Sequence[int], *, train: bool, augment: str = "reid"
) -> Callable:

    options = _LIGHT_AUGMENT if (train and augment == "light") else {}
    return build_transforms(tuple(image_size), train=train, **options)


@torch.no_grad()
def predict_attributes(
    model: AttributeModel,
    records: Sequence[ImageRecord],
    image_size: Sequence[int],
    *,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run both heads over ``records`` (eval transforms, record order).

    Returns float32 arrays ``{"color": (N, E), "type": (N, E), "color_probs": (N, Cc),
    "type_probs": (N, Ct)}``: each head's penultimate features and class probabilities.
    """

    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    data = ReidImageDataset(
        records, attribute_transforms(image_size, train=False), require_ids=False
    )
    loader = eval_loader(
        data, batch_size=batch_size, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    kinds = ("color", "type", "color_probs", "type_probs")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    try:
        with progress_bar(disable=not progress) as bar:
            task = bar.add_task("attribute features", total=len(loader), info="")
            for images, _, _ in loader:
                out = model.attributes(images.to(dev, non_blocking=True))
                parts["color"].append(out.color_features.float().cpu())
                parts["type"].append(out.type_features.float().cpu())
                parts["color_probs"].append(out.color_logits.float().softmax(1).cpu())
                parts["type_probs"].append(out.type_logits.float().softmax(1).cpu())
                bar.advance(task)
    finally:
        model.train(was_training)
    widths = {
        "color": model.embed_dim,
        "type": model.embed_dim,
        "color_probs": model.color_head.classifier.out_features,
        "type_probs": model.type_head.classifier.out_features,
    }
    return {
        k: (torch.cat(v).numpy() if v else np.zeros((0, widths[k]))).astype(np.float32)
        for k, v in parts.items()
    }


def attribute_arch(model: AttributeModel) -> dict[str, Any]:
    return {
        "name": "attributes",
        "num_classes": model.num_classes,
        "backbone": model.backbone,
        "last_stride": model.last_stride,
        "eval_features": model.eval_features,
        "embed_dim": model.embed_dim,
        "num_colors": model.color_head.classifier.out_features,
        "num_types": model.type_head.classifier.out_features,
    }


def load_attribute_model(
    checkpoint: str | os.PathLike[str], *, require_heads: bool = True
) -> tuple[AttributeModel, dict[str, Any]]:
    """Rebuild an :class:`AttributeModel` from a checkpoint (``weights_only=True``).

    Returns ``(model in eval mode on the CPU, checkpoint dict)``. Raises :class:`CheckpointError`
    for missing or foreign checkpoints and, with ``require_heads``, for one whose colour/type
    heads were never trained.
    """

    ckpt = load_checkpoint(checkpoint)
    if ckpt["arch"].get("name") != "attributes":
        raise CheckpointError(
            f"{checkpoint}: a {ckpt['arch'].get('name')!r} checkpoint, not an attribute model; "
            "pass the checkpoints/attributes.pt written by `vreid train-attributes`"
        )
    if require_heads and not ckpt.get("heads_trained", False):
        raise CheckpointError(
            f"{checkpoint}: the colour/type heads of this attribute model were never trained (its "
            "data had no colour/type labels); train it on labelled data (AIC simulation, VeRi-776)"
        )
    model = build_from_arch(ckpt["arch"])
    load_state_dict_checked(model, ckpt["model"], checkpoint)
    assert isinstance(model, AttributeModel)
    return model.eval(), ckpt


def attribute_features(
    checkpoint: str | os.PathLike[str],
    records: Sequence[ImageRecord],
    *,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """:func:`predict_attributes` with the model of ``checkpoint`` at the image size it was trained
    at: ``{"color": (N, E), "type": (N, E), "color_probs": (N, Cc), "type_probs": (N, Ct)}``."""
    model, ckpt = load_attribute_model(checkpoint)
    model_cfg = (ckpt.get("config") or {}).get("model") or {}
    image_size = tuple(model_cfg.get("image_size", (224, 224)))
    return predict_attributes(
        model,
        records,
        image_size,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )


def extract_attribute_features(
    checkpoint: str | os.PathLike[str],
    records: Sequence[ImageRecord],
    out_dir: str | os.PathLike[str],
    split: str,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the attribute features of ``records`` (record order) for ``split``.

    Files (via :func:`vreid.inference.features.save_features`, each beside a ``.names.txt``):
    ``<out_dir>/color/<split>.npy`` (N, E) and ``<out_dir>/type/<split>.npy`` (N, E), the
    penultimate features of each head, and ``<out_dir>/color_probs/<split>.npy`` (N, Cc),
    ``<out_dir>/type_probs/<split>.npy`` (N, Ct), the predicted class probabilities (class order:
    :data:`~vreid.data.attributes.ATTRIBUTE_CLASSES`). Existing files are an error unless
    ``overwrite``. Returns ``{kind: npy path}``.
    """

    out = Path(out_dir)
    for kind in FEATURE_KINDS:
        refuse_overwrite(out / kind / f"{split}.npy", overwrite=overwrite)
    outputs = attribute_features(
        checkpoint,
        records,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    names = [r.name for r in records]
    return {k: save_features(out / k / split, outputs[k], names) for k in FEATURE_KINDS}
