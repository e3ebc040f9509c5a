"""GLAMOR and Counter GLAMOR (Suprem & Pu, arXiv:2002.02256; Truong et al., AIC20,
arXiv:2007.01818, eq. 1 and eq. 2).

A ResNet trunk (standard stem, last stride 1) with

* the Global Attention Module on the stem convolution's output, before the stem BN;
* CBAM on the output F_G of the first block of stage 1, F_L = CBAM(F_G);
* channel-mask mixing ``F = M_G⊙F_G + M_L⊙F_L`` with ``M_G`` = 0 on channels [0, ⌊C/2⌋) and 1 on
  [⌊C/2⌋, C), ``M_L = 1 − M_G`` (eq. 1: the first half of the channels comes from CBAM). Counter
  GLAMOR swaps the masks, ``F = M_L⊙F_G + M_G⊙F_L`` (eq. 2: the second half comes from CBAM);
* F continues through the rest of stage 1 and stages 2–4, then the re-id head of
  :class:`~vreid.models.common.ReidResNet`.
"""

from __future__ import annotations

import torch

from vreid.models.attention import CBAM, GlobalAttentionModule
from vreid.models.common import EvalFeatures, PretrainedChoice, ReidResNet, block_out_channels
from vreid.models.registry import register_model


def mix_channels(
    global_features: torch.Tensor, local_features: torch.Tensor, *, counter: bool
) -> torch.Tensor:
    """Channel-mask mixing of GLAMOR (eq. 1) or Counter GLAMOR (eq. 2).

    Args:
        global_features: F_G, (B, C, H, W).
        local_features: F_L = CBAM(F_G), (B, C, H, W).
        counter: False → channels [0, ⌊C/2⌋) from F_L, the rest from F_G (eq. 1);
            True → channels [0, ⌊C/2⌋) from F_G, the rest from F_L (eq. 2).

    Returns:
        F, (B, C, H, W).
    """
    half = global_features.shape[1] // 2
    first, second = (
        (global_features, local_features) if counter else (local_features, global_features)
    )
    return torch.cat([first[:, :half], second[:, half:]], dim=1)


class Glamor(ReidResNet):
    """GLAMOR (``counter=False``) or Counter GLAMOR (``counter=True``).

    Eval mode: ``model(x (B, 3, H, W)) -> (B, D)``; train mode: ``ReidOutput``; see
    :class:`~vreid.models.common.ReidResNet` for the head and the arguments it shares.

    Args:
        num_classes: identities of the training set.
        counter: swap the channel masks (Counter GLAMOR, eq. 2).
        backbone: torchvision ResNet trunk; resnet50 in the paper, resnet18/34 for CPU work (the
            attention modules adapt to its channel counts).
        last_stride: stride of the last stage.
        pretrained: trunk weights (``None`` = from scratch, as the paper; see
            :func:`~vreid.models.common.init_trunk_weights` for the others).
        eval_features: ``"neck"`` or ``"pre_neck"``.
        cbam_reduction: reduction ratio of CBAM's channel MLP (official: 16).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        counter: bool = False,
        backbone: str = "resnet50",
        last_stride: int = 1,
        pretrained: PretrainedChoice = None,
        eval_features: EvalFeatures = "neck",
        cbam_reduction: int = 16,
    ) -> None:
        super().__init__(
            num_classes,
            backbone=backbone,
            last_stride=last_stride,
            pretrained=pretrained,
            eval_features=eval_features,
        )
        self.counter = counter
        self.gam = GlobalAttentionModule(self.trunk.conv1.out_channels)
        self.cbam = CBAM(block_out_channels(self.trunk.layer1[0]), reduction=cbam_reduction)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, 64, H/4, W/4): conv, GAM, BN, ReLU, max-pool."""
        t = self.trunk
        return t.maxpool(t.relu(t.bn1(self.gam(t.conv1(x)))))

    def stage1(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 1 with CBAM and channel-mask mixing after its first block."""
        blocks = list(self.trunk.layer1)
        global_features = blocks[0](x)
        x = mix_channels(global_features, self.cbam(global_features), counter=self.counter)
        for block in blocks[1:]:
            x = block(x)
        return x

    def extra_repr(self) -> str:
        return f"counter={self.counter}"


@register_model("glamor")
def glamor(
    num_classes: int,
    *,
    backbone: str = "resnet50",
    last_stride: int = 1,
    pretrained: PretrainedChoice = None,
    eval_features: EvalFeatures = "neck",
    cbam_reduction: int = 16,
) -> Glamor:
    """GLAMOR (eq. 1): channels [0, C/2) after stage 1's first block come from CBAM."""
    return Glamor(
        num_classes,
        counter=False,
        backbone=backbone,
        last_stride=last_stride,
        pretrained=pretrained,
        eval_features=eval_features,
        cbam_reduction=cbam_reduction,
    )


@register_model("counter_glamor")
def counter_glamor(
    num_classes: int,
    *,
    backbone: str = "resnet50",
    last_stride: int = 1,
    pretrained: PretrainedChoice = None,
    eval_features: EvalFeatures = "neck",
    cbam_reduction: int = 16,
) -> Glamor:
    """Counter GLAMOR (eq. 2): channels [C/2, C) after stage 1's first block come from CBAM."""
    return Glamor(
        num_classes,
        counter=True,
        backbone=backbone,
        last_stride=last_stride,
        pretrained=pretrained,
        eval_features=eval_features,
        cbam_reduction=cbam_reduction,
    )
