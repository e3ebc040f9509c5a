"""The one training loop of vreid: re-id, the attribute heads and the detector all run through it.

In the pattern of fast-reid's ``TrainerBase`` / ``SimpleTrainer`` / ``AMPTrainer`` with
``HookBase``: :class:`Trainer` owns what every training shares — epochs of steps, mixed precision
(autocast, plus a gradient scaler for fp16), the non-finite-loss check, gradient clipping, the
learning-rate schedule, the random streams, resuming and the progress bar — and what differs
between trainings is

* a **step variant** (:class:`TrainStep`): how one batch becomes a loss
  (:class:`vreid.engine.reid.ReidStep`, :class:`vreid.engine.attributes.AttributeStep`,
  :class:`vreid.engine.detector.DetectorStep`);
* the **hooks** a training registers (:class:`HookBase`): evaluation (:class:`EvalHook`),
  checkpoints (:class:`CheckpointHook`), ``history.json`` (:class:`HistoryHook`), TensorBoard
  (:class:`TensorBoardHook`), a time budget (:class:`TimeBudgetHook`); the progress bar and the
  per-epoch log line are always there (:class:`ProgressBarHook`, :class:`EpochLogHook`).

One step::

    batch = step.move(batch, device)
    with autocast:  output = step.forward(model, batch)
    loss, parts = step.loss(output, batch)            # float32, outside autocast
    check loss is finite → NonFiniteLossError naming the epoch and iteration (nothing is saved)
    zero_grad → scaler.scale(loss).backward() → [unscale, clip] → scaler.step → scaler.update
    → [scheduler.step() when it is stepped per iteration]

One epoch: ``before_epoch`` hooks, the steps (``after_step`` hooks after each), the per-epoch
scheduler step, the epoch's record appended to :attr:`Trainer.history`, ``after_epoch`` hooks in
registration order: progress bar closed → evaluation → checkpoint → ``history.json`` →
TensorBoard → user hooks → the epoch's log line.

A run directory written by the standard hooks (:func:`run_dir_hooks`) is the same for every
training::

    RUN/checkpoints/last.pt     after every epoch: model, optimizer, scheduler, scaler, RNG states,
                                epoch, history (+ best.pt / epoch_XXX.pt where asked)
    RUN/history.json            one record per epoch
    RUN/tensorboard/            per-iteration and per-epoch scalars

Random streams and exact resuming: torch's global RNG is the only global one training draws from
(PK sampling has its own seeded numpy generator; loaders shuffle with their own seeded
generators). :func:`seed_rng` is the one place it is seeded. ``Trainer(seed=S)`` seeds it with
``S + rank`` when training starts, so that every process gets its own augmentation stream;
a resumed run instead restores the RNG states saved in ``last.pt`` (and the state of every object
given as ``state=``, e.g. a loader's generator), so a killed-and-resumed CPU run ends bit-identical
to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from vreid.core.artefacts import write_json_atomic
from vreid.core.devices import resolve_device
from vreid.core.errors import ConfigError, NonFiniteLossError
from vreid.core.progress import progress_bar
from vreid.data.image_datasets import worker_errors
from vreid.models.checkpoint import (
    load_state_dict_checked,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

log = logging.getLogger("vreid.engine")


# ---------------------------------------------------------------------------------------------
# small shared helpers


def plural(n: int, word: str) -> str:
    """``plural(1, "epoch")`` → ``"1 epoch"``, ``plural(2, "epoch")`` → ``"2 epochs"``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def announce(message: str, *, console: bool) -> None:
    """Log ``message`` (logger ``vreid.engine``) and, when ``console``, print it on stderr."""
    log.info(message)
    if console:
        from rich.console import Console

        Console(stderr=True).print(message, highlight=False, markup=False)


