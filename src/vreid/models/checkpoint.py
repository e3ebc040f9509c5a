"""Checkpoints: atomic saving, safe loading (``weights_only=True``), rebuilding a model from one.

A checkpoint is a plain dict (only tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``)::

    {
      "format": "vreid-checkpoint", "version": 1,
      "model": state_dict,                       # of the bare model (never the DDP wrapper)
      "arch": {"name": "glamor", "num_classes": 333, "backbone": "resnet50", "last_stride": 1},
      "config": {...},                           # the resolved Config as JSON-able dict
      "epoch": 7,                                # epochs completed
      "vehicle_ids": [...],                      # training ids in label order (label i = ids[i])
      "trained_on": {"dataset": "/data/real", "format": "aic20", "identities": 333,
                     "images": 36935},           # the training split (older files lack it)
      "optimizer": ..., "scheduler": ..., "scaler": ..., "sampler": ...,
      "rng": [per-rank RNG states], "best_map": 0.41, "history": [...],
    }

``arch`` is exactly what :func:`vreid.models.build_model` needs to rebuild the network:
``build_model(arch["name"], arch["num_classes"], **rest)``.

Beside the resumable ``last.pt``, training writes the small inference file ``model.pt``
(:data:`INFERENCE_FILE`, :func:`save_inference_checkpoint`): the same dict without the optimizer,
scheduler, scaler, sampler, RNG and history entries. Everything that reads a model (``Extractor``,
``vreid search``, ``vreid export``, ``vreid index build``) goes through :func:`load_checkpoint`
and takes either file.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from vreid.core.artefacts import atomic_path
from vreid.core.errors import CheckpointError
from vreid.core.weights import torch_load_problem
from vreid.models import build_model

FORMAT = "vreid-checkpoint"
VERSION = 1

INFERENCE_FILE = "model.pt"
"""The weights-only inference file training writes beside ``last.pt``."""

# What the inference file keeps of a training checkpoint (no optimizer, scheduler, RNG, history).
_INFERENCE_KEYS = ("model", "arch", "config", "epoch", "vehicle_ids", "trained_on", "best_map")

# ModelConfig keys that are not architecture options (they do not change the network's shape).
_NOT_ARCH_KEYS = {"name", "pretrained", "image_size"}


def arch_from_config(model_config: Any, num_classes: int) -> dict[str, Any]:
    """The ``arch`` dict of a model built from a ``ModelConfig`` with ``num_classes`` ids."""
    options = {
        k: v for k, v in model_config.model_dump(mode="json").items() if k not in _NOT_ARCH_KEYS
    }
    options["backbone"] = model_config.backbone_for(model_config.name)
    return {"name": model_config.name, "num_classes": int(num_classes), **options}


def build_from_arch(arch: dict[str, Any], **extra: Any) -> nn.Module:
    """Build the (untrained) model an ``arch`` dict describes."""

    options = {k: v for k, v in arch.items() if k not in ("name", "num_classes")}
    options.update(extra)
    return build_model(arch["name"], int(arch["num_classes"]), **options)


def _describe(arch: dict[str, Any]) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in arch.items() if k not in ("name", "num_classes"))
    return f"'{arch['name']}'" + (f" ({opts})" if opts else "")


def check_arch(
    found: dict[str, Any],
    wanted: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    check_classes: bool = True,
    classes_hint: str = "",
) -> None:
    """Raise :class:`CheckpointError` when checkpoint ``path``'s ``found`` arch differs from ``wanted``.

    The message says which keys differ and the ``--set`` that would match the checkpoint.
    """
    keys = (set(found) | set(wanted)) - {"num_classes"}
    diff = sorted(k for k in keys if found.get(k) != wanted.get(k))
    if diff:
        sets = " ".join(f"model.{k}={found.get(k)}" for k in diff)
        raise CheckpointError(
            f"{path}: checkpoint holds a {_describe(found)} model, the config asks for "
            f"{_describe(wanted)}; use a checkpoint of that architecture or set {sets}"
        )
    if check_classes and int(found["num_classes"]) != int(wanted["num_classes"]):
        raise CheckpointError(
            f"{path}: checkpoint was trained on {found['num_classes']} identities, this dataset has "
            f"{wanted['num_classes']}" + (f"; {classes_hint}" if classes_hint else "")
        )


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file renamed into place)."""
    state = {"format": FORMAT, "version": VERSION, **checkpoint}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def save_model_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    arch: dict[str, Any],
    config: BaseModel,
    *,
    vehicle_ids: Sequence[int] | None = None,
) -> Path:
    """A checkpoint of ``model`` as it is (epoch 0, no training state): what the Extractor, export
    and the index read. Used for the pipeline's untrained baseline and random-weights models."""
    checkpoint: dict[str, Any] = {
        "model": model.state_dict(),
        "arch": arch,
        "config": config.model_dump(mode="json"),
        "epoch": 0,
    }
    if vehicle_ids is not None:
        checkpoint["vehicle_ids"] = list(vehicle_ids)
    return save_checkpoint(path, checkpoint)


def save_inference_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> Path:
    """Write the weights-only inference file of training ``checkpoint`` (what ``last.pt`` holds)
    to ``path`` atomically: model weights (on the CPU), ``arch``, ``config``, ``epoch``,
    ``vehicle_ids``, ``trained_on``, ``best_map``; no optimizer or other resume state."""
    small = {k: checkpoint[k] for k in _INFERENCE_KEYS if k in checkpoint}
    small["model"] = {k: v.detach().cpu() for k, v in checkpoint["model"].items()}
    return save_checkpoint(path, small)


