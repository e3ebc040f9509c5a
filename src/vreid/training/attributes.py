"""Training and feature extraction of the attribute model (paper sections 3.2.2 and 4).

:func:`train_attributes` runs the paper's two steps on a dataset with colour/type labels (AIC
simulation XML, VeRi-776 label files, our synthetic data):

1. **re-id** — the attribute model's backbone and re-id head learn identities with triplet +
   softmax through the team's training loop (:func:`vreid.training.loop.train`);
2. **attributes** — softmax-only fine-tuning of the colour and type heads (paper: lr 0.002, × 0.5
   every 20 epochs), with the clustered classes of :mod:`vreid.datasets.attributes` (images of an
   excluded colour are left out of the colour loss).

A seeded fraction of the labelled *identities* is held out of both steps; the per-class accuracy
and confusion matrices on them are written as ``attribute_metrics.json`` and
``confusion_{color,type}.png``.

:func:`extract_attribute_features` writes, per head, the penultimate features (the metadata
re-ranking uses Euclidean distances between them) and the predicted class probabilities.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vreid.artefacts import atomic_path, write_json_atomic
from vreid.config import Config, save_config
from vreid.datasets import ImageRecord, load_dataset
from vreid.datasets.attributes import (
    ATTRIBUTE_CLASSES,
    IGNORE_INDEX,
    attribute_targets,
)
from vreid.errors import CheckpointError, ConfigError, DatasetError, VreidError
from vreid.models.attributes import AttributeModel

log = logging.getLogger(__name__)

HEADS: tuple[str, ...] = ("color", "type")
ATTRIBUTE_CHECKPOINT = "checkpoints/attributes.pt"
"""Path of the final attribute-model checkpoint inside a ``train_attributes`` output folder."""


@dataclass
class AttributeTrainResult:
    """What :func:`train_attributes` produced."""

    out_dir: Path
    checkpoint: Path
    """The final checkpoint (re-id head and, when labels exist, trained attribute heads)."""
    heads_trained: bool
    """False when the data had no colour/type labels (only the re-id step ran)."""
    metrics: dict[str, Any] | None = None
    """Content of ``attribute_metrics.json`` (held-out accuracies), or None."""
    holdout_ids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# data


class _LabelledImages(Dataset):
    """Images of ``records`` through ``transform`` with an integer target array per head."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable[[Image.Image], torch.Tensor],
        targets: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.targets = targets or {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, int]]:
        rec = self.records[i]
        try:
            with Image.open(rec.path) as im:
                image = im.convert("RGB")
        except OSError as err:
            raise DatasetError(f"{rec.path}: cannot read image ({err})") from None
        return self.transform(image), {k: int(v[i]) for k, v in self.targets.items()}


def _transforms(image_size: tuple[int, int], *, train: bool) -> Callable:
    from vreid.training.transforms import build_transforms

    return build_transforms(tuple(image_size), train=train)


def split_holdout(
    records: Sequence[ImageRecord], fraction: float, *, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord], list[int]]:
    """Split records by identity: ``(train, held_out, held_out_ids)``.

    ``round(fraction · ids)`` identities (at least one when ``fraction > 0`` and there are two or
    more ids) are drawn with ``seed``; every image of a held-out identity goes to ``held_out``.
    """
    ids = sorted({r.vehicle_id for r in records if r.vehicle_id is not None})
    n_hold = round(fraction * len(ids))
    if fraction > 0 and len(ids) >= 2:
        n_hold = min(max(n_hold, 1), len(ids) - 1)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(np.array(ids, dtype=np.int64), size=n_hold, replace=False).tolist())
    train = [r for r in records if r.vehicle_id not in held]
    hold = [r for r in records if r.vehicle_id in held]
    return train, hold, sorted(held)


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


# ---------------------------------------------------------------------------------------------
# step 2: softmax-only fine-tuning of the colour and type heads


