"""Training of the attribute model (paper sections 3.2.2 and 4).

:func:`train_attributes` runs the paper's two steps on a dataset with colour/type labels (AIC
simulation XML, VeRi-776 label files, our synthetic data):

1. **re-id** — the attribute model's backbone and re-id head learn identities with triplet +
   softmax through the re-id training (:func:`vreid.engine.reid.train`), in ``OUT/reid/``;
2. **attributes** — softmax-only fine-tuning of the colour and type heads (paper: lr 0.002, × 0.5
   every 20 epochs), with the clustered classes of :mod:`vreid.data.attributes` (images of an
   excluded colour are left out of the colour loss): :func:`finetune_heads`, the shared
   :class:`~vreid.engine.trainer.Trainer` with the :class:`AttributeStep`, in ``OUT/heads/``
   (``checkpoints/last.pt``, ``history.json``, ``tensorboard/``).

A seeded fraction of the labelled *identities* is held out of both steps; the per-class accuracy
and confusion matrices on them are written as ``attribute_metrics.json`` and
``confusion_{color,type}.png``. A killed run continues with ``resume=True`` from the last epoch
either step saved, and ends with the weights of an uninterrupted run. Extraction of the heads'
features is :func:`vreid.inference.attributes.extract_attribute_features`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vreid.core.artefacts import new_run_dir, write_json_atomic, write_text_atomic
from vreid.core.config import Config, save_config
from vreid.core.errors import CheckpointError, ConfigError, DatasetError
from vreid.core.figures import plot_confusion
from vreid.data import ImageRecord, ReidDataset, load_from_config
from vreid.data.attributes import ATTRIBUTE_CLASSES, IGNORE_INDEX, attribute_targets
from vreid.data.image_datasets import ReidImageDataset, holdout_query_gallery, split_holdout
from vreid.engine.reid import train
from vreid.engine.trainer import (
    EvalHook,
    GeneratorState,
    HookBase,
    Trainer,
    TrainStep,
    run_dir_hooks,
    seed_rng,
    seeded_generator,
    training_device,
)
from vreid.inference.attributes import (
    ATTRIBUTE_CHECKPOINT,
    attribute_arch,
    attribute_transforms,
    predict_attributes,
)
from vreid.models import build_model
from vreid.models.attributes import AttributeModel
from vreid.models.checkpoint import (
    check_arch,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)

log = logging.getLogger("vreid.engine")


@dataclass
class AttributeTrainResult:
    """What :func:`train_attributes` produced."""

    out_dir: Path
    checkpoint: Path
    """The final checkpoint (re-id head and, when labels exist, trained attribute heads)."""
    heads_trained: bool
    """False when the data had no colour/type labels (only the re-id step ran)."""
    metrics: dict[str, Any] | None = None
    """Content of ``attribute_metrics.json`` (held-out accuracies under ``color``/``type``)."""
    holdout_ids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# step 2: softmax-only fine-tuning of the colour and type heads


def _head_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy over the non-ignored targets (``weight``: (C,) per-class weights, a weighted
    mean); 0 (with a graph) when all are ignored."""
    kept = target != IGNORE_INDEX
    if not bool(kept.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[kept], target[kept], weight=weight)