def seed_rng(seed: int) -> None:
    """Seed torch's global RNG (CPU and every CUDA device): the one place training seeds it.

    Every moment a training seeds (before building a model, so that initial weights follow the
    seed; when training starts, see :class:`Trainer`) goes through here. Only torch's RNG is
    seeded: nothing in training draws from numpy's or Python's global generators.
    """
    torch.manual_seed(seed)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (a loader's shuffling, random flips …)."""
    return torch.Generator().manual_seed(seed)


class GeneratorState:
    """A ``torch.Generator`` seen as a checkpointable object (``state_dict``/``load_state_dict``).

    Give it to ``Trainer(state=...)`` so that a resumed run continues the generator's stream
    (e.g. a shuffling DataLoader's: each epoch's order comes from it).
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"].cpu())


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


# ---------------------------------------------------------------------------------------------
# processes and devices


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (one process, rank 0, when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """True when :func:`setup_distributed` started the process group (and must destroy it)."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files, logs and shows progress."""
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce(self, t: torch.Tensor, device: torch.device, op: Any = None) -> torch.Tensor:
        """Sum (or ``op``) of ``t`` over the ranks, returned on the CPU."""
        if not self.enabled:
            return t
        # nccl reduces CUDA tensors only; gloo reduces CPU tensors
        t = t.to(device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=op if op is not None else dist.ReduceOp.SUM)
        return t.cpu()


def setup_distributed(device_pref: str) -> Distributed:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1): nccl on CUDA,
    gloo on the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and not device_pref.startswith("cpu")
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        owns = True
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def training_device(
    pref: str | torch.device,
    *,
    setting: str = "runtime.device",
    fixed_input_size: bool = True,
    ddp: Distributed | None = None,
) -> torch.device:
    """The device a training runs on (one GPU per process under torchrun), and cuDNN set for it.

    ``fixed_input_size``: every batch has the same shape (re-id, attribute heads). Only then is
    ``torch.backends.cudnn.benchmark`` switched on: it times the convolution algorithms for each
    new input shape and keeps the fastest, which pays off when shapes repeat and costs a
    benchmark per batch when they do not (the detector's images keep their aspect ratio, so its
    batches vary in size). This is the one place that flag is set.
    """
    dev = resolve_device(pref, setting=setting)
    if dev.type == "cuda" and ddp is not None and ddp.enabled:
        dev = torch.device("cuda", ddp.local_rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = fixed_input_size
    return dev


def amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``amp`` (``off``, ``bf16``, ``fp16``) → (autocast dtype or None, whether a gradient scaler
    is needed). fp16 is honoured on CUDA only (with a scaler: its range is too small for raw
    gradients); bf16 everywhere."""
    if amp == "off":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if amp != "fp16":
        raise ConfigError(f"amp={amp!r}: use off, bf16 or fp16")
    if device.type == "cuda":
        return torch.float16, True
    log.warning("amp=fp16 is honoured on CUDA only; training in float32 on %s", device)
    return None, False


def bare(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------
# step variants and hooks


class TrainStep:
    """How one batch becomes a loss: the part of a training that differs between tasks.

    Subclasses set :attr:`name`, :attr:`advice` and :attr:`epochs_key` and implement
    :meth:`move`, :meth:`forward` and :meth:`loss`.
    """

    name: str = "training"
    """Shown in the progress bar, the log lines and error messages."""
    advice: str = "lower the learning rate"
    """What to change when the loss becomes non-finite."""
    epochs_key: str = "the number of epochs"
    """The setting that sets the number of epochs (said when a resume has nothing to do)."""

    def train_mode(self, model: nn.Module) -> None:
        """Put ``model`` in training mode at the start of each epoch."""
        model.train()

    def move(self, batch: Any, device: torch.device) -> Any:
        """The loader's batch on ``device`` (outside autocast)."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The model's output on the moved batch; runs under autocast when AMP is on."""
        raise NotImplementedError

    def loss(self, output: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, parts)``: the 0-dim loss ``backward()`` runs on and named 0-dim components
        (logged; their mean per epoch goes to the history). Runs outside autocast: compute it in
        float32."""
        raise NotImplementedError

    def batch_size(self, batch: Any) -> int:
        """Images in the (moved) batch, for the throughput."""
        first = batch[0]
        return len(first) if isinstance(first, list | tuple) else int(first.shape[0])


class HookBase:
    """Something run at fixed points of :meth:`Trainer.train`; ``self.trainer`` is set on
    registration. Every method is optional."""

    trainer: Trainer

    def before_train(self) -> None:
        """After the random streams are set (seeded or restored), before the first epoch."""

    def before_epoch(self) -> None:
        """Before the first step of an epoch (``trainer.epoch`` is 0-based)."""

    def after_step(self) -> None:
        """After each optimizer step (``trainer.step_values``: the step's loss and parts)."""

    def after_epoch(self) -> None:
        """After the epoch's record (``trainer.record``) was appended to ``trainer.history``."""

    def after_train(self) -> None:
        """After the last epoch (not after an error)."""

    def close(self) -> None:
        """Release what the hook holds (files, displays); runs after training, also on errors."""

    def state_dict(self) -> dict[str, Any]:
        """Entries this hook adds to every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take this hook's entries back from a resumed checkpoint."""


# ---------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Epochs of :class:`TrainStep` steps with AMP, checks, schedules, random streams and hooks.

    Args:
        step: the step variant (how a batch becomes a loss).
        model: the model ``step.forward`` runs (a DistributedDataParallel wrapper under torchrun;
            checkpoints hold the bare model's weights).
        optimizer: over the parameters to train.
        scheduler: stepped after every epoch, or after every step when ``scheduler_per_step``;
            ``None``: constant learning rate.
        loader: the training batches. Its sampler's ``set_epoch(epoch)`` is called when it has
            one. An epoch is one pass over it, or ``max_iters`` steps when fewer.
        epochs: epochs to reach (a resumed run continues up to it).
        device: where batches and the model live.
        amp: ``off``, ``bf16`` or ``fp16`` (see :func:`amp_setup`).
        max_iters: cap on steps per epoch (``None``: a whole pass).
        max_grad_norm: clip the gradients' total norm to this (after unscaling); ``None``: no
            clipping.
        seed: when set, a fresh run seeds torch's RNG with ``seed + rank`` as training starts
            (one augmentation stream per process); ``None`` leaves it as the caller seeded it.
        ddp: this process's place in a torchrun job.
        state: other objects whose state a resume needs (a sampler, a loader's generator …),
            saved under their names in each checkpoint.
        meta: constant entries of each checkpoint (``arch``, ``config`` …).
        hooks: run in this order, between the progress bar (first) and the epoch log line (last).
        progress: show the progress bar and print the log lines on stderr (rank 0 only).
    """

    def __init__(
        self,
        step: TrainStep,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        loader: DataLoader,
        *,
        epochs: int,
        device: torch.device,
        amp: str = "off",
        max_iters: int | None = None,
        max_grad_norm: float | None = None,
        scheduler_per_step: bool = False,
        seed: int | None = None,
        ddp: Distributed | None = None,
        state: dict[str, Stateful] | None = None,
        meta: dict[str, Any] | None = None,
        hooks: Sequence[HookBase] = (),
        progress: bool = True,
    ) -> None:
        self.step = step
        self.model = model
        self.bare_model = bare(model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader = loader
        self.epochs = epochs
        self.device = device
        self.amp_dtype, self.use_scaler = amp_setup(amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)
        self.max_iters = max_iters
        self.max_grad_norm = max_grad_norm
        self.scheduler_per_step = scheduler_per_step
        self.seed = seed
        self.ddp = ddp or Distributed()
        self.state = dict(state or {})
        self.meta = dict(meta or {})
        self.progress = progress
        self.show = progress and self.ddp.main

        self.start_epoch = 0
        """Epochs done before this call (a resumed run's checkpoint epoch)."""
        self.history: list[dict[str, Any]] = []
        """One record per epoch done (including those before a resume)."""
        self.epoch = 0
        """The current epoch, 0-based."""
        self.iter = 0
        """Steps done in the current epoch."""
        self.n_iters = 0
        """Steps planned in the current epoch."""
        self.global_step = 0
        """Steps done since the run started (over resumes)."""
        self.lr = 0.0
        """Learning rate of the current step (first parameter group)."""
        self.step_values = torch.zeros(0, dtype=torch.float64)
        """The last step's ``(loss, *parts)`` as float64 on the CPU."""
        self.part_names: tuple[str, ...] = ()
        self.sums = torch.zeros(0, dtype=torch.float64)
        """Sums over the current epoch's steps of ``(loss, *parts)``."""
        self.images_seen = 0
        self.epoch_start = 0.0
        self.record: dict[str, Any] = {}
        """The current epoch's record (after the epoch; hooks may add to it)."""
        self.epoch_notes: list[str] = []
        """Phrases hooks add to the epoch's log line (e.g. the evaluation's mAP)."""
        self._stop = False
        self._resume_rngs: list[Any] | None = None
        self._clip_params = [p for g in optimizer.param_groups for p in g["params"]]

        self.hooks: list[HookBase] = [ProgressBarHook(), *hooks, EpochLogHook()]
        for hook in self.hooks:
            hook.trainer = self

    # -- public -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """Log ``message`` on rank 0 (and print it on stderr when ``progress``)."""
        if self.ddp.main:
            announce(message, console=self.progress)

    def stop(self) -> None:
        """End training after the current step (its epoch counts as done and is saved)."""
        self._stop = True

    @property
    def is_last_epoch(self) -> bool:
        """True in the last epoch of this call (the planned last one, or a stopped one)."""
        return self._stop or self.epoch + 1 >= self.epochs

    @property
    def epochs_done(self) -> int:
        """Epochs completed in total (including those before a resume)."""
        return max(self.start_epoch, len(self.history))

    def state_dict(self, rngs: list[Any]) -> dict[str, Any]:
        """What ``last.pt`` holds after the current epoch; ``rngs``: every rank's RNG states."""
        return {
            "model": self.bare_model.state_dict(),
            **self.meta,
            "epoch": self.epoch + 1,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.use_scaler else None,
            **{name: obj.state_dict() for name, obj in self.state.items()},
            "rng": rngs,
            **{k: v for hook in self.hooks for k, v in hook.state_dict().items()},
            "history": self.history,
            "world_size": self.ddp.world_size,
        }

    def load_state_dict(self, state: dict[str, Any], source: str | os.PathLike[str]) -> None:
        """Continue the run saved in checkpoint ``state`` (read from ``source``): weights,
        optimizer, scheduler, scaler, the ``state=`` objects, hooks' entries, epoch and history;
        the RNG states are restored when :meth:`train` starts."""
        load_state_dict_checked(self.bare_model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.use_scaler:
            self.scaler.load_state_dict(state["scaler"])
        for name, obj in self.state.items():
            if state.get(name) is not None:
                obj.load_state_dict(state[name])
        for hook in self.hooks:
            hook.load_state_dict(state)
        self.start_epoch = int(state["epoch"])
        self.history = list(state.get("history", []))
        self._resume_rngs = list(state.get("rng") or [])
        self.say(f"resuming {source} after epoch {self.start_epoch} of {self.epochs}")
        if self.start_epoch >= self.epochs:
            self.say(
                f"nothing to do: {plural(self.start_epoch, 'epoch')} done; raise "
                f"{self.step.epochs_key} to train further"
            )

    def train(self) -> list[dict[str, Any]]:
        """Run the epochs from :attr:`start_epoch` up to ``epochs`` (or a :meth:`stop`); returns
        :attr:`history`.

        Raises:
            NonFiniteLossError: the loss became NaN or infinite (nothing of that epoch is saved).
            DatasetError: a loader worker could not read its data (its one-line message).
        """
        self.global_step = sum(int(h.get("iterations", 0)) for h in self.history)
        try:
            with worker_errors():
                self._start_streams()
                self._call("before_train")
                for epoch in range(self.start_epoch, self.epochs):
                    self.epoch = epoch
                    self._run_epoch()
                    if self._stop:
                        break
                self._call("after_train")
        finally:
            for hook in reversed(self.hooks):
                hook.close()
        return self.history

    # -- internals --------------------------------------------------------------------------

    def _call(self, point: str) -> None:
        for hook in self.hooks:
            getattr(hook, point)()

    def _start_streams(self) -> None:
        """Set torch's RNG as training starts: restored from the checkpoint when resuming, else
        seeded with ``seed + rank`` (when a seed was given)."""
        rank, world = self.ddp.rank, self.ddp.world_size
        if self._resume_rngs is not None:
            if len(self._resume_rngs) == world:
                set_rng_state(self._resume_rngs[rank])
            else:
                self.say(
                    f"the run was saved with {len(self._resume_rngs)} processes, resuming with "
                    f"{world}: random streams restart from the seed (the result will differ "
                    "from an uninterrupted run)"
                )
                seed_rng((self.seed or 0) + 1000 * self.start_epoch + rank)
        elif self.seed is not None:
            seed_rng(self.seed + rank)  # augmentation streams differ per rank

    def _iterations(self) -> int:
        n = len(self.loader)
        if self.max_iters is not None:
            n = min(n, self.max_iters)
        if self.ddp.enabled:  # every rank must run the same number of steps
            t = self.ddp.all_reduce(torch.tensor([n]), self.device, op=dist.ReduceOp.MIN)
            n = int(t.item())
        return n

    def _batches(self) -> Iterator[Any]:
        """The epoch's batches. A whole pass iterates the loader to its end (a shuffling
        sampler draws its generator's state for the next epoch only then); a capped epoch
        never asks the loader for more than it needs (each batch costs image decoding and
        random augmentation)."""
        if self.n_iters >= len(self.loader):
            return iter(self.loader)
        return itertools.islice(self.loader, self.n_iters)

    def _autocast(self) -> Any:
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def run_step(self, batch: Any) -> None:
        """One optimisation step on a loader batch; sets :attr:`step_values`."""
        step = self.step
        batch = step.move(batch, self.device)
        with self._autocast():
            output = step.forward(self.model, batch)
        loss, parts = step.loss(output, batch)
        if not self.part_names:
            self.part_names = tuple(parts)
        # one device→host copy per step: the numbers for logging and the non-finite check
        values = torch.stack([loss.detach(), *(p.detach() for p in parts.values())])
        values = values.double().cpu()
        if not math.isfinite(values[0].item()):
            raise NonFiniteLossError(
                f"{step.name}: the loss became {values[0].item()} at epoch {self.epoch + 1}, "
                f"iteration {self.iter + 1}; {step.advice} (training stopped; epoch "
                f"{self.epoch + 1} was not saved)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            torch.nn.utils.clip_grad_norm_(self._clip_params, self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None and self.scheduler_per_step:
            self.scheduler.step()
        self.step_values = values

    def _run_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)  # type: ignore[union-attr]
        self.n_iters = self._iterations()
        self.step.train_mode(self.model)
        self.iter = 0
        self.images_seen = 0
        self.sums = torch.zeros(0, dtype=torch.float64)
        self.epoch_notes = []
        epoch_lr = self.optimizer.param_groups[0]["lr"]
        self._call("before_epoch")
        self.epoch_start = time.perf_counter()
        batches = self._batches()
        for batch in batches:
            self.lr = self.optimizer.param_groups[0]["lr"]
            self.run_step(batch)
            self.sums = self.step_values.clone() if self.iter == 0 else self.sums + self.step_values
            self.images_seen += self.step.batch_size(batch)
            self.iter += 1
            self.global_step += 1
            self._call("after_step")
            if self._stop:
                break
        del batches  # shuts a capped epoch's loader workers down now
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - self.epoch_start
        n_parts = len(self.part_names)
        sums = self.sums if self.iter else torch.zeros(1 + n_parts, dtype=torch.float64)
        totals = torch.tensor(
            [*sums.tolist(), float(self.images_seen), float(self.iter)], dtype=torch.float64
        )
        totals = self.ddp.all_reduce(totals, self.device)
        steps_all = max(totals[-1].item(), 1.0)
        record: dict[str, Any] = {"epoch": self.epoch + 1, "loss": totals[0].item() / steps_all}
        for i, name in enumerate(self.part_names):
            record[name] = totals[1 + i].item() / steps_all
        record["images_per_s"] = totals[-2].item() / max(elapsed, 1e-9)
        record["iterations"] = self.iter
        record["lr"] = epoch_lr
        if self.scheduler is not None and not self.scheduler_per_step:
            self.scheduler.step()
        self.record = record
        self.history.append(record)
        self._call("after_epoch")


# ---------------------------------------------------------------------------------------------
# hooks


class ProgressBarHook(HookBase):
    """The shared progress bar (:func:`vreid.core.progress.progress_bar`), one per epoch: loss,
    learning rate and images/s as it goes. Always the first hook: its bar is closed before any
    other ``after_epoch`` hook runs (an evaluation shows its own bars)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def before_epoch(self) -> None:

        t = self.trainer
        self._bar = progress_bar(disable=not t.show)
        self._bar.__enter__()
        self._task = self._bar.add_task(
            f"{t.step.name} epoch {t.epoch + 1}/{t.epochs}", total=t.n_iters, info=""
        )

    def after_step(self) -> None:
        t = self.trainer
        elapsed = time.perf_counter() - t.epoch_start
        self._bar.update(
            self._task,
            advance=1,
            info=f"loss {t.sums[0].item() / t.iter:.3f}  lr {t.lr:.2e}  "
            f"{t.images_seen * t.ddp.world_size / max(elapsed, 1e-9):.1f} img/s",
        )

    def after_epoch(self) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


class EpochLogHook(HookBase):
    """One line per epoch (rank 0): losses, learning rate, throughput and what hooks noted (the
    evaluation's metrics). Always the last hook."""

    def after_epoch(self) -> None:
        t = self.trainer
        r = t.record
        parts = ", ".join(f"{name} {r[name]:.4f}" for name in t.part_names)
        line = (
            f"{t.step.name} epoch {r['epoch']}/{t.epochs}: loss {r['loss']:.4f}"
            + (f" ({parts})" if parts else "")
            + f", lr {r['lr']:.2e}, {r['images_per_s']:.1f} img/s"
        )
        if t.epoch_notes:
            line += "; " + "; ".join(t.epoch_notes)
        t.say(line)


class EvalHook(HookBase):
    """Evaluate after every ``every``-th epoch and after the last (``every=0``: after the last
    only); the metrics join the epoch's record (history, checkpoint, TensorBoard ``eval/…``).

    Args:
        evaluate: returns the metrics, a dict of numbers (rank 0 only runs it; the other ranks
            wait).
        describe: the metrics as a phrase for the epoch's log line.
        isolate_rng: run the evaluation with torch's RNG forked, so that it draws nothing from
            the training's streams (a resumed run then matches an uninterrupted one even when
            the first run evaluated at its end). The re-id evaluation keeps drawing from them
            (its loaders' seeds) as it always has, so that its runs keep their numbers.
    """

    def __init__(
        self,
        evaluate: Callable[[], dict[str, Any]],
        *,
        every: int = 0,
        describe: Callable[[dict[str, Any]], str] | None = None,
        isolate_rng: bool = True,
    ) -> None:
        self.evaluate = evaluate
        self.every = every
        self.describe = describe
        self.isolate_rng = isolate_rng
        self.metrics: dict[str, Any] | None = None
        """The latest metrics (None: not evaluated in this call)."""

    def after_epoch(self) -> None:
        t = self.trainer
        due = t.is_last_epoch or (self.every > 0 and (t.epoch + 1) % self.every == 0)
        if not due:
            return
        if t.ddp.main:
            devices = [t.device] if t.device.type == "cuda" else []
            forked = torch.random.fork_rng(devices=devices) if self.isolate_rng else None
            with forked or contextlib.nullcontext():
                self.metrics = self.evaluate()
            t.record.update(self.metrics)
            if self.describe is not None:
                t.epoch_notes.append(self.describe(self.metrics))
        t.ddp.barrier()


class CheckpointHook(HookBase):
    """``checkpoints/last.pt`` after every epoch (atomic, rank 0), ``epoch_XXX.pt`` every
    ``every`` epochs, ``best.pt`` when ``best_metric`` of the epoch's record beats the best so
    far (kept in checkpoints under ``best_key``)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every: int = 0,
        best_metric: str | None = None,
        best_key: str = "best_map",
    ) -> None:
        self.directory = Path(directory)
        self.every = every
        self.best_metric = best_metric
        self.best_key = best_key
        self.best: float | None = None
        best = self.directory / "best.pt"
        self.best_path: Path | None = best if best_metric and best.is_file() else None

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    def after_epoch(self) -> None:
        t = self.trainer
        value = t.record.get(self.best_metric) if self.best_metric else None
        improved = value is not None and (self.best is None or value > self.best)
        if improved:
            self.best = value
        rngs = t.ddp.gather(rng_state())  # every rank's streams: a collective, on every rank
        if not t.ddp.main:
            return
        state = t.state_dict(rngs)
        save_checkpoint(self.last_path, state)
        if self.every and (t.epoch + 1) % self.every == 0:
            save_checkpoint(self.directory / f"epoch_{t.epoch + 1:03d}.pt", state)
        if improved:
            self.best_path = save_checkpoint(self.directory / "best.pt", state)

    def state_dict(self) -> dict[str, Any]:
        return {self.best_key: self.best} if self.best_metric else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.best_metric:
            self.best = state.get(self.best_key)


class HistoryHook(HookBase):
    """``history.json``: every epoch's record so far, rewritten atomically after each epoch."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def after_epoch(self) -> None:
        if self.trainer.ddp.main:
            write_json_atomic(self.path, self.trainer.history)


class TensorBoardHook(HookBase):
    """TensorBoard scalars (rank 0): ``train/{loss,<parts>,lr}`` per step, ``epoch/{loss,<parts>,
    lr,images_per_s}`` and ``eval/<metric>`` per epoch. A resumed run drops events after its
    checkpoint (``purge_step``) so curves do not fold back."""

    _NOT_METRICS = frozenset({"epoch", "loss", "lr", "images_per_s", "iterations"})

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def before_train(self) -> None:
        t = self.trainer
        if not t.ddp.main:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=t.global_step or None)

    def after_step(self) -> None:
        t, w = self.trainer, self.writer
        if w is None:
            return
        for name, value in zip(("loss", *t.part_names), t.step_values.tolist(), strict=True):
            w.add_scalar(f"train/{name}", value, t.global_step)
        w.add_scalar("train/lr", t.lr, t.global_step)

    def after_epoch(self) -> None:
        t, w = self.trainer, self.writer
        if w is None:
            return
        r = t.record
        for key in ("loss", *t.part_names):
            w.add_scalar(f"epoch/{key}", r[key], r["epoch"])
        w.add_scalar("epoch/lr", r["lr"], r["epoch"])
        w.add_scalar("epoch/images_per_s", r["images_per_s"], r["epoch"])
        for key, value in r.items():
            if key in self._NOT_METRICS or key in t.part_names:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                w.add_scalar(f"eval/{key}", value, r["epoch"])
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class TimeBudgetHook(HookBase):
    """Stop training after the step that crosses ``deadline`` (a ``time.perf_counter()``
    value); that epoch counts as done and is saved."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def after_step(self) -> None:
        if time.perf_counter() > self.deadline:
            self.trainer.stop()


def run_dir_hooks(
    run_dir: str | os.PathLike[str],
    *,
    checkpoint_every: int = 0,
    best_metric: str | None = None,
) -> list[HookBase]:
    """The hooks that make ``run_dir`` a run directory: ``checkpoints/`` (last.pt, and best.pt /
    epoch_XXX.pt where asked), ``history.json``, ``tensorboard/``."""
    run_dir = Path(run_dir)
    return [
        CheckpointHook(run_dir / "checkpoints", every=checkpoint_every, best_metric=best_metric),
        HistoryHook(run_dir / "history.json"),
        TensorBoardHook(run_dir / "tensorboard"),
    ]
