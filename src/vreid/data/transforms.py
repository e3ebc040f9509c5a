"""Image transforms for re-id training and testing (torchvision transforms v2).

Training (DESIGN.md, paper section 4): resize to (H, W); with p 0.5 enlarge ×1.125 then crop back
to (H, W) at a random place; horizontal flip; colour jitter (brightness 0.2, contrast 0.15); PCA
colour noise (AlexNet-style "lighting", σ 0.1, p 0.5 — ours, torchvision has none); ImageNet
normalisation; random erasing (p 0.5, area 0.02–0.4, aspect ratio 0.3–1/0.3, erased to 0 = the mean
colour). Testing: resize and normalise. Inputs: PIL images, (H, W, 3) uint8 arrays or (3, H, W)
tensors; output: a float32 tensor (3, H, W).

Randomness comes from torch's global generator, so DataLoader workers seeded by torch draw
independent, reproducible augmentations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from vreid.core.errors import ConfigError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Principal components of ImageNet RGB pixel values (in [0, 1]): eigenvalues and eigenvectors
#: (columns), as used for AlexNet's colour augmentation.
IMAGENET_PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
IMAGENET_PCA_EIGVEC = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)


class PCAColourNoise(v2.Transform):
    """AlexNet-style PCA colour noise on float images in [0, 1] (before normalisation).

    With probability ``p`` adds ``eigvec @ (α ⊙ eigval)`` to every pixel, α ~ N(0, std²) per
    component, and clamps to [0, 1]. Acts on (…, 3, H, W) float image tensors.

    Args:
        std: standard deviation σ of α (paper: 0.1).
        p: probability of applying the noise (paper: 0.5).
    """

    _transformed_types = (tv_tensors.Image, torch.Tensor)

    def __init__(self, std: float = 0.1, p: float = 0.5) -> None:
        super().__init__()
        if std < 0 or not 0.0 <= p <= 1.0:
            raise ConfigError(f"PCA colour noise: need std ≥ 0 and 0 ≤ p ≤ 1 (got {std}, {p})")
        self.std = std
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = self.p > 0 and bool(torch.rand(()) < self.p)
        alpha = torch.randn(3) * self.std
        return {"shift": IMAGENET_PCA_EIGVEC @ (alpha * IMAGENET_PCA_EIGVAL) if apply else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        shift = params["shift"]
        if shift is None:
            return inpt
        if not inpt.is_floating_point():
            raise TypeError("PCAColourNoise expects float images in [0, 1]; put it after ToDtype")
        out = (inpt + shift.to(inpt)[:, None, None]).clamp_(0.0, 1.0)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out

    def extra_repr(self) -> str:
        return f"std={self.std}, p={self.p}"


def build_transforms(
    image_size: Sequence[int],
    *,
    train: bool,
    enlarge_p: float = 0.5,
    enlarge_factor: float = 1.125,
    flip_p: float = 0.5,
    brightness: float = 0.2,
    contrast: float = 0.15,
    pca_std: float = 0.1,
    pca_p: float = 0.5,
    erasing_p: float = 0.5,
    erasing_area: Sequence[float] = (0.02, 0.4),
    erasing_min_aspect: float = 0.3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The training (``train=True``) or test transform for images of ``image_size = (H, W)``.

    The keyword arguments after ``train`` are the augmentation settings (defaults: the paper's, see
    the module docstring); a probability of 0 or a strength of 0 switches a step off. They are
    ignored for the test transform, which only resizes and normalises.

    Returns:
        A callable mapping a PIL image / (H, W, 3) uint8 array / (3, H, W) tensor to a float32
        tensor (3, H, W).
    """
    if len(image_size) != 2 or min(image_size) < 1:
        raise ConfigError(f"image_size must be (height, width) (got {tuple(image_size)})")
    size = (int(image_size[0]), int(image_size[1]))
    head: list[Any] = [v2.ToImage(), v2.Resize(size, antialias=True)]
    tail: list[Any] = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if not train:
        return v2.Compose(head + tail)
    if enlarge_factor < 1:
        raise ConfigError(f"enlarge_factor must be ≥ 1 (got {enlarge_factor})")
    if not 0 < erasing_min_aspect <= 1:
        raise ConfigError(f"erasing_min_aspect must be in (0, 1] (got {erasing_min_aspect})")
    steps: list[Any] = list(head)
    if enlarge_p > 0:
        big = (round(size[0] * enlarge_factor), round(size[1] * enlarge_factor))
        steps.append(
            v2.RandomApply([v2.Resize(big, antialias=True), v2.RandomCrop(size)], p=enlarge_p)
        )
    if flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=flip_p))
    if brightness > 0 or contrast > 0:
        steps.append(v2.ColorJitter(brightness=brightness or None, contrast=contrast or None))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if pca_p > 0 and pca_std > 0:
        steps.append(PCAColourNoise(std=pca_std, p=pca_p))
    steps.append(v2.Normalize(list(mean), list(std)))
    if erasing_p > 0:
        lo, hi = float(erasing_area[0]), float(erasing_area[1])
        steps.append(
            v2.RandomErasing(
                p=erasing_p,
                scale=(lo, hi),
                ratio=(erasing_min_aspect, 1.0 / erasing_min_aspect),
                value=0,
            )
        )
    return v2.Compose(steps)