def balanced_class_weights(target: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights (C,) float32 inversely proportional to each class's number of labelled
    images (``attributes.class_balance``), scaled so that the labelled images' mean weight is 1;
    absent classes get 0 (they never occur as a target)."""
    known = target[target != IGNORE_INDEX]
    counts = np.bincount(known, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = len(known) / (present.sum() * counts[present])
    return weights.astype(np.float32)


class AttributeStep(TrainStep):
    """The attribute step: softmax on the colour and type heads.

    Loader batches are ``(images (B, 3, H, W) float32, labels, indices (B,) int64)`` of a
    ``ReidImageDataset``; each head's targets are ``targets[head][indices]`` (class indices,
    :data:`IGNORE_INDEX` where an image does not count for that head). Loss: the sum of the two
    heads' cross-entropies (float32); parts ``color``, ``type``.
    """

    name = "attribute heads"
    advice = "lower attributes.lr or switch train.amp off"
    epochs_key = "attributes.epochs"

    def __init__(
        self,
        targets: dict[str, torch.Tensor],
        *,
        finetune_backbone: bool,
        class_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.targets = targets
        self.finetune_backbone = finetune_backbone
        self.class_weights = class_weights or {}

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        if not self.finetune_backbone:
            model.trunk.eval()  # frozen: keep its BatchNorm statistics

    def move(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, ...]:
        images, _, index = batch
        return (
            images.to(device, non_blocking=True),
            self.targets["color"][index].to(device),
            self.targets["type"][index].to(device),
        )

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> Any:
        return model.attributes(batch[0])

    def loss(
        self, output: Any, batch: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = {k: v.to(output.color_logits.device) for k, v in self.class_weights.items()}
        lc = _head_loss(output.color_logits.float(), batch[1], w.get("color"))
        lt = _head_loss(output.type_logits.float(), batch[2], w.get("type"))
        return lc + lt, {"color": lc, "type": lt}


def finetune_heads(
    model: AttributeModel,
    records: Sequence[ImageRecord],
    targets: dict[str, np.ndarray],
    config: Config,
    *,
    progress: bool = True,
    run_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    hooks: Sequence[HookBase] = (),
) -> list[dict[str, Any]]:
    """Step 2: train the colour and type heads with softmax alone (in place).

    ``targets``: ``{"color": (N,), "type": (N,)}`` class indices, :data:`IGNORE_INDEX` where an
    image is left out of that head's loss (images with neither label are skipped). Keys used:
    ``attributes.{epochs, lr, step_size, gamma, optimizer, weight_decay, batch_size,
    finetune_backbone, class_balance, image_size, augment, seed}``, ``train.{num_workers, amp}``,
    ``runtime.device``. Torch's RNG is seeded with ``attributes.seed`` as training starts.

    ``run_dir``: where the trainer keeps ``checkpoints/last.pt``, ``history.json`` and
    ``tensorboard/`` (None: nothing is written). ``resume``: continue from
    ``run_dir/checkpoints/last.pt`` when there is one. ``hooks``: more trainer hooks (e.g. an
    :class:`~vreid.engine.trainer.EvalHook`). Returns one record per epoch: ``epoch``, ``loss``,
    ``color``, ``type`` (mean losses), ``lr``, ``images_per_s``, ``iterations`` and what hooks
    added.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite.
    """

    cfg = config.attributes
    dev = training_device(config.runtime.device)  # fixed input size: cuDNN autotunes
    model.to(dev)
    keep = np.flatnonzero((targets["color"] != IGNORE_INDEX) | (targets["type"] != IGNORE_INDEX))
    if len(keep) < 2:
        raise DatasetError("attribute fine-tuning needs at least two labelled training images")
    recs = [records[i] for i in keep]
    target_t = {k: torch.from_numpy(v[keep]) for k, v in targets.items()}
    data = ReidImageDataset(
        recs,
        attribute_transforms(cfg.image_size, train=True, augment=cfg.augment),
        require_ids=False,
    )
    loader = DataLoader(
        data,
        batch_size=min(cfg.batch_size, len(recs)),
        shuffle=True,
        drop_last=True,  # BatchNorm needs more than one sample per batch
        generator=seeded_generator(cfg.seed),
        num_workers=config.train.num_workers,
        pin_memory=dev.type == "cuda",
    )
    for p in model.parameters():
        p.requires_grad_(False)
    modules: list[nn.Module] = [model.color_head, model.type_head]
    if cfg.finetune_backbone:
        modules.append(model.trunk)
    trainable = [p for m in modules for p in m.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            trainable, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
        )
    else:
        opt = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    arch = attribute_arch(model)
    class_weights = (
        {
            head: torch.from_numpy(
                balanced_class_weights(
                    target_t[head].numpy(), getattr(model, f"{head}_head").classifier.out_features
                )
            )
            for head in ("color", "type")
        }
        if cfg.class_balance
        else None
    )
    trainer = Trainer(
        AttributeStep(
            target_t, finetune_backbone=cfg.finetune_backbone, class_weights=class_weights
        ),
        model,
        opt,
        sched,
        loader,
        epochs=cfg.epochs,
        device=dev,
        amp=config.train.amp,
        seed=cfg.seed,
        # the loader's shuffling generator: each epoch's order continues from it
        state={"loader_generator": GeneratorState(loader.generator)},
        meta={
            "arch": arch,
            "config": reid_step_config(config).model_dump(mode="json"),
            "stage": "attribute-heads",
        },
        hooks=[*(run_dir_hooks(run_dir) if run_dir is not None else []), *hooks],
        progress=progress,
    )
    if resume:
        if run_dir is None:
            raise ConfigError("finetune_heads: resume=True needs the run_dir to resume from")
        last = Path(run_dir) / "checkpoints" / "last.pt"
        if last.is_file():
            state = load_checkpoint(last)
            check_arch(state["arch"], arch, last)
            trainer.load_state_dict(state, last)
    try:
        return trainer.train()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.head.neck.bias.requires_grad_(False)
        model.eval()


# ---------------------------------------------------------------------------------------------
# outputs of the heads, accuracy, confusion matrices


def classification_report(
    probs: np.ndarray, targets: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and confusion matrix of one head.

    ``probs`` (N, C), ``targets`` (N,); rows whose target is :data:`IGNORE_INDEX` are left out.
    The confusion matrix has true classes as rows and predictions as columns.
    ``balanced_accuracy`` is the mean per-class accuracy over the classes present;
    ``balanced_chance`` (1 / classes present) is what any constant answer gets on it.
    ``majority_baseline`` is the accuracy of always answering the most frequent class of these
    images; ``uniform_chance`` is 1/C.
    """
    kept = targets != IGNORE_INDEX
    y = targets[kept].astype(np.int64)
    c = len(classes)
    pred = probs[kept].argmax(1).astype(np.int64)
    confusion = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    support = confusion.sum(1)
    correct = np.diag(confusion)
    per_class = {
        name: (float(correct[i] / support[i]) if support[i] else None)
        for i, name in enumerate(classes)
    }
    n = int(kept.sum())
    present = [v for v in per_class.values() if v is not None]
    return {
        "classes": list(classes),
        "images": n,
        "accuracy": float(correct.sum() / n) if n else None,
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "balanced_chance": 1.0 / len(present) if present else None,
        "majority_baseline": float(support.max() / n) if n else None,
        "uniform_chance": 1.0 / c,
        "per_class_accuracy": per_class,
        "support": {name: int(support[i]) for i, name in enumerate(classes)},
        "confusion": confusion.tolist(),
    }


