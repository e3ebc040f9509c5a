"""Re-id training: PK batches, Adam + step decay, triplet + label-smoothed cross-entropy.

One function, :func:`train`, config in, artefacts out::

    out_dir/config.yaml                 the resolved config
    out_dir/checkpoints/last.pt         after every epoch (what --resume continues from)
    out_dir/checkpoints/best.pt         the epoch with the best query/gallery mAP so far
    out_dir/checkpoints/epoch_XXX.pt    every ``train.checkpoint_every`` epochs (optional)
    out_dir/tensorboard/                TensorBoard scalars (loss, lr, images/s, mAP, rank-1)
    out_dir/history.json                one entry per epoch (the same numbers)

The loop is :class:`vreid.engine.trainer.Trainer` with the re-id step (:class:`ReidStep`) and
hooks for evaluation (query/gallery or held-out mAP every ``train.eval_every`` epochs),
checkpoints, history and TensorBoard. It runs on CPU, one GPU, or many GPUs/nodes under
``torchrun`` (DDP: the process group is started when ``WORLD_SIZE`` is set; gloo on CPU, nccl on
CUDA; each rank draws a disjoint share of the PK batches; only rank 0 writes). Mixed precision:
``train.amp=bf16|fp16`` on CUDA (fp16 with a gradient scaler), ``bf16`` on CPU too.
``resume=True`` continues exactly where ``last.pt`` stopped (model, optimizer, scheduler, scaler,
sampler and every RNG): a resumed CPU run ends with weights bit-identical to an uninterrupted one.
``init_from`` starts from another run's weights with a fresh classifier (the paper's synthetic
pre-training followed by real fine-tuning).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from vreid.core.artefacts import new_run_dir, run_lock, write_text_atomic
from vreid.core.config import Config, flat_keys, save_config
from vreid.core.errors import CheckpointError, ConfigError, DatasetError
from vreid.data import load_from_config
from vreid.data.image_datasets import (
    ReidImageDataset,
    holdout_query_gallery,
    label_map,
    split_holdout,
)
from vreid.data.records import ImageRecord, ReidDataset
from vreid.data.sampler import PKSampler
from vreid.data.transforms import build_transforms
from vreid.engine.evaluation import evaluate_model
from vreid.engine.losses import ReidLoss
from vreid.engine.trainer import (
    Distributed,
    EvalHook,
    HookBase,
    Trainer,
    TrainStep,
    announce,
    plural,
    run_dir_hooks,
    seed_rng,
    setup_distributed,
    training_device,
)
from vreid.models.checkpoint import (
    INFERENCE_FILE,
    arch_from_config,
    build_from_arch,
    check_arch,
    load_checkpoint,
    load_state_dict_checked,
    save_inference_checkpoint,
)

log = logging.getLogger("vreid.engine")


@dataclass
class TrainResult:
    """What :func:`train` made."""

    out_dir: Path
    """The run directory actually written (a fresh sibling when the asked one held a run)."""
    last_checkpoint: Path
    """``checkpoints/last.pt``: the resumable checkpoint (weights, optimizer, RNG …)."""
    inference_checkpoint: Path
    """``checkpoints/model.pt``: the last epoch's weights for inference only (a third of last.pt's
    size with Adam), what ``Extractor``, ``vreid search``, ``export`` and ``index build`` need."""
    best_checkpoint: Path | None
    """``checkpoints/best.pt`` (best mAP), or None when the dataset has no query/gallery ground truth."""
    epochs: int
    """Epochs completed in total (including those before a resume)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per epoch: epoch, loss, triplet, ce, lr, images_per_s, iterations and, when evaluated,
    mAP, rank1, rank5, mINP."""
    best_map: float | None = None
    """Best query/gallery mAP seen, or None when never evaluated."""


# ---------------------------------------------------------------------------------------------
# the step


class ReidStep(TrainStep):
    """The re-id step: a PK batch through the model, triplet + label-smoothed cross-entropy.

    Loader batches are ``(images (B, 3, H, W) float32, labels (B,) int64, indices (B,))``; the
    model's ``features`` (B, D) and ``logits`` (B, num_classes) are cast to float32 for the loss
    (the forward may run under autocast). Parts: ``triplet``, ``ce``.
    """

    name = "re-id"
    advice = "lower train.lr or switch train.amp off"
    epochs_key = "train.epochs"

    def __init__(self, criterion: nn.Module, *, channels_last: bool = False) -> None:
        self.criterion = criterion
        self.channels_last = channels_last

    def move(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _ = batch
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return model(batch[0])

    def loss(
        self, output: Any, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, parts = self.criterion(output.features.float(), output.logits.float(), batch[1])
        return total, {"triplet": parts["triplet"], "ce": parts["ce"]}


# ---------------------------------------------------------------------------------------------
# pieces


def _load_training_dataset(config: Config, dataset: ReidDataset | None) -> ReidDataset:
    if dataset is not None:
        return dataset
    if config.data.root is None:
        raise ConfigError(
            "data.root is not set: point it at a dataset (--set data.root=DIR; make one with "
            "`vreid synth OUT`) or pass a dataset to train()"
        )

    return load_from_config(config.data)


def _check_pk(
    num_ids: int, config: Config, ddp: Distributed, source: str, num_images: int | None = None
) -> None:
    p, k = config.train.p, config.train.k
    if num_images is not None and p * k > num_images:
        # checked before anything is allocated: a P×K batch larger than the whole split would
        # only repeat images, and a huge one (train.k=5000) allocates until the OOM killer comes
        raise ConfigError(
            f"{source}: train.p × train.k = {p}×{k} = {p * k} images per batch, more than the "
            f"{num_images} training images; lower train.k (images per identity) or train.p"
        )
    if num_ids < p:
        raise DatasetError(
            f"{source}: the training split has {num_ids} identities, fewer than train.p={p} "
            f"identities per batch (P×K = {p}×{k}); set train.p to at most {num_ids} or use a "
            "dataset with more identities"
        )
    if ddp.enabled and num_ids < p * ddp.world_size:
        log.warning(
            "%d identities for %d processes × P=%d: ranks will share identities within a step",
            num_ids,
            ddp.world_size,
            p,
        )


def _make_train_loader(
    train_set: ReidImageDataset, config: Config, ddp: Distributed, device: torch.device
) -> tuple[DataLoader, Any]:

    sampler = PKSampler(
        train_set.labels,
        config.train.p,
        config.train.k,
        seed=config.train.seed,
        rank=ddp.rank,
        world_size=ddp.world_size,
    )
    loader = DataLoader(
        train_set,
        sampler=sampler,  # p × k consecutive indices per batch
        batch_size=config.train.p * config.train.k,
        drop_last=True,
        num_workers=config.train.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,  # workers reseeded from the (checkpointed) RNG every epoch
    )
    return loader, sampler


def _train_transform(config: Config) -> Any:

    return build_transforms(
        tuple(config.model.image_size), train=True, **config.train.augment.model_dump()
    )


# ---------------------------------------------------------------------------------------------
# the run


#: What a resume may change: how long to train, and what does not change the weights.
RESUME_MAY_CHANGE = frozenset(
    {
        "train.epochs",
        "train.eval_every",
        "train.checkpoint_every",
        "train.num_workers",
        "train.batch_size_eval",
        "train.eval_flip",
        "data.root",  # the same data moved (the vehicle ids are checked)
        "data.sim_root",
        "runtime.device",
    }
)


def check_resume_settings(state: dict[str, Any], config: Config, path: Path) -> None:
    """Refuse a resume whose settings differ from the run's in anything but
    :data:`RESUME_MAY_CHANGE` (a changed ``train.lr`` would be recorded but not used), or that asks
    for fewer epochs than the run has done."""
    before = flat_keys(
        {k: v for k, v in (state.get("config") or {}).items() if k in ("model", "train", "data")}
    )
    now = flat_keys(
        {k: v for k, v in config.model_dump(mode="json").items() if k in ("model", "train", "data")}
    )
    changed = sorted(
        k
        for k in before.keys() | now.keys()
        if before.get(k) != now.get(k) and k not in RESUME_MAY_CHANGE
    )
    if changed:
        shown = ", ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in changed[:6])
        raise ConfigError(
            f"{path}: a resume continues the run with its own settings; these differ: {shown}. "
            f"A resume may change only {', '.join(sorted(RESUME_MAY_CHANGE))}; start a new run "
            "(or --init-from this checkpoint) for other settings"
        )
    done = int(state.get("epoch", 0))
    if config.train.epochs < done:
        raise ConfigError(
            f"{path}: the run has done {plural(done, 'epoch')}, more than train.epochs="
            f"{config.train.epochs}; nothing to resume (set train.epochs above {done} to train "
            "longer)"
        )


def train(
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    dataset: ReidDataset | None = None,
    progress: bool = True,
    hooks: Sequence[HookBase] = (),
) -> TrainResult:
    """Train the re-id model of ``config`` on a dataset's training split; evaluate on query/gallery.

    Args:
        config: the resolved configuration (``model``, ``train``, ``data``, ``retrieval.protocol``,
            ``runtime.device``).
        out_dir: run directory. A directory that already holds a run is never overwritten: without
            ``resume`` a fresh sibling (``name-2`` …) is used and returned in the result.
        resume: continue from ``out_dir/checkpoints/last.pt`` up to ``config.train.epochs``.
        init_from: a checkpoint whose weights start the model; its classifier is replaced by a
            fresh one for this dataset's identities (synthetic pre-training → real fine-tuning).
        dataset: the dataset to use; ``None`` loads ``config.data.root``.
        progress: show a rich progress bar (rank 0 only).
        hooks: more :class:`~vreid.engine.trainer.HookBase` hooks for the trainer (run after the
            evaluation, checkpoint, history and TensorBoard hooks).

    Raises:
        ConfigError / DatasetError / CheckpointError: bad settings, data or checkpoints, with a
        message saying what to change.
        NonFiniteLossError: the loss became NaN or infinite (``last.pt`` keeps the epoch before).
    """
    if resume and init_from is not None:
        raise ConfigError(
            "--resume continues a run from its own last.pt; --init-from starts a new one: "
            "use one of them"
        )
    ddp = setup_distributed(config.runtime.device)
    try:
        # one run at a time in a run directory (a second is refused naming the first); taking it
        # also removes the temporaries a killed checkpoint write left behind
        with run_lock(out_dir) if ddp.main and resume else contextlib.nullcontext():
            result = _train(config, Path(out_dir), resume, init_from, dataset, progress, ddp, hooks)
        # every rank finished before any tears the group down: a rank that closes its gloo
        # connections while rank 0 still writes its last files was seen to abort once (SIGABRT)
        ddp.barrier()
        return result
    finally:
        if ddp.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config: Config,
    out_dir: Path,
    resume: bool,
    init_from: str | os.PathLike[str] | None,
    dataset: ReidDataset | None,
    progress: bool,
    ddp: Distributed,
    hooks: Sequence[HookBase],
) -> TrainResult:
    tc = config.train
    device = training_device(config.runtime.device, ddp=ddp)  # fixed input size: cuDNN autotunes
    show = progress and ddp.main

    def say(msg: str) -> None:
        if ddp.main:
            announce(msg, console=progress)

    # -- data ---------------------------------------------------------------------------------
    data = _load_training_dataset(config, dataset)
    source = str(data.root)
    train_records = data.splits.get("train") or []
    if not train_records:
        raise DatasetError(f"{source}: no training split (train images) to train on")
    validation: dict[str, list[ImageRecord]] | None = None
    if tc.val_fraction > 0:
        train_records, held, val_ids = split_holdout(train_records, tc.val_fraction, seed=tc.seed)
        query, gallery = holdout_query_gallery(held)
        if not val_ids or not gallery:
            raise ConfigError(
                f"train.val_fraction={tc.val_fraction}: {source} has too few training identities "
                "or images to hold some out for validation; lower it or set it to 0"
            )
        validation = {"query": query, "gallery": gallery}
        say(
            f"validation: {len(val_ids)} training identities held out ({len(query)} queries, "
            f"{len(gallery)} gallery images); evaluation and best.pt use them, not query/gallery"
        )
    id_to_label = label_map(train_records, source=source)
    vehicle_ids = sorted(id_to_label)
    num_classes = len(vehicle_ids)
    if validation is not None and num_classes < tc.p:
        raise ConfigError(
            f"train.val_fraction={tc.val_fraction} holds out {len(val_ids)} of "
            f"{num_classes + len(val_ids)} training identities, leaving {num_classes}, fewer than "
            f"train.p={tc.p} per batch; lower train.val_fraction or train.p"
        )
    _check_pk(num_classes, config, ddp, source, num_images=len(train_records))
    train_set = ReidImageDataset(train_records, _train_transform(config), id_to_label=id_to_label)
    loader, sampler = _make_train_loader(train_set, config, ddp, device)
    can_eval = tc.eval_every > 0 and (validation is not None or data.has_ground_truth)
    if can_eval and validation is None:
        # as in torchreid/fast-reid; said so that nobody reports a best.pt picked on the test set
        say(
            "evaluation and best.pt use the query/gallery (test) split; set train.val_fraction "
            "to choose best.pt on held-out training identities instead"
        )

    wanted_arch = arch_from_config(config.model, num_classes)
    init_state: dict[str, Any] | None = None
    if init_from is not None:
        init_state = load_checkpoint(init_from)
        check_arch(init_state["arch"], wanted_arch, init_from, check_classes=False)

    # -- run directory (rank 0 decides) -----------------------------------------------------
    ckpt_dir = out_dir / "checkpoints"
    resume_state: dict[str, Any] | None = None
    if resume:
        last = ckpt_dir / "last.pt"
        if not last.is_file():
            raise CheckpointError(
                f"{last}: nothing to resume (no last.pt in {out_dir}); drop --resume to start a "
                "new run or point --out at an existing run directory"
            )
        resume_state = load_checkpoint(last)
        check_arch(
            resume_state["arch"],
            wanted_arch,
            last,
            classes_hint="resuming needs the dataset the run started on; to train this dataset "
            "from that checkpoint use --init-from instead of --resume",
        )
        if list(resume_state.get("vehicle_ids", vehicle_ids)) != vehicle_ids:
            raise CheckpointError(
                f"{last}: the run was trained on other vehicle ids than this dataset's training "
                "split; resume with the same data.root, or use --init-from"
            )
        check_resume_settings(resume_state, config, last)
    else:
        if ddp.main:
            asked = out_dir
            out_dir = new_run_dir(asked.parent, asked.name, resume=False)
            if out_dir != asked:
                say(f"{asked} already holds a run; writing this one to {out_dir}")
        out_dir = Path(ddp.broadcast(str(out_dir)))
        ckpt_dir = out_dir / "checkpoints"

    # -- model ----------------------------------------------------------------------------------
    seed_rng(tc.seed)  # initial weights follow train.seed
    if resume_state is not None:
        model = build_from_arch(wanted_arch)  # the trainer loads last.pt's weights
    elif init_state is not None:
        model = build_from_arch(dict(wanted_arch, num_classes=init_state["arch"]["num_classes"]))
        load_state_dict_checked(model, init_state["model"], init_from)  # type: ignore[arg-type]
        model.reset_classifier(num_classes)
        say(
            f"initialised from {init_from} (epoch {init_state.get('epoch', '?')}, "
            f"{init_state['arch']['num_classes']} ids) with a fresh {num_classes}-id classifier"
        )
    else:
        model = build_from_arch(
            wanted_arch,
            pretrained=config.model.pretrained_for(config.model.name),
        )
        if getattr(model, "weights_message", None):
            say(model.weights_message)
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if ddp.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # -- optimisation -------------------------------------------------------------------------

    criterion = ReidLoss(
        triplet_weight=tc.triplet_weight,
        ce_weight=tc.ce_weight,
        margin=tc.margin,
        epsilon=tc.label_smoothing,
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.step_size, gamma=tc.gamma)

    # -- hooks ----------------------------------------------------------------------------------
    eval_data = validation if validation is not None else data
    run_hooks = run_dir_hooks(
        out_dir, checkpoint_every=tc.checkpoint_every, best_metric="mAP" if can_eval else None
    )
    checkpoints = run_hooks[0]
    trainer_hooks: list[HookBase] = []
    trainer: Trainer

    if can_eval:

        def evaluate() -> dict[str, Any]:
            kwargs = {
                "image_size": tuple(config.model.image_size),
                "device": device,
                "batch_size": tc.batch_size_eval,
                "num_workers": tc.num_workers,
                "flip": tc.eval_flip,
                # validation queries have same-camera images of their identity in the gallery:
                # ignore those
                "protocol": "veri" if validation is not None else config.retrieval.protocol,
                "amp_dtype": trainer.amp_dtype,
            }
            metrics: dict[str, Any] = _evaluate(model, eval_data, kwargs, show)
            metrics["eval_split"] = "validation" if validation is not None else "test"
            return metrics

        # isolate_rng=False: the evaluation's loaders have always drawn their seeds from the
        # training's RNG; keeping that keeps earlier runs' numbers
        trainer_hooks.append(
            EvalHook(evaluate, every=tc.eval_every, describe=_describe_eval, isolate_rng=False)
        )
    trainer_hooks += [*run_hooks, *hooks]
    trainer = Trainer(
        ReidStep(criterion, channels_last=tc.channels_last),
        net,
        optimizer,
        scheduler,
        loader,
        epochs=tc.epochs,
        device=device,
        amp=tc.amp,
        max_iters=tc.max_iters_per_epoch,
        seed=tc.seed,
        ddp=ddp,
        state={"sampler": sampler},
        meta={
            "arch": wanted_arch,
            "config": config.model_dump(mode="json"),
            "vehicle_ids": vehicle_ids,
            "trained_on": {
                "dataset": source,
                "format": data.format,
                "identities": num_classes,
                "images": len(train_records),
            },
        },
        hooks=trainer_hooks,
        progress=progress,
    )
    if resume_state is not None:
        trainer.load_state_dict(resume_state, ckpt_dir / "last.pt")

    if ddp.main:
        save_config(config, out_dir / "config.yaml")
        if validation is not None:
            write_text_atomic(out_dir / "val_ids.txt", "".join(f"{i}\n" for i in val_ids))
    history = trainer.train()
    if ddp.main:
        # the weights of last.pt without its resume state: what inference needs
        final = {"model": model.state_dict(), **trainer.meta, "epoch": trainer.epochs_done}
        final["best_map"] = checkpoints.best  # type: ignore[attr-defined]
        save_inference_checkpoint(ckpt_dir / INFERENCE_FILE, final)
    return TrainResult(
        out_dir=out_dir,
        last_checkpoint=ckpt_dir / "last.pt",
        inference_checkpoint=ckpt_dir / INFERENCE_FILE,
        best_checkpoint=checkpoints.best_path,  # type: ignore[attr-defined]
        epochs=max(trainer.start_epoch, tc.epochs),
        history=history,
        best_map=checkpoints.best,  # type: ignore[attr-defined]
    )


def _evaluate(model: nn.Module, data: ReidDataset, kwargs: dict[str, Any], show: bool) -> dict:

    res = evaluate_model(model, data["query"], data["gallery"], progress=show, **kwargs)
    cmc = list(res.get("cmc", []))
    out = {"mAP": float(res["mAP"])}
    for k in (1, 5, 10):
        if len(cmc) >= k:
            out[f"rank{k}"] = float(cmc[k - 1])
    if "mINP" in res:
        out["mINP"] = float(res["mINP"])
    return out


def _describe_eval(metrics: dict[str, Any]) -> str:
    on = " (validation)" if metrics.get("eval_split") == "validation" else ""
    text = f"mAP{on} {100 * metrics['mAP']:.2f}%"
    if "rank1" in metrics:
        text += f", rank-1 {100 * metrics['rank1']:.2f}%"
    return text
