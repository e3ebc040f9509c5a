"""What every re-id model here shares: the ResNet trunk, its weights, and the BN-neck head.

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
from torchvision.models import WeightsEnum
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from vreid.core.errors import ConfigError, WeightsError
from vreid.core.weights import fetch_state_dict, read_weights_file

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
# trunk weights

#: ``pretrained`` values meaning random initialisation (the config's ``null``).
SCRATCH = ("", "none", "null", "scratch")
#: What ``pretrained: imagenet`` means for a trunk: torchvision's first ImageNet weights
#: (``<Arch>_Weights.IMAGENET1K_V1``), the classic ones re-id work starts from (the paper's time).
IMAGENET = "IMAGENET1K_V1"

PretrainedChoice = str | os.PathLike[str] | WeightsEnum | None
"""What a model's ``pretrained`` option takes (see :func:`init_trunk_weights`)."""


def imagenet_weights(backbone: str, name: str = IMAGENET) -> WeightsEnum:
    """torchvision's weights enum member ``name`` (``IMAGENET1K_V1``, ``IMAGENET1K_V2``,
    ``DEFAULT``; or a full name ``ResNet50_Weights.IMAGENET1K_V2``) for trunk ``backbone``."""
    enum = torchvision.models.get_model_weights(backbone)
    member = name.split(".", 1)[1] if "." in name else name
    if "." in name and name.split(".", 1)[0] != enum.__name__:
        raise WeightsError(
            f"pretrained={name}: weights of another architecture; the {backbone} trunk takes "
            f"{enum.__name__}.<{'|'.join(m.name for m in enum)}>"
        )
    try:
        return enum[member.upper()]
    except KeyError:
        raise WeightsError(
            f"pretrained={name}: torchvision has no such {backbone} weights; choose among "
            f"{', '.join(m.name for m in enum)} (or imagenet = {IMAGENET})"
        ) from None


def _torchvision_name(value: str, backbone: str) -> str | None:
    """``value`` if it names torchvision weights of ``backbone`` (``imagenet``, ``IMAGENET1K_V2``,
    ``DEFAULT``, ``ResNet50_Weights.IMAGENET1K_V2``), else None (a path or URL)."""
    if value.lower() == "imagenet":
        return IMAGENET
    if value.startswith(("http://", "https://")) or "/" in value or os.sep in value:
        return None
    enum = torchvision.models.get_model_weights(backbone)
    head, _, tail = value.partition(".")
    if value.upper() in enum.__members__ or (tail and head.endswith("_Weights")):
        return value
    return None


def _read_state_dict(obj: Any, path: Path | str) -> dict[str, torch.Tensor]:
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


def load_trunk_state(
    trunk: ResNet, state: Any, source: str | os.PathLike[str], *, backbone: str
) -> int:
    """Load the state dict ``state`` (read from ``source``) into ``trunk``; the classifier ``fc.*``
    is ignored. Returns the number of tensors loaded; a state dict of another architecture is a
    :class:`WeightsError` naming ``source`` and the first mismatching key."""
    state = {k: v for k, v in _read_state_dict(state, source).items() if not k.startswith("fc.")}
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
            f"{source}: not weights of a {backbone} trunk: " + "; ".join(parts) + "; give the "
            f"weights file of torchvision's {backbone} or change the backbone"
        )
    trunk.load_state_dict(state, strict=True)
    return len(state)


def load_trunk_weights(trunk: ResNet, path: str | os.PathLike[str], *, backbone: str) -> int:
    """Load the weights file ``path`` into ``trunk`` (see :func:`load_trunk_state`)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{path}: weights file not found; pretrained takes null (random initialisation), "
            "imagenet, a torchvision weights name (IMAGENET1K_V2), a URL or an existing file"
        )
    return load_trunk_state(trunk, read_weights_file(path), path, backbone=backbone)


_INSTEAD = (
    "or set the pretrained setting (model.pretrained / attributes.pretrained) to the file's "
    "path, or to null to train from scratch"
)


def init_trunk_weights(trunk: ResNet, backbone: str, pretrained: PretrainedChoice) -> str:
    """Apply the ``pretrained`` choice to ``trunk`` and return a one-line message saying what was done.

    ``pretrained``:

    * ``None`` (or ``""``/``"none"``/``"null"``/``"scratch"``) → random initialisation (the paper
      trains GLAMOR from scratch). The only way to get random weights.
    * ``"imagenet"`` → torchvision's ImageNet weights ``<Arch>_Weights.IMAGENET1K_V1``; another
      member by name (``"IMAGENET1K_V2"``, ``"DEFAULT"``, ``"ResNet50_Weights.IMAGENET1K_V2"``)
      or a ``WeightsEnum`` member. Read from the torch hub cache, downloaded there on first use
      (progress bar, hash check); offline and absent: a :class:`WeightsError` naming the cache
      path and the URL (:func:`vreid.core.weights.fetch_state_dict`).
    * an ``http(s)://`` URL → the same, for any published file.
    * anything else → the path of a weights file (a state dict, optionally under
      ``state_dict``/``model``; ``module.``/``trunk.``/``backbone.`` prefixes are removed).

    ``"auto"`` (which used to fall back to random weights when nothing was cached) is refused.
    """
    if isinstance(pretrained, WeightsEnum):
        state, path = fetch_state_dict(
            pretrained.url, what=f"torchvision weights {pretrained!r}", instead=_INSTEAD
        )
        n = load_trunk_state(trunk, state, path, backbone=backbone)
        message = f"{backbone} trunk: torchvision weights {pretrained!r} from {path} ({n} tensors)"
        log.info(message)
        return message
    choice = None if pretrained is None else str(pretrained).strip()
    if choice is None or choice.lower() in SCRATCH:
        message = f"{backbone} trunk: random initialisation (training from scratch)"
    elif choice.lower() == "auto":
        raise ConfigError(
            "pretrained=auto is no longer accepted (it fell back to random weights when nothing "
            "was cached): say imagenet (torchvision's weights, downloaded into the torch hub "
            "cache on first use) or null (random initialisation)"
        )
    elif (name := _torchvision_name(choice, backbone)) is not None:
        weights = imagenet_weights(backbone, name)
        state, path = fetch_state_dict(
            weights.url, what=f"ImageNet weights of {backbone} ({weights!r})", instead=_INSTEAD
        )
        n = load_trunk_state(trunk, state, path, backbone=backbone)
        message = f"{backbone} trunk: ImageNet weights {weights!r} from {path} ({n} tensors)"
    elif choice.startswith(("http://", "https://")):
        state, path = fetch_state_dict(choice, what=f"{backbone} trunk weights", instead=_INSTEAD)
        n = load_trunk_state(trunk, state, path, backbone=backbone)
        message = f"{backbone} trunk: weights from {choice} (cached at {path}, {n} tensors)"
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
        pretrained: trunk weights (:func:`init_trunk_weights`): ``None`` (scratch),
            ``"imagenet"`` (downloaded into the torch hub cache on first use), a torchvision
            weights name or member, a URL or a file path.
        eval_features: ``"neck"`` or ``"pre_neck"``: which features eval mode returns.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        last_stride: int = 1,
        pretrained: PretrainedChoice = None,
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
