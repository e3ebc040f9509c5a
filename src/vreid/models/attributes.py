"""The attribute model (paper section 3.2.2): a torchvision backbone with a re-id head and two
attribute heads, colour and type.

Training runs in two steps (:mod:`vreid.training.attributes`): re-id first (triplet + softmax on
the re-id head, the same contract as every re-id model), then softmax-only fine-tuning of the
colour and type heads. Each attribute head is an embedding layer (Linear → BN → ReLU, the
*penultimate features* used by the metadata re-ranking) followed by a linear classifier.

- ``model(x)`` follows the re-id contract of :func:`vreid.models.build_model`: in train mode a
  :class:`ReidOutput` (pre-neck features and id logits), in eval mode the (B, D) neck features.
- ``model.attributes(x)`` returns an :class:`AttributeOutput` with the embeddings and logits of
  both attribute heads (in any mode).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from vreid.datasets.attributes import COLOR_CLASSES, TYPE_CLASSES
from vreid.errors import WeightsError

log = logging.getLogger(__name__)


class ReidOutput(NamedTuple):
    """Train-mode output of a re-id model."""

    features: torch.Tensor
    """(B, D) pre-neck features (triplet loss)."""
    logits: torch.Tensor
    """(B, num_classes) identity logits (cross-entropy)."""


@dataclass(frozen=True)
class AttributeOutput:
    """Outputs of the two attribute heads for a batch of B images."""

    color_features: torch.Tensor
    """(B, E) penultimate features of the colour head (after BN + ReLU)."""
    color_logits: torch.Tensor
    """(B, len(COLOR_CLASSES)) colour logits."""
    type_features: torch.Tensor
    """(B, E) penultimate features of the type head."""
    type_logits: torch.Tensor
    """(B, len(TYPE_CLASSES)) type logits."""


class AttributeHead(nn.Module):
    """Embedding layer (Linear → BN → ReLU) then a linear classifier.

    ``forward(x (B, D)) -> (embedding (B, E), logits (B, C))``.
    """

    def __init__(self, in_dim: int, num_classes: int, embed_dim: int = 512) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Linear(in_dim, embed_dim, bias=False),
            nn.BatchNorm1d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(embed_dim, num_classes)
        nn.init.kaiming_normal_(self.embed[0].weight, mode="fan_out")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(x)
        return embedding, self.classifier(embedding)


def _cached_imagenet_weights(backbone: str) -> Path | None:
    """The first torchvision ImageNet weights file of ``backbone`` present in the torch hub cache."""
    try:
        enum = torchvision.models.get_model_weights(backbone)
    except (ValueError, KeyError):
        return None
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    for weights in enum:
        candidate = ckpt_dir / os.path.basename(weights.url)
        if candidate.is_file():
            return candidate
    return None


def _strip_classifier(net: nn.Module, backbone: str) -> int:
    """Replace the final ImageNet classifier of ``net`` by an identity; return the feature dim."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(net, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(net, attr, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            linear_idx = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
            if linear_idx:
                last = linear_idx[-1]
                dim = head[last].in_features
                head[last] = nn.Identity()
                # Dropout before the classifier would perturb the features; drop it too.
                for i in range(last):
                    if isinstance(head[i], nn.Dropout):
                        head[i] = nn.Identity()
                return dim
    raise WeightsError(
        f"backbone {backbone!r}: cannot find its ImageNet classifier (fc / classifier); "
        "use a ResNet/ResNeXt, RegNet, MobileNet, EfficientNet, DenseNet or ConvNeXt"
    )


class AttributeModel(nn.Module):
    """Backbone + re-id head (BN neck, id classifier) + colour head + type head.

    Args:
        backbone: torchvision classification model name (paper: ``resnext101_32x8d``; e.g.
            ``resnet18`` for CPU work).
        num_ids: identities of the re-id head (step 1).
        pretrained: ImageNet weights. ``None``: the torchvision cache's file when present, else
            from scratch (logged); a path: that file (state dict of the torchvision model), a
            :class:`WeightsError` when missing or not matching; ``False``: from scratch.
        embed_dim: width of each attribute head's embedding layer.
        num_colors, num_types: classes of the attribute heads (default: the clustered tables).
    """

    def __init__(
        self,
        backbone: str = "resnext101_32x8d",
        num_ids: int = 1,
        pretrained: str | os.PathLike[str] | bool | None = None,
        *,
        embed_dim: int = 512,
        num_colors: int = len(COLOR_CLASSES),
        num_types: int = len(TYPE_CLASSES),
    ) -> None:
        super().__init__()
        try:
            net = torchvision.models.get_model(backbone, weights=None)
        except ValueError:
            raise WeightsError(
                f"unknown torchvision backbone {backbone!r}; e.g. resnext101_32x8d, resnet50, resnet18"
            ) from None
        self.weights_source = self._load_imagenet(net, backbone, pretrained)
        self.feature_dim = _strip_classifier(net, backbone)
        self.backbone_name = backbone
        self.backbone = net
        self.neck = nn.BatchNorm1d(self.feature_dim)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(self.feature_dim, num_ids, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.color_head = AttributeHead(self.feature_dim, num_colors, embed_dim)
        self.type_head = AttributeHead(self.feature_dim, num_types, embed_dim)
        self.embed_dim = embed_dim

    @staticmethod
    def _load_imagenet(
        net: nn.Module, backbone: str, pretrained: str | os.PathLike[str] | bool | None
    ) -> str:
        if pretrained is False:
            return "scratch"
        if pretrained is None or pretrained is True:
            path = _cached_imagenet_weights(backbone)
            if path is None:
                if pretrained is True:
                    raise WeightsError(
                        f"no ImageNet weights for {backbone!r} in the torchvision cache "
                        f"({Path(torch.hub.get_dir()) / 'checkpoints'}); pass a weights file"
                    )
                log.warning(
                    "attribute model: no ImageNet weights for %s in the torchvision cache (%s); "
                    "training from scratch (pass a weights file to use ImageNet weights)",
                    backbone,
                    Path(torch.hub.get_dir()) / "checkpoints",
                )
                return "scratch"
        else:
            path = Path(pretrained)
        if not path.is_file():
            raise WeightsError(f"{path}: ImageNet weights file not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise WeightsError(f"{path}: not a readable weights file ({err})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: expected a state dict of a torchvision {backbone}")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[0:2]
            raise WeightsError(
                f"{path}: does not match torchvision {backbone} ({' '.join(first)})"
            ) from None
        log.info("attribute model: ImageNet weights for %s loaded from %s", backbone, path)
        return str(path)

    @property
    def num_classes(self) -> int:
        """Identities of the re-id head."""
        return self.classifier.out_features

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh re-id classifier for ``num_classes`` identities."""
        self.classifier = nn.Linear(self.feature_dim, num_classes, bias=False).to(
            self.neck.weight.device
        )
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features: x (B, 3, H, W) → (B, D)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> ReidOutput | torch.Tensor:
        """Re-id: train mode → :class:`ReidOutput`; eval mode → (B, D) neck features."""
        features = self.forward_features(x)
        neck = self.neck(features)
        if self.training:
            return ReidOutput(features=features, logits=self.classifier(neck))
        return neck

    def attributes(self, x: torch.Tensor) -> AttributeOutput:
        """Colour and type heads on x (B, 3, H, W)."""
        features = self.forward_features(x)
        color_features, color_logits = self.color_head(features)
        type_features, type_logits = self.type_head(features)
        return AttributeOutput(color_features, color_logits, type_features, type_logits)
