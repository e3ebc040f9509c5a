"""The training loop: PK batches, Adam + step decay, triplet + label-smoothed cross-entropy.

One function, :func:`train`, config in, artefacts out::

    out_dir/config.yaml                 the resolved config
    out_dir/checkpoints/last.pt         after every epoch (what --resume continues from)
    out_dir/checkpoints/best.pt         the epoch with the best query/gallery mAP so far
    out_dir/checkpoints/epoch_XXX.pt    every ``train.checkpoint_every`` epochs (optional)
    out_dir/tensorboard/                TensorBoard scalars (loss, lr, images/s, mAP, rank-1)
    out_dir/history.json                one entry per epoch (the same numbers)

It runs on CPU, one GPU, or many GPUs/nodes under ``torchrun`` (DDP: the process group is started
when ``WORLD_SIZE`` is set; gloo on CPU, nccl on CUDA; each rank draws a disjoint share of the PK
batches; only rank 0 writes). Mixed precision: ``train.amp=bf16|fp16`` on CUDA (fp16 with a
gradient scaler), ``bf16`` on CPU too. ``resume=True`` continues exactly where ``last.pt`` stopped
(model, optimizer, scheduler, scaler, sampler and every RNG): a resumed CPU run ends with weights
bit-identical to an uninterrupted one. ``init_from`` starts from another run's weights with a fresh
classifier (the paper's synthetic pre-training followed by real fine-tuning).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from vreid.core.artefacts import new_run_dir, write_json_atomic, write_text_atomic
from vreid.core.config import Config, save_config
from vreid.core.devices import resolve_device
from vreid.core.errors import CheckpointError, ConfigError, DatasetError, VreidError
from vreid.data.image_datasets import (
    ReidImageDataset,
    holdout_query_gallery,
    label_map,
    split_holdout,
    worker_errors,
)
from vreid.data.records import ImageRecord, ReidDataset
from vreid.models.checkpoint import (
    arch_from_config,
    build_from_arch,
    check_arch,
    load_checkpoint,
    load_state_dict_checked,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

log = logging.getLogger("vreid.engine")


@dataclass
class TrainResult:
    """What :func:`train` made."""

    out_dir: Path
    """The run directory actually written (a fresh sibling when the asked one held a run)."""
    last_checkpoint: Path
    """``checkpoints/last.pt``."""
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
# distributed helpers


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_pref: str) -> _Dist:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device_pref.startswith("cpu")
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def _resolve_device(pref: str, ddp: _Dist) -> torch.device:
    dev = resolve_device(pref, setting="runtime.device")
    if dev.type == "cuda" and ddp.enabled:
        return torch.device("cuda", ddp.local_rank)  # one GPU per process
    return dev


def _broadcast(obj: Any, ddp: _Dist) -> Any:
    if not ddp.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj: Any, ddp: _Dist) -> list[Any]:
    if not ddp.enabled:
        return [obj]
    out: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------------------------
# pieces


def _amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed)."""
    if amp == "off":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if device.type == "cuda":
        return torch.float16, True
    log.warning("train.amp=fp16 is honoured on CUDA only; training in float32 on %s", device)
    return None, False


def _load_training_dataset(config: Config, dataset: ReidDataset | None) -> ReidDataset:
    if dataset is not None:
        return dataset
    if config.data.root is None:
        raise ConfigError(
            "data.root is not set: point it at a dataset (--set data.root=DIR; make one with "
            "`vreid synth OUT`) or pass a dataset to train()"
        )
    from vreid.data import load_from_config

    return load_from_config(config.data)


def _check_pk(num_ids: int, config: Config, ddp: _Dist, source: str) -> None:
    p, k = config.train.p, config.train.k
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
    train_set: ReidImageDataset, config: Config, ddp: _Dist, device: torch.device
) -> tuple[DataLoader, Any]:
    from vreid.data.sampler import PKSampler

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
    from vreid.data.transforms import build_transforms

    return build_transforms(
        tuple(config.model.image_size), train=True, **config.train.augment.model_dump()
    )


