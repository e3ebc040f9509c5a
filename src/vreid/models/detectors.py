"""torchvision detectors built by name, with their COCO weights the way torchvision users get them.

Every detector is built with ``weights=None, weights_backbone=None`` (random initialisation, no
network access by torchvision) and then receives its weights from one of:

* torchvision's COCO file (the ``Weights`` enum member of :data:`DETECTORS`) in the torch hub
  cache, ``torch.hub.get_dir()/checkpoints/<file name of its URL>``: read from there (its SHA-256
  must start with the hash in its name), or downloaded there on first use with a progress bar and
  torch.hub's hash check (:func:`vreid.core.weights.fetch_state_dict`);
* ``weights=PATH``: a torchvision COCO file placed anywhere, or a checkpoint written by
  :func:`vreid.engine.detector` (a dict with ``model``, ``arch`` …); both are read with
  ``torch.load(..., weights_only=True)``.

Offline (``VREID_OFFLINE=1`` or no network) with no cached file, a one-line
:class:`~vreid.core.errors.WeightsError` names the cache path and the URL to fetch the file from, or
says to train one with ``vreid train-detector``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import detection as tvd

from vreid.core.errors import ConfigError, WeightsError
from vreid.core.weights import (
    cache_path,
    fetch_state_dict,
    file_sha256,
    read_weights_file,
    verify_file_hash,
)

__all__ = [
    "CHECKPOINT_KIND",
    "COCO_VEHICLE_CLASSES",
    "DETECTORS",
    "VEHICLE_CATEGORIES",
    "DetectorSpec",
    "LoadedDetector",
    "build_detector",
    "check_torchvision_file",
    "coco_cache_path",
    "detector_names",
    "detector_spec",
    "file_sha256",
    "load_detector",
]

#: COCO category names of torchvision's detection weights that count as a vehicle (paper: car, bus,
#: truck — the classes Detectron2's Mask R-CNN gives to vehicles on AIC frames).
COCO_VEHICLE_CLASSES = ("car", "bus", "truck")
#: Categories of a detector trained by ``vreid train-detector``: background and one vehicle class.
VEHICLE_CATEGORIES = ("__background__", "vehicle")
#: ``kind`` entry of a ``vreid train-detector`` checkpoint.
CHECKPOINT_KIND = "vreid-detector"


@dataclass(frozen=True)
class DetectorSpec:
    """How to build one torchvision detector and where its COCO weights come from."""

    builder: Callable[..., nn.Module]
    coco_weights: Any
    """The torchvision ``Weights`` enum member of its COCO weights."""

    @property
    def coco_file_name(self) -> str:
        """File name torchvision gives the COCO weights in its cache (``<arch>-<sha256 prefix>.pth``)."""
        return self.coco_weights.url.rsplit("/", 1)[-1]

    @property
    def coco_categories(self) -> tuple[str, ...]:
        return tuple(self.coco_weights.meta["categories"])


DETECTORS: dict[str, DetectorSpec] = {
    "fasterrcnn_resnet50_fpn": DetectorSpec(
        tvd.fasterrcnn_resnet50_fpn, tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    ),
    "fasterrcnn_resnet50_fpn_v2": DetectorSpec(
        tvd.fasterrcnn_resnet50_fpn_v2, tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": DetectorSpec(
        tvd.fasterrcnn_mobilenet_v3_large_fpn,
        tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": DetectorSpec(
        tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
        tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    ),
    "maskrcnn_resnet50_fpn": DetectorSpec(
        tvd.maskrcnn_resnet50_fpn, tvd.MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    ),
    "maskrcnn_resnet50_fpn_v2": DetectorSpec(
        tvd.maskrcnn_resnet50_fpn_v2, tvd.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    ),
    "retinanet_resnet50_fpn": DetectorSpec(
        tvd.retinanet_resnet50_fpn, tvd.RetinaNet_ResNet50_FPN_Weights.COCO_V1
    ),
    "retinanet_resnet50_fpn_v2": DetectorSpec(
        tvd.retinanet_resnet50_fpn_v2, tvd.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1
    ),
    "fcos_resnet50_fpn": DetectorSpec(tvd.fcos_resnet50_fpn, tvd.FCOS_ResNet50_FPN_Weights.COCO_V1),
    "ssdlite320_mobilenet_v3_large": DetectorSpec(
        tvd.ssdlite320_mobilenet_v3_large, tvd.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1
    ),
    "ssd300_vgg16": DetectorSpec(tvd.ssd300_vgg16, tvd.SSD300_VGG16_Weights.COCO_V1),
}


def detector_names() -> list[str]:
    """Names accepted by :func:`build_detector`."""
    return sorted(DETECTORS)


def detector_spec(name: str) -> DetectorSpec:
    """The :class:`DetectorSpec` of ``name``; an unknown name raises :class:`ConfigError` listing
    the known ones."""
    try:
        return DETECTORS[name]
    except KeyError:
        raise ConfigError(
            f"unknown detector {name!r}; known detectors: {', '.join(detector_names())}"
        ) from None


def build_detector(name: str, num_classes: int = 91, **options: Any) -> nn.Module:
    """Build the torchvision detector ``name`` with random weights (``weights=None``,
    ``weights_backbone=None``); ``options`` go to torchvision's builder (``min_size``, …).

    ``num_classes`` counts the background (COCO: 91; ``vreid train-detector``: 2).
    """
    spec = detector_spec(name)
    return spec.builder(weights=None, weights_backbone=None, num_classes=num_classes, **options)


def coco_cache_path(name: str) -> Path:
    """Where torchvision keeps the COCO weights of detector ``name`` (whether or not it is there)."""
    return cache_path(detector_spec(name).coco_weights.url)


def check_torchvision_file(path: Path, expected_name: str | None = None) -> None:
    """Check that a torchvision weights file is intact: its SHA-256 must start with the hash in its
    name (``fasterrcnn_…-907ea3f9.pth``), as torchvision checks after downloading.

    With ``expected_name``, a file named otherwise is refused.
    """
    if expected_name is not None and path.name != expected_name:
        raise WeightsError(
            f"{path}: expected torchvision's file {expected_name} for this detector, got {path.name}"
        )
    verify_file_hash(path)


@dataclass
class LoadedDetector:
    """A detector in eval mode with what is needed to read its output."""

    model: nn.Module
    name: str
    """Architecture name (key of :data:`DETECTORS`)."""
    categories: tuple[str, ...]
    """Category name of each output label (index 0 is the background)."""
    vehicle_labels: tuple[int, ...]
    """Output labels that count as a vehicle."""
    source: str
    """Where the weights came from (printed to the user, stored in crop reports)."""
    options: dict[str, Any]
    """Builder options the model was made with (``min_size``, …)."""
    weights_file: Path | None = None
    """The weights file read (its content fingerprint goes into crop settings)."""


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, name: str) -> None:
    """Load ``state`` into ``model``; only BatchNorm ``num_batches_tracked`` counters may be missing
    (torchvision's COCO files use frozen batch norm, which has none)."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(
            f"{path}: weights do not fit detector {name!r} ({first}); pass the file made for it"
        ) from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{path}: weights do not fit detector {name!r}: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:2]}); "
            "pass the file made for this detector (--detector must match the file)"
        )