def no_better_than_majority(
    accuracy: float | None, majority: float | None, images: int | None
) -> bool:
    """Whether a head's ``accuracy`` on ``images`` test images is no better than always answering
    the majority class (accuracy ``majority``): not above it by two standard errors of that rate,
    ``2·sqrt(m(1 − m)/n)``, nor by at least two percentage points. ``False`` when a number is
    missing (nothing to compare)."""
    if accuracy is None or majority is None or not images:
        return False
    margin = max(0.02, 2 * math.sqrt(majority * (1 - majority) / images))
    return accuracy - majority < margin


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


def reid_step_config(config: Config) -> Config:
    """The config of step 1: ``model`` = the attribute model (``attributes.backbone`` …), ``train``
    with the ``attributes.reid_*`` schedule; every other key as given."""
    a = config.attributes
    model = config.model.model_copy(
        update={
            "name": "attributes",
            "backbone": a.backbone,
            "pretrained": a.pretrained,
            "last_stride": a.last_stride,
            "image_size": a.image_size,
        }
    )
    train = config.train.model_copy(
        update={
            "epochs": a.reid_epochs,
            "lr": a.reid_lr,
            "step_size": a.reid_step_size,
            "gamma": a.reid_gamma,
            "seed": a.seed,
        }
    )
    return config.model_copy(update={"model": model, "train": train})


def _build(config: Config, num_ids: int, *, pretrained: bool) -> AttributeModel:

    a = config.attributes
    model = build_model(
        "attributes",
        num_ids,
        backbone=a.backbone,
        last_stride=a.last_stride,
        eval_features=config.model.eval_features,
        pretrained=a.pretrained if pretrained else None,
        embed_dim=a.embed_dim,
    )
    assert isinstance(model, AttributeModel)
    return model