def _epoch_iterations(loader: DataLoader, config: Config, ddp: _Dist, device: torch.device) -> int:
    n = len(loader)
    if config.train.max_iters_per_epoch is not None:
        n = min(n, config.train.max_iters_per_epoch)
    if ddp.enabled:  # every rank must run the same number of steps
        t = torch.tensor([n], device=device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        n = int(t.item())
    return n


def _state_of(obj: Any) -> Any:
    return obj.state_dict() if obj is not None and hasattr(obj, "state_dict") else None


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------
# the loop


def train(
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    dataset: ReidDataset | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the re-id model of ``config`` on a dataset's training split; evaluate on query/gallery.

    Args:
        config: the resolved configuration (``model``, ``train``, ``data``, ``retrieval.protocol``).
        out_dir: run directory. A directory that already holds a run is never overwritten: without
            ``resume`` a fresh sibling (``name-2`` …) is used and returned in the result.
        resume: continue from ``out_dir/checkpoints/last.pt`` up to ``config.train.epochs``.
        init_from: a checkpoint whose weights start the model; its classifier is replaced by a
            fresh one for this dataset's identities (synthetic pre-training → real fine-tuning).
        dataset: the dataset to use; ``None`` loads ``config.data.root``.
        progress: show a rich progress bar (rank 0 only).

    Raises:
        ConfigError / DatasetError / CheckpointError: bad settings, data or checkpoints, with a
        message saying what to change.
    """
    if resume and init_from is not None:
        raise ConfigError(
            "--resume continues a run from its own last.pt; --init-from starts a new one: "
            "use one of them"
        )
    ddp = _setup_distributed(config.runtime.device)
    try:
        return _train(config, Path(out_dir), resume, init_from, dataset, progress, ddp)
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
    ddp: _Dist,
) -> TrainResult:
    tc = config.train
    device = _resolve_device(config.runtime.device, ddp)
    show = progress and ddp.main

    def say(msg: str) -> None:
        if ddp.main:
            log.info(msg)
            if progress:
                from rich.console import Console

                Console(stderr=True).print(msg, highlight=False, markup=False)

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
    _check_pk(num_classes, config, ddp, source)
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
    ckpt_dir_name = "checkpoints"
    resume_state: dict[str, Any] | None = None
    if resume:
        last = out_dir / ckpt_dir_name / "last.pt"
        if not last.is_file():
            raise CheckpointError(
                f"{last}: nothing to resume (no last.pt in {out_dir}); drop --resume to start a "
                "new run or point --out at an existing run directory"
            )
        resume_state = load_checkpoint(last)
    else:
        if ddp.main:
            asked = out_dir
            out_dir = new_run_dir(asked.parent, asked.name, resume=False)
            if out_dir != asked:
                say(f"{asked} already holds a run; writing this one to {out_dir}")
        out_dir = Path(_broadcast(str(out_dir), ddp))
    ckpt_dir = out_dir / ckpt_dir_name

    # -- model ----------------------------------------------------------------------------------
    torch.manual_seed(tc.seed)
    if resume_state is not None:
        check_arch(
            resume_state["arch"],
            wanted_arch,
            ckpt_dir / "last.pt",
            classes_hint="resuming needs the dataset the run started on; to train this dataset "
            "from that checkpoint use --init-from instead of --resume",
        )
        if list(resume_state.get("vehicle_ids", vehicle_ids)) != vehicle_ids:
            raise CheckpointError(
                f"{ckpt_dir / 'last.pt'}: the run was trained on other vehicle ids than this "
                "dataset's training split; resume with the same data.root, or use --init-from"
            )
        model = build_from_arch(wanted_arch)
        load_state_dict_checked(model, resume_state["model"], ckpt_dir / "last.pt")
    elif init_state is not None:
        model = build_from_arch(dict(wanted_arch, num_classes=init_state["arch"]["num_classes"]))
        load_state_dict_checked(model, init_state["model"], init_from)
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
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    bare_model = model
    if ddp.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # -- optimisation -------------------------------------------------------------------------
    from vreid.engine.losses import ReidLoss

    criterion = ReidLoss(
        triplet_weight=tc.triplet_weight,
        ce_weight=tc.ce_weight,
        margin=tc.margin,
        epsilon=tc.label_smoothing,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.step_size, gamma=tc.gamma)
    amp_dtype, use_scaler = _amp_setup(tc.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    start_epoch = 0
    best_map: float | None = None
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if resume_state.get("scaler") and use_scaler:
            scaler.load_state_dict(resume_state["scaler"])
        if resume_state.get("sampler") is not None and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(resume_state["sampler"])
        start_epoch = int(resume_state["epoch"])
        best_map = resume_state.get("best_map")
        history = list(resume_state.get("history", []))
        rngs = resume_state.get("rng") or []
        if len(rngs) == ddp.world_size:
            set_rng_state(rngs[ddp.rank])
        else:
            say(
                f"the run was saved with {len(rngs)} processes, resuming with {ddp.world_size}: "
                "random streams restart from the seed (the result will differ from an "
                "uninterrupted run)"
            )
            torch.manual_seed(tc.seed + 1000 * start_epoch + ddp.rank)
        say(f"resuming {out_dir} after epoch {start_epoch} of {tc.epochs}")
        if start_epoch >= tc.epochs:
            say(f"nothing to do: {start_epoch} epochs done; raise train.epochs to train further")
    else:
        torch.manual_seed(tc.seed + ddp.rank)  # augmentation streams differ per rank

    if ddp.main:
        save_config(config, out_dir / "config.yaml")
        if validation is not None:
            write_text_atomic(out_dir / "val_ids.txt", "".join(f"{i}\n" for i in val_ids))
    writer = None
    if ddp.main:
        from torch.utils.tensorboard import SummaryWriter

        global_step = sum(int(h.get("iterations", 0)) for h in history)
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=global_step or None)

    eval_kwargs = {
        "image_size": tuple(config.model.image_size),
        "device": device,
        "batch_size": tc.batch_size_eval,
        "num_workers": tc.num_workers,
        "flip": tc.eval_flip,
        # validation queries have same-camera images of their identity in the gallery: ignore those
        "protocol": "veri" if validation is not None else config.retrieval.protocol,
        "amp_dtype": amp_dtype,
    }
    eval_data = validation if validation is not None else data
    best_path: Path | None = ckpt_dir / "best.pt" if (ckpt_dir / "best.pt").is_file() else None
    global_step = sum(int(h.get("iterations", 0)) for h in history)

    try:
        for epoch in range(start_epoch, tc.epochs):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            n_iters = _epoch_iterations(loader, config, ddp, device)
            stats = _run_epoch(
                model,
                loader,
                n_iters,
                criterion,
                optimizer,
                scaler,
                amp_dtype,
                device,
                tc.channels_last,
                epoch,
                tc.epochs,
                show,
                writer,
                global_step,
                ddp,
            )
            global_step += n_iters
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            record: dict[str, Any] = {"epoch": epoch + 1, **stats, "lr": lr}

            last_epoch = epoch + 1 == tc.epochs
            improved = False
            if can_eval and ((epoch + 1) % tc.eval_every == 0 or last_epoch):
                metrics = None
                if ddp.main:
                    metrics = _evaluate(bare_model, eval_data, eval_kwargs, show)
                    metrics["eval_split"] = "validation" if validation is not None else "test"
                    record.update(metrics)
                    if best_map is None or metrics["mAP"] > best_map:
                        best_map, improved = metrics["mAP"], True
                if ddp.enabled:
                    dist.barrier()
            history.append(record)

            rngs = _gather(rng_state(), ddp)
            if ddp.main:
                state = {
                    "model": bare_model.state_dict(),
                    "arch": wanted_arch,
                    "config": config.model_dump(mode="json"),
                    "epoch": epoch + 1,
                    "vehicle_ids": vehicle_ids,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if use_scaler else None,
                    "sampler": _state_of(sampler),
                    "rng": rngs,
                    "best_map": best_map,
                    "history": history,
                    "world_size": ddp.world_size,
                }
                save_checkpoint(ckpt_dir / "last.pt", state)
                if tc.checkpoint_every and (epoch + 1) % tc.checkpoint_every == 0:
                    save_checkpoint(ckpt_dir / f"epoch_{epoch + 1:03d}.pt", state)
                if improved:
                    best_path = save_checkpoint(ckpt_dir / "best.pt", state)
                write_json_atomic(out_dir / "history.json", history)
                _log_epoch(writer, record, global_step)
                say(_epoch_line(record, tc.epochs))
    finally:
        if writer is not None:
            writer.close()

    return TrainResult(
        out_dir=out_dir,
        last_checkpoint=ckpt_dir / "last.pt",
        best_checkpoint=best_path,
        epochs=max(start_epoch, tc.epochs),
        history=history,
        best_map=best_map,
    )


def _run_epoch(
    model: nn.Module,
    loader: DataLoader,
    n_iters: int,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    channels_last: bool,
    epoch: int,
    epochs: int,
    show: bool,
    writer: Any,
    global_step: int,
    ddp: _Dist,
) -> dict[str, Any]:
    """One epoch of ``n_iters`` steps; returns mean losses and throughput (over all ranks)."""
    from vreid.core.progress import progress_bar

    model.train()
    sums = torch.zeros(3, dtype=torch.float64)  # total, triplet, ce
    images_seen = 0
    lr = optimizer.param_groups[0]["lr"]
    autocast = torch.autocast(
        device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    )
    start = time.perf_counter()
    with worker_errors(), progress_bar(disable=not show) as bar:
        task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=n_iters, info="")
        it = iter(loader)
        for i in range(n_iters):
            images, labels, _ = next(it)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                out = model(images)
            total, parts = criterion(out.features.float(), out.logits.float(), labels)
            # one device→host copy per step: the three numbers for logging and the NaN check
            values = torch.stack([total.detach(), parts["triplet"], parts["ce"]]).double().cpu()
            if not math.isfinite(values[0].item()):
                raise VreidError(
                    f"the loss became {values[0].item()} at epoch {epoch + 1}, iteration {i + 1}; "
                    "lower train.lr or switch train.amp off"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            step_losses = values
            sums += step_losses
            images_seen += images.shape[0]
            if writer is not None:
                step = global_step + i + 1
                writer.add_scalar("train/loss", step_losses[0].item(), step)
                writer.add_scalar("train/triplet", step_losses[1].item(), step)
                writer.add_scalar("train/ce", step_losses[2].item(), step)
                writer.add_scalar("train/lr", lr, step)
            elapsed = time.perf_counter() - start
            bar.update(
                task,
                advance=1,
                info=f"loss {sums[0].item() / (i + 1):.3f}  lr {lr:.2e}  "
                f"{images_seen * ddp.world_size / max(elapsed, 1e-9):.1f} img/s",
            )
        del it
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    totals = torch.tensor([*sums.tolist(), float(images_seen), float(n_iters)], dtype=torch.float64)
    if ddp.enabled:
        t = totals.to(device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        totals = t.cpu()
    iters_all = max(totals[4].item(), 1.0)
    return {
        "loss": totals[0].item() / iters_all,
        "triplet": totals[1].item() / iters_all,
        "ce": totals[2].item() / iters_all,
        "images_per_s": totals[3].item() / max(elapsed, 1e-9),
        "iterations": n_iters,
    }


def _evaluate(model: nn.Module, data: ReidDataset, kwargs: dict[str, Any], show: bool) -> dict:
    from vreid.engine.evaluation import evaluate_model

    res = evaluate_model(model, data["query"], data["gallery"], progress=show, **kwargs)
    cmc = list(res.get("cmc", []))
    out = {"mAP": float(res["mAP"])}
    for k in (1, 5, 10):
        if len(cmc) >= k:
            out[f"rank{k}"] = float(cmc[k - 1])
    if "mINP" in res:
        out["mINP"] = float(res["mINP"])
    return out


def _log_epoch(writer: Any, record: dict[str, Any], step: int) -> None:
    if writer is None:
        return
    for key in ("loss", "triplet", "ce"):
        writer.add_scalar(f"epoch/{key}", record[key], record["epoch"])
    writer.add_scalar("epoch/lr", record["lr"], record["epoch"])
    writer.add_scalar("epoch/images_per_s", record["images_per_s"], record["epoch"])
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
        if key in record:
            writer.add_scalar(f"eval/{key}", record[key], record["epoch"])
    writer.flush()


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    line = (
        f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f} (triplet "
        f"{record['triplet']:.4f}, ce {record['ce']:.4f}), lr {record['lr']:.2e}, "
        f"{record['images_per_s']:.1f} img/s"
    )
    if "mAP" in record:
        on = " (validation)" if record.get("eval_split") == "validation" else ""
        line += f"; mAP{on} {100 * record['mAP']:.2f}%"
        if "rank1" in record:
            line += f", rank-1 {100 * record['rank1']:.2f}%"
    if not math.isfinite(record["loss"]):
        line += " (non-finite loss)"
    return line