def training_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What the model of checkpoint ``state`` was trained on: ``dataset`` (root), ``format``,
    ``identities``, ``images`` (training images), ``image_size`` (H, W) and ``epochs``; ``None``
    for what the checkpoint does not record (checkpoints written before ``trained_on`` existed
    lack the dataset, format and image count)."""
    trained = state.get("trained_on") or {}
    arch = state.get("arch") or {}
    model_cfg = (state.get("config") or {}).get("model") or {}
    size = model_cfg.get("image_size")
    identities = trained.get("identities", arch.get("num_classes"))
    return {
        "dataset": trained.get("dataset"),
        "format": trained.get("format"),
        "identities": int(identities) if identities is not None else None,
        "images": trained.get("images"),
        "image_size": [int(v) for v in size] if size is not None else None,
        "epochs": int(state["epoch"]) if state.get("epoch") is not None else None,
    }


def describe_training(summary: dict[str, Any]) -> str:
    """One line of a :func:`training_summary`, e.g. ``"trained on /data/real (aic20): 333
    identities, 36935 images, input 128×256 (h×w), 12 epochs"``; ``unknown`` for missing values."""

    def known(value: Any, text: str) -> str:
        return text if value is not None else "unknown"

    dataset = summary.get("dataset")
    fmt = summary.get("format")
    where = known(dataset, f"{dataset}" + (f" ({fmt})" if fmt else ""))
    size = summary.get("image_size")
    epochs = summary.get("epochs")
    ids, images = summary.get("identities"), summary.get("images")
    return (
        f"trained on {where}: {known(ids, f'{ids}')} identities, "
        f"{known(images, f'{images}')} images, "
        f"input {known(size, '×'.join(map(str, size or [])))} (h×w), "
        f"{known(epochs, f'{epochs}')} epoch{'' if epochs == 1 else 's'}"
    )


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; any problem is a :class:`CheckpointError`."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(
            f"{p}: is a folder; pass a checkpoint file (a run keeps them in {p}/checkpoints/)"
        )
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ) as err:
        raise CheckpointError(
            f"{p}: not a readable vreid checkpoint ({torch_load_problem(p, err)}); was it "
            "written by `vreid train`?"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise CheckpointError(
            f"{p}: not a vreid checkpoint (a dict with 'model' and 'arch' keys was expected); "
            "checkpoints are written by `vreid train`"
        )
    arch = state["arch"]
    if not isinstance(arch, dict) or "name" not in arch or "num_classes" not in arch:
        raise CheckpointError(f"{p}: the checkpoint's 'arch' entry lacks 'name'/'num_classes'")
    return state


def load_state_dict_checked(
    model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | os.PathLike[str]
) -> None:
    """``model.load_state_dict(state_dict)`` with a :class:`CheckpointError` naming the file."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0] if lines else ""
        raise CheckpointError(
            f"{path}: weights do not fit the model described by the checkpoint ({detail})"
        ) from None


def check_reid_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint that is not a re-id model of `vreid train` (what retrieval extracts
    features with): an attribute model or a detector, naming what it is and the flag that takes it.
    """
    arch = state.get("arch") or {}
    name = arch.get("name") if isinstance(arch, dict) else None
    if name == "attributes":
        raise CheckpointError(
            f"{path}: an attribute-model checkpoint (`vreid train-attributes`), not a re-id model; "
            "`vreid extract` takes it with --attributes, `vreid search` as --attributes CHECKPOINT "
            "(the metadata of the chain), never as a re-id model"
        )
    if state.get("kind") == "vreid-detector" or (isinstance(arch, dict) and "categories" in arch):
        raise CheckpointError(
            f"{path}: a detector checkpoint (`vreid train-detector`), not a re-id model; pass it "
            "as --weights of `vreid crop` (or `vreid search --crop --detector-weights`)"
        )


def load_model(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    num_classes: int | None = None,
    eval_mode: bool = True,
) -> nn.Module:
    """Rebuild the model of checkpoint ``path`` from its ``arch`` and load its weights.

    ``num_classes``, when given, must equal the checkpoint's number of training identities
    (a :class:`CheckpointError` otherwise). The model is moved to ``device`` and put in eval mode
    (retrieval features) unless ``eval_mode`` is False.
    """
    state = load_checkpoint(path)
    check_reid_checkpoint(state, path)
    arch = dict(state["arch"])
    if num_classes is not None and int(arch["num_classes"]) != int(num_classes):
        raise CheckpointError(
            f"{path}: checkpoint was trained on {arch['num_classes']} identities, "
            f"{num_classes} were expected"
        )
    try:
        model = build_from_arch(arch)
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot rebuild model {_describe(arch)} ({err}); "
            "was it written by another vreid version?"
        ) from None
    load_state_dict_checked(model, state["model"], path)
    model.to(device)
    return model.eval() if eval_mode else model.train()


# ---------------------------------------------------------------------------------------------
# RNG state (torch, CUDA, numpy, python) as weights_only-safe values


def rng_state() -> dict[str, Any]:
    """The process's RNG states as tensors/lists (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is what we save)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            n["key"].numpy().astype(np.uint32),
            int(n["pos"]),
            int(n["has_gauss"]),
            float(n["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate(
        (int(py["version"]), tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"])
    )
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
