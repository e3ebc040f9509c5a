"""Fixtures of the export and extraction tests: a tiny random-weights checkpoint and a few images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vreid.core.config import load_config
from vreid.models.checkpoint import arch_from_config, build_from_arch, save_model_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, small_overrides):
    """A GLAMOR (resnet18 trunk, GAM + CBAM) checkpoint of random weights at 32×64 input, with
    BN running statistics that are not the identity (as after training)."""
    cfg = load_config(None, list(small_overrides))
    arch = arch_from_config(cfg.model, 5)
    torch.manual_seed(0)
    model = build_from_arch(arch)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            if m.weight is not None:
                m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_model_checkpoint(path, model, arch, cfg, vehicle_ids=range(5))


@pytest.fixture(scope="session")
def images():
    rng = np.random.default_rng(0)
    # smooth colour fields of different sizes (resized to 32×64 by the Extractor)
    out = []
    for h, w in [(40, 90), (64, 128), (31, 70), (100, 180), (48, 96)]:
        small = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    return out