def _train_reid_step(
    config: Config,
    root: Path,
    fmt: str,
    train_recs: Sequence[ImageRecord],
    held_recs: Sequence[ImageRecord],
    out_dir: Path,
    *,
    progress: bool,
    resume: bool = False,
) -> tuple[AttributeModel, dict[str, Any]]:
    """Step 1: re-id training of the attribute model with :func:`vreid.engine.reid.train`.

    The held-out identities form the loop's query/gallery (its mAP is reported in ``reid/``).
    ``resume``: continue ``out_dir``'s run from its ``last.pt`` (start it again when it has none).
    Returns the model (attribute heads at their initialisation) and a summary.
    """

    query, gallery = holdout_query_gallery(held_recs)
    splits = {"train": list(train_recs)}
    if query and gallery:
        splits.update(query=query, gallery=gallery)
    dataset = ReidDataset(root=root, format=fmt, splits=splits)
    step_cfg = reid_step_config(config)
    resumable = resume and (out_dir / "checkpoints" / "last.pt").is_file()
    if resume and not resumable and out_dir.exists():
        # killed before its first epoch ended: nothing in it to keep (config, empty event files)
        shutil.rmtree(out_dir)
    result = train(step_cfg, out_dir, resume=resumable, dataset=dataset, progress=progress)
    state = load_checkpoint(result.last_checkpoint)
    model = _build(config, int(state["arch"]["num_classes"]), pretrained=False)
    # The attribute heads were not trained in step 1; their widths follow attributes.embed_dim.
    weights = {
        k: v for k, v in state["model"].items() if not k.startswith(("color_head.", "type_head."))
    }
    own = model.state_dict()
    weights.update({k: v for k, v in own.items() if k.startswith(("color_head.", "type_head."))})
    load_state_dict_checked(model, weights, result.last_checkpoint)
    summary = {
        "run_dir": str(result.out_dir),
        "epochs": result.epochs,
        "last_checkpoint": str(result.last_checkpoint),
        "held_out_reid": {
            k: result.history[-1][k]
            for k in ("mAP", "rank1", "rank5", "mINP")
            if result.history and k in result.history[-1]
        },
    }
    return model, summary


