"""What every re-id model here shares: the ResNet trunk, ImageNet weights, and the BN-neck head.

A re-id model is a torchvision ResNet trunk (its ``fc`` removed, last stage stride 1 by default),
global average pooling to a D-dimensional feature f, a BN neck (batch norm without a learned shift)
and a bias-free classifier. :class:`ReidResNet` is that model; GLAMOR subclasses it and adds its
attention modules.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from vreid.core.errors import ConfigError, WeightsError

log = logging.getLogger("vreid.models")

#: torchvision ResNet-family networks usable as a trunk.
TRUNKS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)

EvalFeatures = Literal["neck", "pre_neck"]


class ReidOutput(NamedTuple):
    """What a re-id model returns in train mode.

    Attributes:
        features: (B, D) pooled features before the BN neck (for the triplet loss).
        logits: (B, num_classes) identity logits (for the cross-entropy).
    """

    features: torch.Tensor
    logits: torch.Tensor


# ---------------------------------------------------------------------------------------------
# trunk


def build_trunk(name: str, *, last_stride: int = 1) -> ResNet:
    """A torchvision ResNet-family network ``name`` with random weights, ``fc`` replaced by identity.

    ``last_stride`` sets the stride of the first block of the last stage (1 doubles the final map:
    a 128×256 input gives an 8×16 map instead of 4×8).
    """
    if name not in TRUNKS:
        raise ConfigError(f"model.backbone: unknown trunk '{name}'; known: {', '.join(TRUNKS)}")
    if last_stride not in (1, 2):
        raise ConfigError(f"model.last_stride: must be 1 or 2 (got {last_stride})")
    trunk = torchvision.models.get_model(name, weights=None)
    assert isinstance(trunk, ResNet)
    trunk.fc = nn.Identity()
    first = trunk.layer4[0]
    if isinstance(first, Bottleneck):
        first.conv2.stride = (last_stride, last_stride)
    elif isinstance(first, BasicBlock):
        first.conv1.stride = (last_stride, last_stride)
    if first.downsample is not None:
        first.downsample[0].stride = (last_stride, last_stride)
    return trunk


def trunk_feature_dim(trunk: ResNet) -> int:
    """Channels D of the last stage's output (2048 for ResNet-50, 512 for ResNet-18)."""
    return int(block_out_channels(trunk.layer4[-1]))


def block_out_channels(block: nn.Module) -> int:
    """Output channels of a torchvision BasicBlock/Bottleneck."""
    if isinstance(block, Bottleneck):
        return int(block.bn3.num_features)
    if isinstance(block, BasicBlock):
        return int(block.bn2.num_features)
    raise TypeError(f"not a torchvision ResNet block: {type(block).__name__}")


# ---------------------------------------------------------------------------------------------
# ImageNet weights


