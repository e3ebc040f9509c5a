"""The attribute model (paper section 3.2.2): a torchvision backbone with a re-id head and two
attribute heads, colour and type.

Training runs in two steps (:mod:`vreid.engine.attributes`): re-id first (triplet + softmax on
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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vreid.core.errors import ConfigError
from vreid.data.attributes import COLOR_CLASSES, TYPE_CLASSES
from vreid.models.common import (
    BNNeckHead,
    EvalFeatures,
    PretrainedChoice,
    ReidHeadMixin,
    ReidOutput,
    build_trunk,
    init_trunk_weights,
    trunk_feature_dim,
)
from vreid.models.registry import register_model

log = logging.getLogger("vreid.models")


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


class AttributeModel(ReidHeadMixin, nn.Module):
    """ResNet-family trunk + re-id head (BN neck, id classifier) + colour head + type head.

    Args:
        backbone: torchvision trunk name (paper: ``resnext101_32x8d``; ``resnet18`` for CPU work;
            see :data:`~vreid.models.common.TRUNKS`).
        num_ids: identities of the re-id head (step 1).
        pretrained: trunk weights as for every model here
            (:func:`~vreid.models.common.init_trunk_weights`): ``None`` → random initialisation;
            ``"imagenet"`` (the paper) → torchvision's ImageNet weights, read from the torch hub
            cache or downloaded there on first use, a
            :class:`~vreid.core.errors.WeightsError` naming the cache file and its URL when
            offline; a URL or a weights file path. Never a silent fall-back to random weights;
            :attr:`weights_message` says what was loaded.
        last_stride: stride of the trunk's last stage (1 or 2).
        eval_features: ``"neck"`` or ``"pre_neck"``: the re-id features eval mode returns.
        embed_dim: width E of each attribute head's embedding layer.
        num_colors, num_types: classes of the attribute heads (default: the clustered tables).
    """

    def __init__(
        self,
        backbone: str = "resnext101_32x8d",
        num_ids: int = 1,
        pretrained: PretrainedChoice = None,
        *,
        last_stride: int = 1,
        eval_features: EvalFeatures = "neck",
        embed_dim: int = 512,
        num_colors: int = len(COLOR_CLASSES),
        num_types: int = len(TYPE_CLASSES),
    ) -> None:
        super().__init__()
        if eval_features not in ("neck", "pre_neck"):
            raise ConfigError(f"eval_features must be 'neck' or 'pre_neck' (got {eval_features!r})")
        self.eval_features = eval_features
        self.backbone = backbone
        self.last_stride = last_stride
        self.trunk = build_trunk(backbone, last_stride=last_stride)
        self.weights_message = init_trunk_weights(self.trunk, backbone, pretrained)
        self.feature_dim = trunk_feature_dim(self.trunk)
        self.head = BNNeckHead(self.feature_dim, num_ids)
        self.color_head = AttributeHead(self.feature_dim, num_colors, embed_dim)
        self.type_head = AttributeHead(self.feature_dim, num_types, embed_dim)
        self.embed_dim = embed_dim
        self.arch: dict[str, Any] = {}  # filled by build_model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk features: x (B, 3, H, W) → (B, D)."""
        return torch.flatten(F.adaptive_avg_pool2d(self._maps(x), 1), 1)

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        return t.layer4(t.layer3(t.layer2(t.layer1(x))))

    def forward(self, x: torch.Tensor) -> ReidOutput | torch.Tensor:
        """Re-id: train mode → :class:`ReidOutput`; eval mode → (B, D) neck features."""
        features = self.forward_features(x)
        if self.training:
            return ReidOutput(features, self.head.classifier(self.head.neck(features)))
        return self.head.neck(features) if self.eval_features == "neck" else features

    def attributes(self, x: torch.Tensor) -> AttributeOutput:
        """Colour and type heads on x (B, 3, H, W)."""
        features = self.forward_features(x)
        color_features, color_logits = self.color_head(features)
        type_features, type_logits = self.type_head(features)
        return AttributeOutput(color_features, color_logits, type_features, type_logits)


@register_model("attributes")
def attributes(
    num_classes: int,
    *,
    backbone: str = "resnext101_32x8d",
    last_stride: int = 1,
    pretrained: PretrainedChoice = None,
    eval_features: EvalFeatures = "neck",
    embed_dim: int = 512,
    num_colors: int = len(COLOR_CLASSES),
    num_types: int = len(TYPE_CLASSES),
) -> AttributeModel:
    """The attribute model (re-id head for ``num_classes`` ids + colour and type heads)."""
    return AttributeModel(
        backbone,
        num_classes,
        pretrained,
        last_stride=last_stride,
        eval_features=eval_features,
        embed_dim=embed_dim,
        num_colors=num_colors,
        num_types=num_types,
    )
