"""Feature extraction with a trained checkpoint: :class:`Extractor` and :func:`extract_split`.

Rank your own folder of images in a few lines::

    from vreid import Extractor
    from vreid.retrieval import pairwise_distances

    extract = Extractor("runs/demo/checkpoints/best.pt")        # CUDA when available
    query = extract(["my_car.jpg"])                             # (1, D)
    gallery_paths = sorted(Path("parking_lot").glob("*.jpg"))
    gallery = extract(gallery_paths)                            # (N, D)
    order = pairwise_distances(query.numpy(), gallery.numpy())[0].argsort()
    print([gallery_paths[i].name for i in order[:10]])

``Extractor`` also runs an ``.onnx`` file written by ``vreid export`` (with onnxruntime, the
``export`` extra): same preprocessing, the input size read from the file's metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vreid.core.devices import resolve_device
from vreid.core.errors import CheckpointError
from vreid.core.progress import progress_bar
from vreid.data.image_datasets import ImageListDataset, worker_errors
from vreid.data.records import ImageRecord
from vreid.data.transforms import build_transforms
from vreid.inference.features import save_features
from vreid.models.checkpoint import (
    describe_training,
    load_checkpoint,
    load_model,
    training_summary,
)


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
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """An ordered, non-shuffling loader with its own generator (it never draws from the global RNG,
    so evaluating does not change what a training run does next). With ``num_workers > 0`` the
    workers decode ``prefetch_factor`` batches each ahead of the model (torch's default, 2, when
    None)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(0),
    )


#: Metadata keys ``vreid export`` stores in an ONNX file (``metadata_props``; values are JSON).
ONNX_FORMAT = "vreid-onnx"
ONNX_INPUT = "images"
ONNX_OUTPUT = "features"


def _import_onnxruntime(what: str) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(
            f"{what} needs onnxruntime; install it with: pip install 'vreid[export]'"
        ) from None
    return onnxruntime


class OnnxFeatureModel(nn.Module):
    """An ONNX file of ``vreid export`` run with onnxruntime, as a module: ``model(x (B, 3, H, W))
    -> (B, D)`` float32 features (what the torch model gives in eval mode).

    ``source`` is the file's path or its bytes (``name`` then names it in errors). ``metadata`` holds
    the ``vreid.*`` entries the export stored (``image_size``, ``arch``, ``feature_dim``,
    ``checkpoint_sha256`` …), decoded from JSON. CUDA runs through onnxruntime's CUDA provider
    when ``device`` is CUDA and that provider is installed, otherwise on the CPU.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes,
        device: str | torch.device = "cpu",
        *,
        name: str | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        label = name or (str(source) if not isinstance(source, bytes) else "ONNX model")
        ort = _import_onnxruntime(f"{label}: running an ONNX model")
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise CheckpointError(f"{label}: ONNX file not found")
        dev = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                source if isinstance(source, bytes) else str(source), options, providers=providers
            )
        except Exception as err:  # onnxruntime raises its own classes (InvalidProtobuf, Fail …)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{label}: not a readable ONNX model ({first}); write one with `vreid export`"
            ) from None
        raw = self.session.get_modelmeta().custom_metadata_map
        if raw.get("vreid.format") != json.dumps(ONNX_FORMAT):
            raise CheckpointError(
                f"{label}: an ONNX model without vreid metadata (input size, architecture); "
                "export the checkpoint with `vreid export CKPT --out FILE.onnx`"
            )
        self.metadata: dict[str, Any] = {
            k.removeprefix("vreid."): json.loads(v)
            for k, v in raw.items()
            if k.startswith("vreid.")
        }
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.feature_dim = int(self.metadata.get("feature_dim", 0))
        self.providers = self.session.get_providers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(out).to(x.device)


def auto_workers(images: Sequence[Any], batch_size: int) -> int:
    """Decoding workers for ``images``: half the CPU cores (1 to 4) when they are files and more
    than one batch (decoding then overlaps the model; measured in docs/readme/extraction.md),
    else 0 (images in memory would only be copied to the workers; one batch has nothing to
    overlap)."""
    if len(images) <= batch_size or not all(isinstance(i, str | os.PathLike) for i in images):
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 2))


def is_onnx_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an ONNX model (by its ``.onnx`` suffix)."""
    return Path(path).suffix.lower() == ".onnx"


