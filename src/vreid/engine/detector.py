"""Train a torchvision detector on images with true vehicle boxes (the offline path to cropping).

No COCO weights can be downloaded here, so ``vreid train-detector`` trains one of the same
torchvision architectures, from random initialisation, on a dataset whose ``vehicle_boxes.csv``
gives the true box of each image (``split,image_name,x1,y1,x2,y2`` in pixels — our synthetic data
writes it). The checkpoint it writes is what ``vreid crop --weights`` accepts:

``{"kind": "vreid-detector", "model": state_dict, "arch": {"name", "num_classes", "categories",
"options"}, "config": {…training settings…}, "epoch": int, "history": [mean loss per epoch],
"held_out_iou": float | None}``
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vreid.core.artefacts import atomic_path, refuse_overwrite
from vreid.core.errors import CheckpointError, ConfigError, DatasetError, VreidError
from vreid.core.progress import progress_bar
from vreid.data.images import open_image
from vreid.data.loader import dataset_root
from vreid.engine.trainer import (
    EvalHook,
    GeneratorState,
    HookBase,
    TimeBudgetHook,
    Trainer,
    TrainStep,
    run_dir_hooks,
    seed_rng,
    seeded_generator,
    training_device,
)
from vreid.inference.crop import detect_crop_boxes
from vreid.inference.select import box_iou
from vreid.models.checkpoint import load_checkpoint
from vreid.models.detectors import (
    CHECKPOINT_KIND,
    VEHICLE_CATEGORIES,
    LoadedDetector,
    build_detector,
    detector_names,
    load_detector,
)

TRUE_BOXES_FILE = "vehicle_boxes.csv"
# Folder of each split in the AIC layouts; other layouts keep images in <root>/<split>/.
_SPLIT_DIRS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
# Training-only settings of the two-stage detectors that make a CPU step several times faster on
# images with one object (fewer proposals and sampled boxes). They do not change the weights'
# shapes, so the checkpoint is rebuilt with torchvision's defaults for inference.
_FAST_TWO_STAGE = {
    "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 300,
    "rpn_batch_size_per_image": 128,
    "box_batch_size_per_image": 64,
}


@dataclass(frozen=True)
class BoxedImage:
    """One image with its true vehicle box (pixels, ``x1, y1, x2, y2``)."""

    path: Path
    split: str
    name: str
    box: tuple[float, float, float, float]


def read_true_boxes(
    data_root: str | os.PathLike[str], splits: Sequence[str] | None = None
) -> list[BoxedImage]:
    """Read ``data_root/vehicle_boxes.csv`` (``split,image_name,x1,y1,x2,y2``) for ``splits``
    (``None``: all). Image paths are ``image_train/`` … for the AIC layout, else ``<split>/``; each
    must exist and stay inside ``data_root``."""
    root = Path(data_root).resolve()
    path = root / TRUE_BOXES_FILE
    if not path.is_file():
        raise DatasetError(
            f"{path}: no true boxes; train-detector needs a {TRUE_BOXES_FILE} with "
            "split,image_name,x1,y1,x2,y2 per image (`vreid synth` writes one)"
        )
    items: list[BoxedImage] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or (line_no == 1 and row[0].strip() == "split"):
                continue
            if len(row) != 6:
                raise DatasetError(
                    f"{path}:{line_no}: expected 6 fields split,image_name,x1,y1,x2,y2, got {len(row)}"
                )
            split, name = row[0].strip(), row[1].strip()
            if splits is not None and split not in splits:
                continue
            try:
                x1, y1, x2, y2 = (float(v) for v in row[2:])
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: box coordinates must be numbers") from None
            if not (x2 > x1 and y2 > y1):
                raise DatasetError(f"{path}:{line_no}: empty box {row[2:]} (need x2 > x1, y2 > y1)")
            folder = root / _SPLIT_DIRS.get(split, split)
            if not folder.is_dir():
                folder = root / split
            image = (folder / name).resolve()
            if not image.is_relative_to(root):
                raise DatasetError(f"{path}:{line_no}: image {name!r} lies outside {root}")
            if not image.is_file():
                raise DatasetError(f"{path}:{line_no}: image {image} not found")
            items.append(BoxedImage(image, split, name, (x1, y1, x2, y2)))
    if not items:
        wanted = f" of split(s) {', '.join(splits)}" if splits is not None else ""
        raise DatasetError(f"{path}: no boxes{wanted}")
    return items


def load_image(path: Path) -> torch.Tensor:
    """Read an image as a (3, H, W) float tensor in [0, 1] through the one decoder
    (:func:`~vreid.data.images.open_image`: pixel limit, one-line error naming the file), at full
    resolution because the boxes are in the file's pixels."""
    array = np.asarray(open_image(path))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