def cached_imagenet_weights(name: str) -> Path | None:
    """The torchvision ImageNet weights file of trunk ``name`` in the torch hub cache, if any.

    Looks in ``torch.hub.get_dir()/checkpoints/`` for the file names torchvision would download
    (it never downloads anything).
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        enum = torchvision.models.get_model_weights(name)
    except ValueError:
        return None
    for weights in enum:
        candidate = folder / Path(weights.url).name
        if candidate.is_file():
            return candidate
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(
            f"{path}: weights file not found; give an existing file or leave it unset"
        )
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, a pickle of arbitrary objects, …
        raise WeightsError(
            f"{path}: cannot read it as a PyTorch weights file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        for prefix in ("module.", "trunk.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_trunk_weights(trunk: ResNet, path: str | os.PathLike[str], *, backbone: str) -> int:
    """Load ImageNet weights from ``path`` into ``trunk``; the classifier ``fc.*`` is ignored.

    Returns the number of tensors loaded. Raises :class:`WeightsError` naming the file when it is
    unreadable or holds weights of another architecture.
    """
    path = Path(path)
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(
                f"{len(wrong_shape)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs "
                f"{tuple(own[k].shape)})"
            )
        raise WeightsError(
            f"{path}: not weights of a {backbone} trunk: " + "; ".join(parts) + "; give the "
            f"weights file of torchvision's {backbone} or change model.backbone"
        )
    trunk.load_state_dict(state, strict=True)
    return len(state)


def init_trunk_weights(
    trunk: ResNet, backbone: str, pretrained: str | os.PathLike[str] | None
) -> str:
    """Apply the ``pretrained`` choice to ``trunk`` and return a one-line message saying what was done.

    ``pretrained``: ``None``/``""``/``"none"`` → random initialisation (the paper trains from
    scratch); ``"imagenet"`` → torchvision's ImageNet weights from the torch hub cache (a
    :class:`WeightsError` when absent: nothing is downloaded); ``"auto"`` → those weights when
    cached, otherwise random; anything else → a path to a weights file.
    """
    choice = None if pretrained is None else str(pretrained)
    if choice is None or choice.lower() in ("", "none", "scratch", "false"):
        message = f"{backbone} trunk: random initialisation (training from scratch)"
    elif choice.lower() in ("imagenet", "auto", "true"):
        found = cached_imagenet_weights(backbone)
        if found is None:
            folder = Path(torch.hub.get_dir()) / "checkpoints"
            if choice.lower() == "auto":
                message = (
                    f"{backbone} trunk: no ImageNet weights in {folder}; random initialisation "
                    "(training from scratch)"
                )
            else:
                raise WeightsError(
                    f"model.pretrained=imagenet: no torchvision {backbone} weights in {folder} "
                    "(nothing is downloaded); copy the file there, give its path, or leave "
                    "model.pretrained unset to train from scratch"
                )
        else:
            n = load_trunk_weights(trunk, found, backbone=backbone)
            message = f"{backbone} trunk: ImageNet weights from {found} ({n} tensors)"
    else:
        n = load_trunk_weights(trunk, choice, backbone=backbone)
        message = f"{backbone} trunk: weights from {choice} ({n} tensors)"
    log.info(message)
    return message


# ---------------------------------------------------------------------------------------------
# head and model


class BNNeckHead(nn.Module):
    """BN neck (batch norm without a learned shift) followed by a bias-free linear classifier."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.neck = nn.BatchNorm1d(feature_dim)
        self.neck.bias.requires_grad_(False)  # scale only: the shift stays 0
        self.classifier = self._new_classifier(feature_dim, num_classes)

    @staticmethod
    def _new_classifier(feature_dim: int, num_classes: int) -> nn.Linear:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1 (got {num_classes})")
        classifier = nn.Linear(feature_dim, num_classes, bias=False)
        nn.init.normal_(classifier.weight, std=0.001)
        return classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` identities."""
        old = self.classifier.weight
        new = self._new_classifier(old.shape[1], num_classes)
        self.classifier = new.to(device=old.device, dtype=old.dtype)


class ReidHeadMixin:
    """``num_classes`` and ``reset_classifier`` for a model whose re-id head is ``self.head``
    (a :class:`BNNeckHead`) and whose ``self.arch`` records how it was built."""

    head: BNNeckHead
    arch: dict[str, Any]

    @property
    def num_classes(self) -> int:
        """Outputs of the re-id classifier."""
        return int(self.head.classifier.out_features)

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh re-id classifier for ``num_classes`` identities (fine-tuning on another dataset)."""
        self.head.reset_classifier(num_classes)
        if self.arch:
            self.arch["num_classes"] = num_classes


class ReidResNet(ReidHeadMixin, nn.Module):
    """A torchvision ResNet trunk with the re-id head (the ``resnet50``/``resnext101_32x8d`` baselines).

    Eval mode: ``model(x (B, 3, H, W)) -> (B, D)`` retrieval features (after the BN neck by default,
    ``eval_features="pre_neck"`` for the pooled ones). Train mode: ``ReidOutput(features (B, D)
    before the neck, logits (B, num_classes))``.

    Args:
        num_classes: identities of the training set (classifier outputs).
        backbone: torchvision trunk name (see :data:`TRUNKS`).
        last_stride: stride of the last stage (1 or 2).
        pretrained: trunk weights: ``None`` (scratch), ``"imagenet"``, ``"auto"`` or a file path.
        eval_features: ``"neck"`` or ``"pre_neck"``: which features eval mode returns.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        last_stride: int = 1,
        pretrained: str | os.PathLike[str] | None = None,
        eval_features: EvalFeatures = "neck",
    ) -> None:
        super().__init__()
        if eval_features not in ("neck", "pre_neck"):
            raise ConfigError(f"eval_features must be 'neck' or 'pre_neck' (got {eval_features!r})")
        self.backbone = backbone
        self.eval_features = eval_features
        self.trunk = build_trunk(backbone, last_stride=last_stride)
        self.weights_message = init_trunk_weights(self.trunk, backbone, pretrained)
        self.feature_dim = trunk_feature_dim(self.trunk)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = BNNeckHead(self.feature_dim, num_classes)
        self.arch: dict[str, Any] = {}  # filled by build_model

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 64, H/4, W/4): conv, BN, ReLU, max-pool."""
        t = self.trunk
        return t.maxpool(t.relu(t.bn1(t.conv1(x))))

    def stage1(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 1 of the trunk (no downsampling)."""
        return self.trunk.layer1(x)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, D, H/16, W/16) with last stride 1 (H/32, W/32 with 2)."""
        t = self.trunk
        x = self.stage1(self.stem(x))
        return t.layer4(t.layer3(t.layer2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | ReidOutput:
        """Eval: (B, 3, H, W) → (B, D) features. Train: → :class:`ReidOutput`."""
        features = self.pool(self.feature_maps(x)).flatten(1)
        if not self.training:
            return self.head.neck(features) if self.eval_features == "neck" else features
        return ReidOutput(features, self.head.classifier(self.head.neck(features)))
