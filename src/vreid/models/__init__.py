"""Re-id models built by name: GLAMOR, Counter GLAMOR and ResNet-family baselines.

``build_model(name, num_classes, **options)``; eval mode maps (B, 3, H, W) to (B, D) retrieval
features, train mode returns :class:`ReidOutput` (pre-neck features and logits).
"""

from vreid.models import attributes as _attributes  # noqa: F401  (registers attributes)
from vreid.models import baselines as _baselines  # noqa: F401  (registers the baselines)
from vreid.models import glamor as _glamor  # noqa: F401  (registers glamor, counter_glamor)
from vreid.models.attention import CBAM, GlobalAttentionModule
from vreid.models.common import TRUNKS, BNNeckHead, ReidOutput, ReidResNet, imagenet_weights
from vreid.models.glamor import Glamor, mix_channels
from vreid.models.registry import MODELS, build_model, list_models, register_model

__all__ = [
    "CBAM",
    "MODELS",
    "TRUNKS",
    "BNNeckHead",
    "Glamor",
    "GlobalAttentionModule",
    "ReidOutput",
    "ReidResNet",
    "build_model",
    "imagenet_weights",
    "list_models",
    "mix_channels",
    "register_model",
]