def train_attributes(
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    resume: bool = False,
    hooks: Sequence[HookBase] = (),
) -> AttributeTrainResult:
    """Train the attribute model in the paper's two steps; write its checkpoint and metrics.

    Reads the train split of ``attributes.data_root`` (or ``data.sim_root``); holds out
    ``attributes.holdout_fraction`` of its identities (seeded). Writes into ``out_dir`` (a fresh
    sibling when it already holds a run): ``config.yaml``, ``holdout_ids.txt``, ``reid/`` (step 1's
    training run; its mAP is on the held-out identities), ``heads/`` (step 2's: ``checkpoints/
    last.pt``, ``history.json``, ``tensorboard/``), ``checkpoints/attributes.pt`` and, when the
    data carry colour/type labels, ``attribute_metrics.json`` and ``confusion_{color,type}.png``
    (held-out identities). A split without colour/type labels logs a clear message and trains the
    re-id step alone.

    ``resume``: continue the run in ``out_dir`` (same data and settings; more epochs are fine)
    from the last epoch each step saved. ``hooks``: more trainer hooks for step 2.

    Raises:
        ConfigError / DatasetError / CheckpointError: bad settings, data or run directory.
        NonFiniteLossError: a step's loss became NaN or infinite.
    """

    cfg = config.attributes
    root = _labelled_root(config)
    dataset = load_from_config(config.data, root=root, format=cfg.format)
    records = dataset.splits.get("train") or []
    if not records:
        raise DatasetError(f"{root}: no train split; nothing to train the attribute model on")
    targets = attribute_targets(records, source=str(root))
    labelled = {k: int((v != IGNORE_INDEX).sum()) for k, v in targets.items()}
    heads_trained = any(labelled.values())
    if not heads_trained:
        msg = (
            f"{root}: the train split ({len(records)} images) has no colour/type labels; only the "
            "re-id step is trained and the colour/type heads stay untrained. Give "
            "attributes.data_root a labelled dataset (AIC simulation train_label.xml with "
            "colorID/typeID, or VeRi-776)"
        )
        log.warning(msg)
        if progress:
            from rich.console import Console

            Console(stderr=True).print(msg, highlight=False, markup=False)
        if not cfg.reid:
            raise DatasetError(
                msg.split(";")[0] + " and attributes.reid is false: nothing to train"
            )
    asked = Path(out_dir)
    train_recs, held_recs, held_ids = split_holdout(records, cfg.holdout_fraction, seed=cfg.seed)
    if resume:
        out = asked
        held_file = out / "holdout_ids.txt"
        if not held_file.is_file():
            raise CheckpointError(
                f"{held_file}: nothing to resume (no attribute training in {out}); drop --resume "
                "to start a new run or point --out at an existing one"
            )
        if [int(x) for x in held_file.read_text().split()] != list(held_ids):
            raise CheckpointError(
                f"{out}: the run held out other identities than these settings do; resume with "
                "the same attributes.data_root, holdout_fraction and seed"
            )
    else:
        out = new_run_dir(asked.parent, asked.name)
        if out != asked:
            log.warning("%s already holds a run; writing this one to %s", asked, out)
    save_config(config, out / "config.yaml")
    write_text_atomic(out / "holdout_ids.txt", "".join(f"{i}\n" for i in held_ids))

    reid_summary: dict[str, Any] | None = None
    if cfg.reid:
        model, reid_summary = _train_reid_step(
            config,
            root,
            dataset.format,
            train_recs,
            held_recs,
            out / "reid",
            progress=progress,
            resume=resume,
        )
    else:
        seed_rng(cfg.seed)  # initial weights follow attributes.seed
        model = _build(config, len({r.vehicle_id for r in train_recs}), pretrained=True)
        log.info(model.weights_message)

    metrics: dict[str, Any] = {
        "data_root": str(root),
        "train_ids": len({r.vehicle_id for r in train_recs}),
        "train_images": len(train_recs),
        "holdout_ids": len(held_ids),
        "holdout_images": len(held_recs),
        "labelled_images": labelled,
        "heads_trained": heads_trained,
        "reid": reid_summary,
    }
    history: list[dict[str, Any]] = []
    if heads_trained:
        reports: dict[str, dict[str, Any]] = {}
        evaluation: list[HookBase] = []
        held_targets = attribute_targets(held_recs)

        def evaluate() -> dict[str, Any]:
            """Held-out colour/type reports (kept in ``reports``); their accuracies."""
            outputs = predict_attributes(
                model,
                held_recs,
                cfg.image_size,
                device=config.runtime.device,
                batch_size=config.train.batch_size_eval,
                num_workers=config.train.num_workers,
                progress=progress,
            )
            for head in ("color", "type"):
                reports[head] = classification_report(
                    outputs[f"{head}_probs"], held_targets[head], ATTRIBUTE_CLASSES[head]
                )
            return {f"{head}_accuracy": reports[head]["accuracy"] for head in ("color", "type")}

        if held_recs:
            evaluation.append(EvalHook(evaluate, describe=_describe_accuracy))
        history = finetune_heads(
            model,
            train_recs,
            attribute_targets(train_recs),
            config,
            progress=progress,
            run_dir=out / "heads",
            resume=resume,
            hooks=[*evaluation, *hooks],
        )
        metrics["history"] = history
        if held_recs:
            if not reports:  # a resumed run with no epoch left: evaluate what it trained
                evaluate()
            for head, label in (("color", "colour"), ("type", "type")):
                report = reports[head]
                metrics[head] = report
                accuracy = (
                    f", accuracy {report['accuracy']:.1%}" if report["accuracy"] is not None else ""
                )
                plot_confusion(
                    report["confusion"],
                    report["classes"],
                    out / f"confusion_{head}.png",
                    title=f"{label} on {len(held_ids)} held-out identities{accuracy}",
                )
        else:
            log.warning("attributes: no identities held out; no accuracy is reported")
    metrics["config"] = config.model_dump(mode="json")
    write_json_atomic(out / "attribute_metrics.json", metrics)
    checkpoint = save_checkpoint(
        out / ATTRIBUTE_CHECKPOINT,
        {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "arch": attribute_arch(model),
            # model.* describes the attribute model so `Extractor` gives its re-id features
            "config": reid_step_config(config).model_dump(mode="json"),
            "epoch": cfg.epochs if heads_trained else 0,
            "stage": "attributes",
            "heads_trained": heads_trained,
            "classes": {k: list(v) for k, v in ATTRIBUTE_CLASSES.items()},
            "holdout_ids": held_ids,
            "history": history,
        },
    )
    return AttributeTrainResult(
        out_dir=out,
        checkpoint=checkpoint,
        heads_trained=heads_trained,
        metrics=metrics,
        holdout_ids=held_ids,
    )


def _describe_accuracy(metrics: dict[str, Any]) -> str:
    parts = [
        f"{label} {100 * metrics[f'{head}_accuracy']:.1f}%"
        for head, label in (("color", "colour"), ("type", "type"))
        if metrics.get(f"{head}_accuracy") is not None
    ]
    return "held-out accuracy " + ", ".join(parts) if parts else "no held-out labels"
