"""``vreid export``: a checkpoint's re-id model as an ONNX file, verified with onnxruntime.

:func:`export_onnx` rebuilds the model of a ``vreid train`` checkpoint (eval mode: the retrieval
features after the BN neck), exports it with a dynamic batch dimension (input ``images`` (B, 3, H,
W) float32, ImageNet-normalised as :class:`~vreid.Extractor` prepares it; output ``features`` (B,
D), not L2-normalised) and stores in the file's metadata what :class:`~vreid.Extractor` needs to
run it (input size, architecture, feature size), what the model was trained on (``trained_on``)
and where it came from (the checkpoint's SHA-256).

Before anything is written, the exported graph runs in onnxruntime on a batch of several images of
the checkpoint's input size (a batch size other than the one traced, so the dynamic batch is
exercised) and its features are compared with torch's: the ``.onnx`` is written (atomically) only
when they agree to ``tolerance`` max abs, on the raw features relative to their scale and on the
L2-normalised features :class:`~vreid.Extractor` returns. The numbers go into ``<out>.json``
beside the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vreid.core.artefacts import atomic_path, refuse_overwrite, write_json_atomic
from vreid.core.errors import CheckpointError, VreidError
from vreid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vreid.inference.extract import (
    ONNX_FORMAT,
    ONNX_INPUT,
    ONNX_OUTPUT,
    OnnxFeatureModel,
    _import_onnxruntime,
)
from vreid.models.checkpoint import load_checkpoint, load_model, training_summary

#: The ONNX opset written by default (recent enough for every vreid model; onnxruntime ≥ 1.17 runs it).
DEFAULT_OPSET = 20
#: Largest max abs difference accepted between the onnxruntime and torch features.
DEFAULT_TOLERANCE = 1e-4


class ExportError(VreidError):
    """The exported model could not be made or does not reproduce torch's features."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and measured (also written to :attr:`report`)."""

    onnx: Path
    report: Path
    checkpoint: str
    checkpoint_sha256: str
    arch: dict[str, Any]
    image_size: tuple[int, int]
    feature_dim: int
    opset: int
    batch_checked: int
    max_abs_diff: float
    """max |onnxruntime − torch| over the raw features of the check batch."""
    max_abs_feature: float
    """max |torch feature| of the check batch (the scale of the raw difference)."""
    max_abs_diff_normalized: float
    """max |onnxruntime − torch| over the L2-normalised features (what Extractor returns)."""
    tolerance: float
    seconds: float

    def summary(self) -> str:
        """A few lines for the command's output."""
        h, w = self.image_size
        return (
            f"wrote {self.onnx} (opset {self.opset}, dynamic batch, input images (B, 3, {h}, {w}), "
            f"output features (B, {self.feature_dim}))\n"
            f"verified with onnxruntime on {self.batch_checked} images of {h}×{w}: "
            f"max abs diff {self.max_abs_diff:.3g} (features up to {self.max_abs_feature:.3g}), "
            f"{self.max_abs_diff_normalized:.3g} after L2 normalisation "
            f"(tolerance {self.tolerance:g})\n"
            f"report: {self.report}"
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def report_path(onnx_path: str | os.PathLike[str]) -> Path:
    """The JSON written beside an exported model: ``model.onnx`` → ``model.onnx.json``."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def check_images(image_size: tuple[int, int], batch: int, *, seed: int = 0) -> torch.Tensor:
    """``batch`` image-like inputs (B, 3, H, W): smooth random colour fields in [0, 1], normalised
    with the ImageNet statistics as :class:`~vreid.Extractor` does (realistic value ranges)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = image_size
    coarse = torch.rand((batch, 3, max(h // 8, 1), max(w // 8, 1)), generator=gen)
    fine = torch.rand((batch, 3, h, w), generator=gen)
    pixels = 0.8 * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    pixels = (pixels + 0.2 * fine).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (pixels - mean) / std


def _export_proto(model: torch.nn.Module, example: torch.Tensor, opset: int) -> Any:
    batch = torch.export.Dim("batch", min=1, max=65536)
    chatter = io.StringIO()  # the exporter prints its steps; keep the command's output short
    try:
        with contextlib.redirect_stdout(chatter):
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_shapes={"x": {0: batch}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many kinds; one line for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"the ONNX export failed ({type(err).__name__}: {first})") from None
    if program is None:  # pragma: no cover - only when f= is given
        raise ExportError("the ONNX export returned no program")
    return program.model_proto


def export_onnx(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    batch: int = 8,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``checkpoint``'s model to ``out`` (``.onnx``) and verify it; returns the numbers.

    Refuses an existing ``out`` (or its ``.json`` report) unless ``overwrite``. Raises
    :class:`CheckpointError` for an unreadable checkpoint, :class:`ExportError` when the export
    fails or onnxruntime's features differ from torch's by more than ``tolerance``; nothing is
    written then.
    """
    started = time.perf_counter()
    ckpt = Path(checkpoint)
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"{out}: the exported model's name must end in .onnx")
    if batch < 2:
        raise ExportError(f"the check batch must hold several images (got {batch})")
    report = report_path(out)
    refuse_overwrite(out, overwrite=overwrite)
    refuse_overwrite(report, overwrite=overwrite)
    _import_onnxruntime("vreid export")
    import onnx

    state = load_checkpoint(ckpt)
    model_cfg = (state.get("config") or {}).get("model") or {}
    image_size = tuple(int(v) for v in model_cfg.get("image_size", (128, 256)))
    if len(image_size) != 2:
        raise CheckpointError(f"{ckpt}: model.image_size in its config is not (height, width)")
    arch = dict(state["arch"])
    trained_on = training_summary(state)
    model = load_model(ckpt, "cpu")
    feature_dim = int(getattr(model, "feature_dim", 0))
    sha = file_sha256(ckpt)
    del state

    # Trace with a batch of 2, check with ``batch``: a graph that kept the traced batch size fails.
    proto = _export_proto(model, check_images(image_size, 2, seed=1), opset)
    meta = {
        "format": ONNX_FORMAT,
        "version": 1,
        "image_size": list(image_size),
        "arch": arch,
        "feature_dim": feature_dim,
        "trained_on": trained_on,
        "checkpoint": ckpt.name,
        "checkpoint_sha256": sha,
        "input": ONNX_INPUT,
        "output": ONNX_OUTPUT,
        "normalized": False,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"vreid.{key}", json.dumps(value)
    proto.producer_name = "vreid"
    data = proto.SerializeToString()

    images = check_images(image_size, batch, seed=0)
    with torch.no_grad():
        expected = model(images).float()
    runner = OnnxFeatureModel(data, "cpu", name=str(out))
    got = runner(images)
    if got.shape != expected.shape:
        raise ExportError(
            f"{out}: onnxruntime gave features of shape {tuple(got.shape)}, torch "
            f"{tuple(expected.shape)}; the export is not usable"
        )
    diff = float((got - expected).abs().max())
    scale = float(expected.abs().max())
    diff_norm = float((F.normalize(got, dim=1) - F.normalize(expected, dim=1)).abs().max())
    if not (diff <= tolerance * max(1.0, scale) and diff_norm <= tolerance):
        raise ExportError(
            f"{out}: onnxruntime's features differ from torch's by {diff:.3g} max abs (features up "
            f"to {scale:.3g}; {diff_norm:.3g} after L2 normalisation), more than the tolerance "
            f"{tolerance:g}; nothing written (try another --opset)"
        )

    onnx.checker.check_model(proto)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    result = ExportResult(
        onnx=out,
        report=report,
        checkpoint=str(ckpt),
        checkpoint_sha256=sha,
        arch=arch,
        image_size=(image_size[0], image_size[1]),
        feature_dim=feature_dim,
        opset=opset,
        batch_checked=batch,
        max_abs_diff=diff,
        max_abs_feature=scale,
        max_abs_diff_normalized=diff_norm,
        tolerance=tolerance,
        seconds=round(time.perf_counter() - started, 2),
    )
    record = asdict(result)
    record.update(
        onnx=str(out),
        report=str(report),
        image_size=list(result.image_size),
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        onnxruntime=_import_onnxruntime("vreid export").__version__,
        torch=torch.__version__,
    )
    write_json_atomic(report, record)
    return result
