"""Training and test transforms: each augmentation does what DESIGN.md says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from vreid.core.errors import ConfigError
from vreid.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    IMAGENET_STD,
    PCAColourNoise,
    build_transforms,
)

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]
OFF = {
    "enlarge_p": 0.0,
    "flip_p": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "pca_p": 0.0,
    "erasing_p": 0.0,
}


def gradient_image(h: int = 40, w: int = 70) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=-1)
    return Image.fromarray(arr.astype(np.uint8))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_test_transform_resizes_and_normalises() -> None:
    tf = build_transforms((128, 256), train=False)
    out = tf(Image.new("RGB", (300, 100), (200, 100, 50)))
    assert out.shape == (3, 128, 256)
    assert out.dtype == torch.float32
    expected = (torch.tensor([200, 100, 50])[:, None, None] / 255 - MEAN) / STD
    torch.testing.assert_close(out, expected.expand(3, 128, 256), rtol=0, atol=1e-6)
    # arrays and tensors work too and give the same result
    arr = np.full((100, 300, 3), (200, 100, 50), dtype=np.uint8)
    torch.testing.assert_close(tf(arr), out)
    torch.testing.assert_close(tf(torch.from_numpy(arr).permute(2, 0, 1)), out)


def test_train_transform_shape_and_no_aug_equals_test() -> None:
    img = gradient_image()
    out = build_transforms((64, 128), train=True)(img)
    assert out.shape == (3, 64, 128)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        build_transforms((64, 128), train=True, **OFF)(img),
        build_transforms((64, 128), train=False)(img),
    )


def test_flip() -> None:
    img = gradient_image()
    flipped = build_transforms((32, 64), train=True, **{**OFF, "flip_p": 1.0})(img)
    plain = build_transforms((32, 64), train=False)(img)
    torch.testing.assert_close(flipped, plain.flip(-1))


def test_enlarge_then_random_crop_is_a_window_of_the_enlarged_image() -> None:
    img = gradient_image()
    size, big = (32, 64), (36, 72)  # ×1.125
    tf = build_transforms(size, train=True, **{**OFF, "enlarge_p": 1.0})
    resized = TF.resize(TF.to_image(img), list(size), antialias=True)
    enlarged = TF.resize(resized, list(big), antialias=True)
    reference = (enlarged.float() / 255 - MEAN) / STD
    offsets = set()
    for _ in range(20):
        out = tf(img)
        found = [
            (i, j)
            for i in range(big[0] - size[0] + 1)
            for j in range(big[1] - size[1] + 1)
            if torch.allclose(out, reference[:, i : i + size[0], j : j + size[1]], atol=1e-5)
        ]
        assert found, "the output is not a crop of the enlarged image"
        offsets.add(found[0])
    assert len(offsets) > 1  # the crop position is random


def test_probabilities_are_honoured() -> None:
    img = gradient_image(8, 16)
    plain = build_transforms((8, 16), train=False)(img)
    tf = build_transforms((8, 16), train=True, **{**OFF, "flip_p": 0.5})
    flips = sum(not torch.equal(tf(img), plain) for _ in range(400))
    assert 160 < flips < 240


def test_colour_jitter_brightness_range() -> None:
    img = Image.new("RGB", (16, 8), (100, 100, 100))
    tf = build_transforms((8, 16), train=True, **{**OFF, "brightness": 0.2})
    values = (
        torch.stack([tf(img)[0, 0, 0] for _ in range(200)]) * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    )
    values = values * 255 / 100  # the brightness factor
    assert values.min() >= 0.8 - 0.01
    assert values.max() <= 1.2 + 0.01
    assert values.min() < 0.85
    assert values.max() > 1.15


def test_pca_colour_noise_statistics() -> None:
    noise = PCAColourNoise(std=0.1, p=1.0)
    grey = torch.full((3, 1, 1), 0.5)
    shifts = torch.stack([(noise(grey) - grey).flatten() for _ in range(4000)])
    # shift = V (α ⊙ λ), α ~ N(0, σ²): covariance σ² V diag(λ²) Vᵀ
    cov = 0.1**2 * IMAGENET_PCA_EIGVEC @ torch.diag(IMAGENET_PCA_EIGVAL**2) @ IMAGENET_PCA_EIGVEC.T
    torch.testing.assert_close(shifts.T.cov(), cov, rtol=0.12, atol=2e-5)
    assert shifts.mean(0).abs().max() < 0.003
    # the same shift for every pixel of an image
    image = torch.rand(3, 5, 5) * 0.5 + 0.25
    diff = noise(image) - image
    torch.testing.assert_close(diff, diff[:, :1, :1].expand_as(diff))
    half = PCAColourNoise(std=0.1, p=0.5)
    applied = sum(not torch.equal(half(grey), grey) for _ in range(400))
    assert 160 < applied < 240


def test_random_erasing_rectangle() -> None:
    img = Image.new("RGB", (64, 32), (250, 10, 10))  # far from the mean: never 0 after normalising
    tf = build_transforms((32, 64), train=True, **{**OFF, "erasing_p": 1.0})
    for _ in range(50):
        out = tf(img)
        erased = (out == 0).all(0)
        assert erased.any()
        rows, cols = torch.nonzero(erased, as_tuple=True)
        h = int(rows.max() - rows.min() + 1)
        w = int(cols.max() - cols.min() + 1)
        assert int(erased.sum()) == h * w  # one filled rectangle
        area = h * w / (32 * 64)
        assert 0.02 * 0.8 <= area <= 0.4 * 1.1  # rounding of small rectangles
        assert 0.3 * 0.7 <= h / w <= (1 / 0.3) / 0.7


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        build_transforms((128,), train=False)
    with pytest.raises(ConfigError, match="enlarge_factor"):
        build_transforms((8, 8), train=True, enlarge_factor=0.5)
