"""Baselines for the comparison table: a plain torchvision ResNet-family trunk with the re-id head.

Every trunk in :data:`~vreid.models.common.TRUNKS` is registered under its torchvision name
(``resnet50``, ``resnext101_32x8d``, ``resnet18``, …). The ``backbone`` option swaps the trunk
(e.g. ``resnet50`` with ``backbone="resnet18"`` for a CPU-sized comparison with GLAMOR on the same
trunk).
"""

from __future__ import annotations

from collections.abc import Callable

from vreid.models.common import TRUNKS, EvalFeatures, PretrainedChoice, ReidResNet
from vreid.models.registry import register_model


def _baseline_builder(default_trunk: str) -> Callable[..., ReidResNet]:
    def build(
        num_classes: int,
        *,
        backbone: str | None = None,
        last_stride: int = 1,
        pretrained: PretrainedChoice = None,
        eval_features: EvalFeatures = "neck",
    ) -> ReidResNet:
        return ReidResNet(
            num_classes,
            backbone=backbone or default_trunk,
            last_stride=last_stride,
            pretrained=pretrained,
            eval_features=eval_features,
        )

    build.__name__ = default_trunk
    build.__doc__ = (
        f"Baseline: torchvision {default_trunk} trunk (or ``backbone``) with the re-id head."
    )
    return build


for _trunk in TRUNKS:
    register_model(_trunk)(_baseline_builder(_trunk))