class _BoxDataset(torch.utils.data.Dataset):
    """Images with one 'vehicle' target each; random horizontal flips when ``train``."""

    def __init__(self, items: Sequence[BoxedImage], *, train: bool, masks: bool, seed: int) -> None:
        self.items = list(items)
        self.train = train
        self.masks = masks
        self.generator = seeded_generator(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = self.items[index]
        image = load_image(item.path)
        height, width = image.shape[1:]
        x1, y1, x2, y2 = item.box
        box = torch.tensor([[x1, y1, x2, y2]]).clamp(min=0)
        box[:, 0::2] = box[:, 0::2].clamp(max=width)
        box[:, 1::2] = box[:, 1::2].clamp(max=height)
        if self.train and torch.rand(1, generator=self.generator).item() < 0.5:
            image = image.flip(-1)
            box = torch.stack([width - box[:, 2], box[:, 1], width - box[:, 0], box[:, 3]], dim=1)
        target = {"boxes": box, "labels": torch.ones(1, dtype=torch.int64)}
        if self.masks:
            mask = torch.zeros(1, height, width, dtype=torch.uint8)
            bx = box[0].round().long()
            mask[0, bx[1] : bx[3], bx[0] : bx[2]] = 1
            target["masks"] = mask
        return image, target


def _collate(batch: list[Any]) -> tuple[list[Any], list[Any]]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


@dataclass
class TrainDetectorResult:
    """What :func:`train_detector` produced."""

    checkpoint: Path
    detector: str
    epochs: int
    history: list[float] = field(default_factory=list)
    """Mean training loss of each epoch."""
    held_out_iou: float | None = None
    """Mean IoU of the chosen box with the true box on the held-out splits (None: none given)."""
    seconds: float = 0.0


class DetectorStep(TrainStep):
    """The detector step: torchvision's detection losses on images with their true boxes.

    Loader batches are ``(images, targets)``: lists of (3, H, W) float32 images in [0, 1] (sizes
    may differ) and of ``{"boxes": (1, 4) float32 x1 y1 x2 y2 pixels, "labels": (1,) int64}``
    (+ ``"masks"`` (1, H, W) uint8 for Mask R-CNN). The model returns its loss terms
    (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg`` …, the
    parts); the loss is their sum.
    """

    name = "detector"
    epochs_key = "--epochs"

    def __init__(self, lr: float) -> None:
        self.advice = f"lower --lr (now {lr}) or train without AMP"

    def move(self, batch: Any, device: torch.device) -> tuple[list[Any], list[Any]]:
        images, targets = batch
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        return images, targets

    def forward(self, model: torch.nn.Module, batch: tuple[list[Any], list[Any]]) -> Any:
        return model(*batch)  # in training mode torchvision detectors return their losses

    def loss(
        self, output: dict[str, torch.Tensor], batch: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return sum(output.values()), output  # type: ignore[return-value]


def training_dir(out: str | os.PathLike[str]) -> Path:
    """Where :func:`train_detector` keeps the training of checkpoint ``out`` (``det.pt`` →
    ``det-training/``): ``checkpoints/last.pt`` (what ``resume`` continues from),
    ``history.json``, ``tensorboard/``."""
    out = Path(out)
    return out.parent / f"{out.stem}-training"


def train_detector(
    data_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    detector: str = "fasterrcnn_mobilenet_v3_large_320_fpn",
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    device: str | torch.device = "auto",
    train_splits: Sequence[str] = ("train",),
    held_out_splits: Sequence[str] = ("query", "gallery"),
    max_images: int | None = None,
    max_minutes: float | None = None,
    image_size: int | None = None,
    init_from: str | os.PathLike[str] | None = None,
    workers: int = 0,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    amp: str = "off",
    hooks: Sequence[HookBase] = (),
) -> TrainDetectorResult:
    """Train ``detector`` (random initialisation, 2 classes: background and vehicle) on the true
    boxes of ``data_root`` and save a checkpoint for ``vreid crop --weights`` at ``out``.

    AdamW (``lr``, ``weight_decay``), a short linear warm-up, then a cosine decay to 0 over all
    steps — or over ``max_minutes`` when that ends first (training then stops after the step that
    crosses it and saves what was learnt); gradients clipped to norm 10; random horizontal flips.
    ``max_images`` caps the training images (first ones in file order). ``image_size`` sets the
    detector's input resolution (shorter side, ``min_size``; longer side at most twice that) for
    training and later cropping; ``None`` keeps torchvision's (320 for the ``_320_`` variant, else
    800). Smaller is faster; our synthetic 256×256 images need no more than 256. ``init_from``
    starts from the weights (and input size) of an earlier ``train-detector`` checkpoint of the
    same architecture instead of random ones. After training, the mean IoU of the chosen box
    (selection rule of :mod:`vreid.inference.select`, no margin) with the true box is measured on
    ``held_out_splits`` when the file has them.

    The loop is the shared :class:`~vreid.engine.trainer.Trainer` (progress bar, AMP, non-finite
    check), with its state after every epoch in :func:`training_dir` (``det.pt`` →
    ``det-training/checkpoints/last.pt``, ``history.json``, ``tensorboard/``). ``resume``
    continues a killed or stopped run from there with the same arguments (the schedule spans
    ``epochs``; ``max_minutes`` counts this call's time); ``overwrite`` replaces both ``out`` and
    that folder. ``amp``: ``off``, ``bf16`` or ``fp16`` (CUDA). ``hooks``: more trainer hooks.

    Raises:
        ConfigError / DatasetError / CheckpointError / WeightsError: bad arguments, data or
        checkpoints; VreidError when ``out`` (or an unfinished training of it) exists and neither
        ``overwrite`` nor ``resume`` is given.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    if detector not in detector_names():
        raise ConfigError(
            f"unknown detector {detector!r}; known detectors: {', '.join(detector_names())}"
        )
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs ({epochs}) and batch_size ({batch_size}) must be ≥ 1")
    if resume and init_from is not None:
        raise ConfigError(
            "resume continues a run from its own last.pt; init_from starts a new one: use one "
            "of them"
        )
    out = Path(out)
    run_dir = training_dir(out)
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise CheckpointError(
                f"{last}: nothing to resume (no training of {out} was saved); drop --resume to "
                "start a new one"
            )
    else:
        refuse_overwrite(out, overwrite=overwrite)
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise VreidError(
                    f"{run_dir} holds an unfinished training of {out}; pass --resume to continue "
                    "it or --overwrite to start again"
                )
            shutil.rmtree(run_dir)
    # the detector's images keep their aspect ratio: batch shapes vary, no cuDNN autotuning
    dev = training_device(device, setting="device", fixed_input_size=False)
    seed_rng(seed)  # initial weights (and the RPN's sampling) follow the seed

    data_root = dataset_root(data_root)  # a `vreid synth` output: its real/ dataset
    train_items = read_true_boxes(data_root, train_splits)
    if max_images is not None:
        train_items = train_items[:max_images]
    two_stage = detector.startswith(("fasterrcnn", "maskrcnn"))
    options: dict[str, Any] = {}
    if image_size is not None:
        if image_size < 32:
            raise ConfigError(f"image_size {image_size}: need at least 32 pixels")
        options = {"min_size": int(image_size), "max_size": 2 * int(image_size)}
    start_state = None
    if init_from is not None:
        initial = load_detector(detector, init_from)
        start_state = initial.model.state_dict()
        if image_size is None:
            options = {k: v for k, v in initial.options.items() if k in ("min_size", "max_size")}
    resume_state = None
    if resume:
        resume_state = load_checkpoint(last)
        saved = resume_state["arch"]
        if saved.get("name") != detector or dict(saved.get("options", {})) != options:
            raise CheckpointError(
                f"{last}: the run trained {saved.get('name')} with input options "
                f"{saved.get('options')}, not {detector} with {options}; resume with the same "
                "--detector and --image-size"
            )
    model = build_detector(
        detector,
        num_classes=len(VEHICLE_CATEGORIES),
        **options,
        **(_FAST_TWO_STAGE if two_stage else {}),
    )
    if start_state is not None:
        model.load_state_dict(start_state)
    model = model.to(dev)
    boxes = _BoxDataset(train_items, train=True, masks=detector.startswith("maskrcnn"), seed=seed)
    loader = torch.utils.data.DataLoader(
        boxes,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=_collate,
        drop_last=len(train_items) > batch_size,
        generator=seeded_generator(seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total_steps = epochs * len(loader)
    warmup = min(20, max(total_steps // 10, 1))
    start = time.perf_counter()
    budget = max_minutes * 60 if max_minutes is not None else math.inf
    deadline = start + budget

    def lr_factor(step: int) -> float:
        # linear warm-up, then a cosine decay over the steps or the time budget, whichever ends first
        if step < warmup:
            return (step + 1) / warmup
        done = max(
            (step - warmup) / max(total_steps - warmup, 1),
            (time.perf_counter() - start) / budget,
        )
        return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    config = {
        "data_root": str(Path(data_root).resolve()),
        "train_splits": list(train_splits),
        "train_images": len(train_items),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "max_minutes": max_minutes,
        "image_size": image_size,
        "init_from": None if init_from is None else str(init_from),
        "seed": seed,
    }

    held_out = _held_out_items(data_root, held_out_splits)

    eval_seconds = [0.0]  # the result's `seconds` are training time, as before

    def held_out_iou() -> dict[str, Any]:
        began = time.perf_counter()
        model.eval()
        loaded = LoadedDetector(
            model, detector, VEHICLE_CATEGORIES, (1,), source="training", options=options
        )
        iou = float(
            evaluate_boxes(loaded, held_out, batch_size=batch_size, progress=progress).mean()
        )
        eval_seconds[0] += time.perf_counter() - began
        return {"held_out_iou": iou}

    evaluation = EvalHook(
        held_out_iou, describe=lambda m: f"held-out mean IoU {m['held_out_iou']:.3f}"
    )
    trainer = Trainer(
        DetectorStep(lr),
        model,
        optimizer,
        scheduler,
        loader,
        epochs=epochs,
        device=dev,
        amp=amp,
        max_grad_norm=10.0,
        scheduler_per_step=True,
        # the shuffling generator and the flips' generator: a resumed run continues both
        state={
            "loader_generator": GeneratorState(loader.generator),
            "flip_generator": GeneratorState(boxes.generator),
        },
        meta={
            "kind": CHECKPOINT_KIND,
            "arch": _arch(detector, options),
            "config": config,
        },
        hooks=[
            TimeBudgetHook(deadline),
            *([evaluation] if held_out else []),
            *run_dir_hooks(run_dir),
            *hooks,
        ],
        progress=progress,
    )
    if resume_state is not None:
        trainer.load_state_dict(resume_state, last)
    history = trainer.train()
    seconds = time.perf_counter() - start - eval_seconds[0]
    model.eval()
    iou = None
    if held_out:
        metrics = evaluation.metrics or held_out_iou()  # a resume with no epoch left
        iou = metrics["held_out_iou"]
    losses = [float(h["loss"]) for h in history]
    save_detector_checkpoint(
        model,
        detector,
        out,
        epoch=trainer.epochs_done,
        config=config,
        options=options,
        history=losses,
        held_out_iou=iou,
        seconds=seconds,
    )
    return TrainDetectorResult(out, detector, trainer.epochs_done, losses, iou, seconds)


def _arch(detector: str, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": detector,
        "num_classes": len(VEHICLE_CATEGORIES),
        "categories": list(VEHICLE_CATEGORIES),
        "options": dict(options),
    }


def save_detector_checkpoint(
    model: torch.nn.Module,
    detector: str,
    out: str | os.PathLike[str],
    *,
    epoch: int,
    config: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a ``vreid train-detector`` checkpoint (format in the module docstring) atomically.

    ``model`` must be ``build_detector(detector, num_classes=2, **options)`` (background and
    vehicle); ``options`` (e.g. ``min_size``, ``max_size``: the detector's input resolution) are
    stored so that ``vreid crop`` rebuilds the same detector.
    """
    checkpoint = {
        "kind": CHECKPOINT_KIND,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": _arch(detector, options or {}),
        "config": config or {},
        "epoch": epoch,
        **extra,
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    return out


def _held_out_items(data_root: str | os.PathLike[str], splits: Sequence[str]) -> list[BoxedImage]:
    if not splits:
        return []
    try:
        return read_true_boxes(data_root, splits)
    except DatasetError as err:
        if "no boxes" in str(err):
            return []
        raise


@torch.inference_mode()
def evaluate_boxes(
    loaded: Any,
    items: Sequence[BoxedImage],
    *,
    batch_size: int = 8,
    margin: float = 0.0,
    min_score: float = 0.5,
    progress: bool = False,
) -> torch.Tensor:
    """IoU of the box chosen for each image (margin added) with its true box → (N,) float.

    Images where nothing is found get the whole image as their box (what cropping would keep).
    ``progress``: the shared progress bar (transient), one step per image.
    """

    ious = []
    with progress_bar(disable=not progress, transient=True) as bar:
        task = bar.add_task("held-out IoU", total=len(items), info="")
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            images = [load_image(it.path).mul_(255).round_().to(torch.uint8) for it in chunk]
            selection = detect_crop_boxes(loaded, images, margin=margin, min_score=min_score)
            boxes = selection.crop_boxes.float() if margin > 0 else selection.detection
            truth = torch.tensor([it.box for it in chunk])
            ious.append(box_iou(boxes, truth))
            bar.advance(task, len(chunk))
    return torch.cat(ious) if ious else torch.zeros(0)