def _head_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the non-ignored targets; 0 (with a graph) when all are ignored."""
    kept = target != IGNORE_INDEX
    if not bool(kept.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[kept], target[kept])


def finetune_heads(
    model: AttributeModel,
    records: Sequence[ImageRecord],
    targets: dict[str, np.ndarray],
    config: Config,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
    log_every: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Step 2: train the colour and type heads with softmax alone (in place).

    ``targets``: ``{"color": (N,), "type": (N,)}`` class indices, :data:`IGNORE_INDEX` where an
    image is left out of that head's loss. Returns one ``{"loss", "color", "type"}`` mean per epoch.
    """
    cfg = config.attributes
    dev = _device(device)
    model.to(dev)
    keep = (targets["color"] != IGNORE_INDEX) | (targets["type"] != IGNORE_INDEX)
    idx = np.flatnonzero(keep)
    recs = [records[i] for i in idx]
    tg = {k: v[idx] for k, v in targets.items()}
    if len(recs) < 2:
        raise DatasetError("attribute fine-tuning needs at least two labelled training images")
    data = _LabelledImages(recs, _transforms(cfg.image_size, train=True), tg)
    generator = torch.Generator().manual_seed(cfg.seed)
    batch_size = min(cfg.batch_size, len(recs))
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,  # BatchNorm needs more than one sample
        generator=generator,
        num_workers=min(4, os.cpu_count() or 1) if dev.type == "cuda" else 0,
        pin_memory=dev.type == "cuda",
    )
    heads = [model.color_head, model.type_head]
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Parameter] = []
    for module in [*heads, *([model.trunk] if cfg.finetune_backbone else [])]:
        for p in module.parameters():
            p.requires_grad_(True)
            trainable.append(p)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            trainable, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
        )
    else:
        opt = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    history: list[dict[str, float]] = []
    with _progress(progress) as bar:
        task = bar.add_task("attributes: fine-tuning heads", total=cfg.epochs * len(loader))
        for epoch in range(cfg.epochs):
            model.train()
            if not cfg.finetune_backbone:
                model.trunk.eval()  # frozen: keep its BatchNorm statistics
            sums = {"loss": 0.0, "color": 0.0, "type": 0.0}
            for images, batch_targets in loader:
                images = images.to(dev, non_blocking=True)
                out = model.attributes(images)
                lc = _head_loss(out.color_logits, batch_targets["color"].to(dev))
                lt = _head_loss(out.type_logits, batch_targets["type"].to(dev))
                loss = lc + lt
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums["loss"] += float(loss)
                sums["color"] += float(lc)
                sums["type"] += float(lt)
                bar.advance(task)
            sched.step()
            means = {k: v / max(len(loader), 1) for k, v in sums.items()}
            history.append(means)
            log.info(
                "attributes epoch %d/%d: loss %.4f (colour %.4f, type %.4f)",
                epoch + 1,
                cfg.epochs,
                means["loss"],
                means["color"],
                means["type"],
            )
            if log_every is not None:
                log_every(epoch, means)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return history


# ---------------------------------------------------------------------------------------------
# outputs of the heads, accuracy, confusion matrices