def _read_weights_file(path: Path) -> Any:
    try:
        return read_weights_file(path)
    except WeightsError as err:
        if not path.is_file():
            raise
        raise WeightsError(
            f"{err}; pass a torchvision detection weights file or a `vreid train-detector` "
            "checkpoint"
        ) from None


def _instead(name: str) -> str:
    return (
        "or give a copy of it as crop.weights (`vreid crop --weights PATH`, `vreid search "
        "--detector-weights PATH`, or --set crop.weights=PATH in any command), "
        "or train a detector on data with true boxes: "
        f"`vreid train-detector DATA_ROOT --out detector.pt --detector {name}` and give "
        "detector.pt the same way"
    )


def _to_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    return model.to(device).eval()


def load_detector(
    name: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> LoadedDetector:
    """Build a detector and load its weights (see the module docstring for where they come from:
    ``weights=None`` reads torchvision's COCO file from the torch hub cache, downloading it there
    on first use).

    ``name=None`` takes the architecture stored in a ``vreid train-detector`` checkpoint, or
    ``fasterrcnn_mobilenet_v3_large_fpn`` otherwise. A checkpoint made for another architecture
    than an explicitly given ``name`` is refused.
    """
    if name is not None:
        detector_spec(name)  # unknown names fail first, whatever the weights
    if weights is None:
        name = name or "fasterrcnn_mobilenet_v3_large_fpn"
        spec = detector_spec(name)
        state, path = fetch_state_dict(
            spec.coco_weights.url,
            what=f"COCO weights of detector {name} ({spec.coco_weights!r})",
            instead=_instead(name),
        )
        return _from_coco_state(name, state, path, device, source=f"torchvision COCO cache {path}")

    path = Path(weights)
    state = _read_weights_file(path)
    if isinstance(state, dict) and state.get("kind") == CHECKPOINT_KIND:
        return _from_checkpoint(name, state, path, device)
    if isinstance(state, dict) and "model" in state and "arch" in state:
        raise WeightsError(
            f"{path}: a checkpoint of another kind ({state.get('kind', 'a re-id model')}), not a "
            "detector; pass a `vreid train-detector` checkpoint or a torchvision detection file"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"{path}: not a state dict of tensors; pass a torchvision detection weights file or a "
            "`vreid train-detector` checkpoint"
        )
    if name is None:
        name = next((n for n in DETECTORS if path.name == DETECTORS[n].coco_file_name), None)
        if name is None:
            raise WeightsError(
                f"{path}: cannot tell which detector these weights are for; pass --detector "
                f"(one of {', '.join(detector_names())})"
            )
    check_torchvision_file(path)
    return _from_coco_state(name, state, path, device, source=f"torchvision weights file {path}")


def _from_coco_state(
    name: str,
    state: Mapping[str, torch.Tensor],
    path: Path,
    device: str | torch.device,
    source: str,
) -> LoadedDetector:
    spec = detector_spec(name)
    categories = spec.coco_categories
    model = build_detector(name, num_classes=len(categories))
    _load_state(model, state, path, name)
    vehicle_labels = tuple(categories.index(c) for c in COCO_VEHICLE_CLASSES)
    return LoadedDetector(
        _to_device(model, device),
        name,
        categories,
        vehicle_labels,
        source,
        options={},
        weights_file=path,
    )


def _from_checkpoint(
    name: str | None, ckpt: dict[str, Any], path: Path, device: str | torch.device
) -> LoadedDetector:
    arch = ckpt.get("arch")
    if not isinstance(arch, dict) or "name" not in arch or "model" not in ckpt:
        raise WeightsError(f"{path}: detector checkpoint without 'arch' or 'model'; re-train it")
    arch_name = str(arch["name"])
    if name is not None and name != arch_name:
        raise WeightsError(
            f"{path}: checkpoint was trained for detector {arch_name!r}, not {name!r}; "
            f"pass --detector {arch_name} or leave --detector out"
        )
    categories = tuple(arch.get("categories", VEHICLE_CATEGORIES))
    options = dict(arch.get("options", {}))
    model = build_detector(arch_name, num_classes=len(categories), **options)
    _load_state(model, ckpt["model"], path, arch_name)
    vehicle_labels = tuple(i for i, c in enumerate(categories) if c != "__background__")
    epoch = ckpt.get("epoch")
    return LoadedDetector(
        _to_device(model, device),
        arch_name,
        categories,
        vehicle_labels,
        source=f"vreid train-detector checkpoint {path} (epoch {epoch})",
        options=options,
        weights_file=path,
    )