class Extractor:
    """Retrieval features of images with the model of a ``vreid train`` checkpoint (or the ``.onnx``
    file ``vreid export`` made of one).

    ``Extractor(checkpoint)(images) -> Tensor (N, D)`` (float32, on the CPU) for a list of image
    paths, PIL images or (H, W, 3) uint8 RGB arrays, or a single one of those (N = 1). Images are
    resized to the checkpoint's input size and normalised as in training; ``flip`` averages each
    image's features with its mirror image's; ``normalize`` scales each row to unit L2 norm.

    Args:
        checkpoint: path of a checkpoint written by ``vreid train`` (``last.pt``, ``best.pt`` or the
            small inference file ``model.pt``), or of an ``.onnx`` file written
            by ``vreid export`` (run with onnxruntime; ``amp`` and ``channels_last`` do not apply).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …
        batch_size: images per forward pass.
        flip: horizontal-flip test-time augmentation.
        normalize: L2-normalise the features.
        num_workers: image-decoding worker processes (0 decodes in the calling process); with
            workers, decoding overlaps the model's compute, ``prefetch_factor`` batches per worker
            ahead. ``None`` (default) = :func:`auto_workers`: decoding workers (half the cores, 1
            to 4) when the images are files and more than one batch, else 0.
        amp: ``"off"`` (float32, the default), ``"bf16"`` (autocast to bfloat16, CPU or CUDA) or
            ``"fp16"`` (CUDA only; ignored on the CPU).
        channels_last: run the model in channels-last memory format; ``None`` (default) = on for a
            checkpoint on the CPU, where it was measured faster (docs/readme/extraction.md), off
            elsewhere. The features are the same up to float rounding.
        prefetch_factor: batches each worker decodes ahead (torch's default, 2, when None).
        progress: show a progress bar when extracting.

    Attributes:
        trained_on: what the model was trained on (:func:`vreid.models.checkpoint.training_summary`):
            ``dataset`` (root folder), ``format``, ``identities``, ``images``, ``image_size``
            (H, W), ``epochs``; ``None`` where the checkpoint does not say (older checkpoints
            lack the dataset, its format and image count). :attr:`training_note` says it in a line.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        device: str | torch.device = "auto",
        batch_size: int = 64,
        flip: bool = False,
        normalize: bool = True,
        *,
        num_workers: int | None = None,
        amp: str = "off",
        channels_last: bool | None = None,
        prefetch_factor: int | None = None,
        progress: bool = False,
    ) -> None:
        if amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"amp must be 'off', 'bf16' or 'fp16' (got {amp!r})")
        self.checkpoint = Path(checkpoint)
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.flip = flip
        self.normalize = normalize
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.progress = progress
        self.onnx = is_onnx_file(self.checkpoint)
        self.model: nn.Module
        if self.onnx:
            onnx_model = OnnxFeatureModel(self.checkpoint, self.device)
            meta = onnx_model.metadata
            if "image_size" not in meta or "arch" not in meta:
                raise CheckpointError(
                    f"{self.checkpoint}: the ONNX metadata lacks the input size or architecture; "
                    "export the checkpoint again with `vreid export`"
                )
            self.image_size: tuple[int, int] = tuple(int(v) for v in meta["image_size"])  # type: ignore[assignment]
            self.arch: dict[str, Any] = dict(meta["arch"])
            self.trained_on: dict[str, Any] = meta.get("trained_on") or training_summary(
                {"arch": self.arch, "config": {"model": {"image_size": self.image_size}}}
            )
            self.model = onnx_model
            self.amp_dtype: torch.dtype | None = None
            self.channels_last = False
        else:
            state = load_checkpoint(self.checkpoint)
            model_cfg = (state.get("config") or {}).get("model") or {}
            self.image_size = tuple(model_cfg.get("image_size", (128, 256)))  # type: ignore[assignment]
            self.arch = dict(state["arch"])
            self.trained_on = training_summary(state)
            del state
            self.model = load_model(self.checkpoint, self.device)
            self.amp_dtype = (
                {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
                if self.device.type == "cuda" or amp == "bf16"
                else None
            )
            if channels_last is None:
                channels_last = self.device.type == "cpu"
            self.channels_last = bool(channels_last)
            if self.channels_last:
                self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.feature_dim = int(getattr(self.model, "feature_dim", 0))
        self.transform = build_transforms(self.image_size, train=False)

    @property
    def training_note(self) -> str:
        """:attr:`trained_on` in one line: ``"trained on /data/real (aic20): 333 identities, 36935
        images, input 128×256 (h×w), 12 epochs"`` (``unknown`` where the checkpoint is silent)."""
        return describe_training(self.trained_on)

    def __repr__(self) -> str:
        return (
            f"Extractor({str(self.checkpoint)!r}, model={self.arch['name']}, device={self.device}, "
            f"image_size={self.image_size}, flip={self.flip}, normalize={self.normalize}"
            + (", onnx=True" if self.onnx else "")
            + ")"
        )

    def __call__(self, images: Any, *, description: str = "features") -> torch.Tensor:
        """Features (N, D) of ``images`` (a sequence of paths/PIL images/arrays, or one image)."""
        from PIL import Image

        if isinstance(images, str | os.PathLike | Image.Image) or (
            hasattr(images, "ndim") and images.ndim in (2, 3) and not isinstance(images, list)
        ):
            images = [images]
        items = list(images)
        dataset = ImageListDataset(items, self.transform)
        loader = eval_loader(
            dataset,
            batch_size=self.batch_size,
            num_workers=auto_workers(items, self.batch_size)
            if self.num_workers is None
            else self.num_workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=self.prefetch_factor,
        )
        return extract_features(
            self.model,
            loader,
            self.device,
            flip=self.flip,
            normalize=self.normalize,
            amp_dtype=self.amp_dtype,
            channels_last=self.channels_last,
            progress=self.progress,
            description=description,
        )


def extract_split(
    checkpoint_or_extractor: str | os.PathLike[str] | Extractor,
    records: Sequence[ImageRecord],
    out_stem: str | os.PathLike[str],
    **extractor_options: Any,
) -> Path:
    """Write the features of ``records`` (in order) to ``out_stem.npy`` + ``out_stem.names.txt``.

    Rows follow ``records``; the name index holds each record's ``name``. Returns the ``.npy`` path.
    ``extractor_options`` build the :class:`Extractor` when a checkpoint path is given.
    """
    extractor = (
        checkpoint_or_extractor
        if isinstance(checkpoint_or_extractor, Extractor)
        else Extractor(checkpoint_or_extractor, **extractor_options)
    )
    split = records[0].split if records else Path(out_stem).name
    feats = extractor([r.path for r in records], description=f"extract {split}")
    return save_features(out_stem, feats.numpy(), [r.name for r in records])