@torch.no_grad()
def predict_attributes(
    model: AttributeModel,
    records: Sequence[ImageRecord],
    image_size: tuple[int, int],
    *,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run both heads over ``records`` (eval transforms, record order).

    Returns ``{"color": (N, E), "type": (N, E), "color_probs": (N, Cc), "type_probs": (N, Ct)}``
    as float32 arrays.
    """
    dev = _device(device)
    model.to(dev).eval()
    data = _LabelledImages(records, _transforms(image_size, train=False))
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=min(4, os.cpu_count() or 1) if dev.type == "cuda" else 0,
    )
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("color", "type", "color_probs", "type_probs")
    }
    with _progress(progress) as bar:
        task = bar.add_task("attributes: extracting", total=len(records))
        for images, _ in loader:
            out = model.attributes(images.to(dev, non_blocking=True))
            parts["color"].append(out.color_features.float().cpu().numpy())
            parts["type"].append(out.type_features.float().cpu().numpy())
            parts["color_probs"].append(out.color_logits.float().softmax(1).cpu().numpy())
            parts["type_probs"].append(out.type_logits.float().softmax(1).cpu().numpy())
            bar.advance(task, len(images))
    widths = {
        "color": model.embed_dim,
        "type": model.embed_dim,
        "color_probs": model.color_head.classifier.out_features,
        "type_probs": model.type_head.classifier.out_features,
    }
    return {
        k: (np.concatenate(v) if v else np.zeros((0, widths[k]))).astype(np.float32)
        for k, v in parts.items()
    }


def classification_report(
    probs: np.ndarray, targets: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and confusion matrix of one head.

    ``probs`` (N, C), ``targets`` (N,) with :data:`IGNORE_INDEX` rows left out. The confusion
    matrix has true classes as rows and predictions as columns. ``majority_baseline`` is the
    accuracy of always answering the most frequent held-out class; ``uniform_chance`` is 1/C.
    """
    kept = targets != IGNORE_INDEX
    y = targets[kept]
    pred = probs[kept].argmax(1) if kept.any() else np.zeros(0, dtype=np.int64)
    c = len(classes)
    confusion = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    support = confusion.sum(1)
    correct = np.diag(confusion)
    per_class = {
        name: (float(correct[i] / support[i]) if support[i] else None)
        for i, name in enumerate(classes)
    }
    n = int(kept.sum())
    return {
        "classes": list(classes),
        "images": n,
        "accuracy": float(correct.sum() / n) if n else None,
        "balanced_accuracy": (
            float(np.mean([v for v in per_class.values() if v is not None])) if n else None
        ),
        "majority_baseline": float(support.max() / n) if n else None,
        "uniform_chance": 1.0 / c,
        "per_class_accuracy": per_class,
        "support": {name: int(support[i]) for i, name in enumerate(classes)},
        "confusion": confusion.tolist(),
    }


def plot_confusion(report: dict[str, Any], path: str | os.PathLike[str], title: str) -> Path:
    """Write the confusion matrix of :func:`classification_report` as a PNG (rows normalised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(report["confusion"], dtype=np.float64)
    classes = report["classes"]
    rows = counts.sum(1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.2 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = report["accuracy"]
    ax.set_title(f"{title} (accuracy {acc:.1%})" if acc is not None else title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(counts[i, j])),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _arch(model: AttributeModel) -> dict[str, Any]:
    return {
        "name": "attributes",
        "num_classes": model.num_classes,
        "backbone": model.backbone,
        "last_stride": model.last_stride,
        "embed_dim": model.embed_dim,
        "num_colors": model.color_head.classifier.out_features,
        "num_types": model.type_head.classifier.out_features,
    }


def save_attribute_checkpoint(
    model: AttributeModel,
    path: str | os.PathLike[str],
    config: Config,
    *,
    heads_trained: bool,
    epoch: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the attribute model's checkpoint atomically (``arch``, ``model``, ``config``, …)."""
    state = {
        "arch": _arch(model),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config.model_dump(mode="json"),
        "epoch": epoch,
        "stage": "attributes",
        "heads_trained": heads_trained,
        "classes": {k: list(v) for k, v in ATTRIBUTE_CLASSES.items()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_attribute_model(
    checkpoint: str | os.PathLike[str], *, require_heads: bool = True
) -> tuple[AttributeModel, dict[str, Any]]:
    """Rebuild an :class:`AttributeModel` from a checkpoint (``weights_only=True``).

    Returns ``(model (eval mode, on CPU), checkpoint dict)``. Raises :class:`CheckpointError` for
    missing or foreign checkpoints, and (with ``require_heads``) for a checkpoint whose colour/type
    heads were never trained.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    arch = ckpt.get("arch") if isinstance(ckpt, dict) else None
    if not isinstance(arch, dict) or arch.get("name") != "attributes":
        name = arch.get("name") if isinstance(arch, dict) else None
        raise CheckpointError(
            f"{path}: not an attribute-model checkpoint (arch {name!r}); "
            "pass the checkpoints/attributes.pt written by `vreid train-attributes`"
        )
    if require_heads and not ckpt.get("heads_trained", False):
        raise CheckpointError(
            f"{path}: the colour/type heads of this attribute model were never trained (its data "
            "had no colour/type labels); train it on labelled data (AIC simulation, VeRi-776)"
        )
    options = {k: v for k, v in arch.items() if k not in ("name", "num_classes")}
    model = AttributeModel(num_ids=int(arch["num_classes"]), pretrained=None, **options)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: weights do not match the recorded arch ({err})") from None
    model.eval()
    return model, ckpt


# ---------------------------------------------------------------------------------------------
# the stage


def _labelled_root(config: Config) -> Path:
    root = config.attributes.data_root or config.data.sim_root
    if root is None:
        raise ConfigError(
            "attributes.data_root (or data.sim_root) is not set: the attribute model needs a "
            "dataset with colour/type labels (AIC simulation layout or VeRi-776)"
        )
    return Path(root)


def train_attributes(
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> AttributeTrainResult:
    """Train the attribute model in the paper's two steps; write its checkpoint and metrics.

    Reads the train split of ``attributes.data_root`` (or ``data.sim_root``). Writes into
    ``out_dir``: ``config.yaml``, ``reid/`` (step 1's training-loop folder), ``holdout_ids.txt``,
    ``checkpoints/attributes.pt``, and when the data carry colour/type labels
    ``attribute_metrics.json`` and ``confusion_{color,type}.png`` (held-out identities).
    A split without colour/type labels logs a clear message and trains the re-id step alone.
    """
    out = Path(out_dir)
    final = out / ATTRIBUTE_CHECKPOINT
    if final.exists() and not overwrite:
        raise VreidError(f"{final} already exists; choose another --out folder or pass --overwrite")
    cfg = config.attributes
    root = _labelled_root(config)
    dataset = load_dataset(root, cfg.format)
    records = dataset.splits.get("train", [])
    if not records:
        raise DatasetError(
            f"{root}: the train split is empty; nothing to train the attribute model on"
        )
    targets = attribute_targets(records, source=str(root))
    labelled = {k: int((v != IGNORE_INDEX).sum()) for k, v in targets.items()}
    heads_trained = any(labelled.values())
    if not heads_trained:
        log.warning(
            "%s: no colour/type labels in the train split (%d images); only the re-id step is "
            "trained and the attribute heads stay untrained. Use a labelled dataset (AIC "
            "simulation train_label.xml with colorID/typeID, or VeRi-776)",
            root,
            len(records),
        )
    if not cfg.reid and not heads_trained:
        raise ConfigError(
            f"attributes.reid is false and {root} has no colour/type labels: nothing to train"
        )
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    frac = cfg.holdout_fraction if heads_trained else 0.0
    train_recs, held_recs, held_ids = split_holdout(records, frac, seed=cfg.seed)
    from vreid.artefacts import write_text_atomic

    write_text_atomic(out / "holdout_ids.txt", "".join(f"{i}\n" for i in held_ids))

    # step 1: re-id
    if cfg.reid:
        model = _train_reid_step(config, train_recs, root, out / "reid", device=device)
    else:
        num_ids = len({r.vehicle_id for r in train_recs})
        torch.manual_seed(cfg.seed)
        model = _build(config, num_ids)
    metrics: dict[str, Any] | None = None
    history: list[dict[str, float]] = []
    if heads_trained:
        torch.manual_seed(cfg.seed)
        train_targets = attribute_targets(train_recs)
        history = finetune_heads(
            model, train_recs, train_targets, config, device=device, progress=progress
        )
        metrics = {
            "data_root": str(root),
            "holdout_ids": len(held_ids),
            "holdout_images": len(held_recs),
            "train_ids": len({r.vehicle_id for r in train_recs}),
            "train_images": len(train_recs),
            "labelled_images": labelled,
        }
        if held_recs:
            held_targets = attribute_targets(held_recs)
            outputs = predict_attributes(
                model, held_recs, cfg.image_size, device=device, progress=progress
            )
            for head in HEADS:
                report = classification_report(
                    outputs[f"{head}_probs"], held_targets[head], ATTRIBUTE_CLASSES[head]
                )
                metrics[head] = report
                plot_confusion(
                    report,
                    out / f"confusion_{head}.png",
                    f"{'colour' if head == 'color' else 'type'}, held-out identities",
                )
        else:
            log.warning("attributes: no identities held out; no accuracy is reported")
        metrics["config"] = config.model_dump(mode="json")
        write_json_atomic(out / "attribute_metrics.json", metrics)
    save_attribute_checkpoint(
        model,
        final,
        config,
        heads_trained=heads_trained,
        epoch=cfg.epochs if heads_trained else 0,
        extra={"history": history, "holdout_ids": held_ids},
    )
    return AttributeTrainResult(out, final, heads_trained, metrics, held_ids)


def _build(config: Config, num_ids: int) -> AttributeModel:
    from vreid.models import build_model

    cfg = config.attributes
    model = build_model(
        "attributes",
        num_ids,
        backbone=cfg.backbone,
        last_stride=cfg.last_stride,
        pretrained=cfg.pretrained,
        embed_dim=cfg.embed_dim,
    )
    assert isinstance(model, AttributeModel)
    return model


def _train_reid_step(
    config: Config,
    records: Sequence[ImageRecord],
    root: Path,
    out_dir: Path,
    *,
    device: str | torch.device,
) -> AttributeModel:
    """Step 1: re-id training of the attribute model with the team's training loop."""
    raise NotImplementedError("waiting for vreid.training.loop")


# ---------------------------------------------------------------------------------------------
# extraction


def extract_attribute_features(
    checkpoint: str | os.PathLike[str],
    records: Sequence[ImageRecord],
    out_dir: str | os.PathLike[str],
    split: str,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the attribute features of ``records`` (record order) for ``split``.

    Files (via :func:`vreid.retrieval.features.save_features`, each with ``.names.txt``):
    ``<out_dir>/color/<split>.npy`` (N, E) and ``<out_dir>/type/<split>.npy`` (N, E) — the
    penultimate features of each head — and ``<out_dir>/color_probs/<split>.npy`` (N, Cc),
    ``<out_dir>/type_probs/<split>.npy`` (N, Ct) — the predicted class probabilities.
    Returns ``{kind: npy path}``.
    """
    from vreid.retrieval.features import save_features

    out = Path(out_dir)
    kinds = ("color", "type", "color_probs", "type_probs")
    targets = {k: out / k / f"{split}.npy" for k in kinds}
    existing = [p for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise VreidError(
            f"{existing[0]} already exists; choose another output folder or pass --overwrite"
        )
    model, ckpt = load_attribute_model(checkpoint)
    image_size = tuple(ckpt.get("config", {}).get("attributes", {}).get("image_size", (224, 224)))
    outputs = predict_attributes(
        model, records, image_size, device=device, batch_size=batch_size, progress=progress
    )
    names = [r.name for r in records]
    return {k: save_features(out / k / split, outputs[k], names) for k in kinds}


__all__ = [
    "ATTRIBUTE_CHECKPOINT",
    "HEADS",
    "AttributeTrainResult",
    "classification_report",
    "extract_attribute_features",
    "finetune_heads",
    "load_attribute_model",
    "plot_confusion",
    "predict_attributes",
    "save_attribute_checkpoint",
    "split_holdout",
    "train_attributes",
]
