"""The colour-histogram floor of the results table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vreid.core.config import load_config, resolve_config
from vreid.models.checkpoint import arch_from_config, build_from_arch
from vreid.workflows.calibration import colour_histogram_features
from vreid.workflows.pipeline.stages import model_label


def test_colour_histograms_rank_same_colour_first(tmp_path: Path):
    rng = np.random.default_rng(0)
    paths = []
    for name, rgb in [("red1", (200, 20, 20)), ("red2", (190, 30, 25)), ("blue", (20, 30, 200))]:
        img = np.clip(np.array(rgb) + rng.integers(-10, 10, (40, 80, 3)), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(img).save(paths[-1])
    feats = colour_histogram_features(paths)
    assert feats.shape == (3, 8 * 4 * 4)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-6)
    d = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    assert d[0, 1] < 0.5 * d[0, 2]
    # a solid-colour image puts all its mass in one bin
    Image.new("RGB", (30, 30), (255, 255, 0)).save(tmp_path / "yellow.png")
    one = colour_histogram_features([tmp_path / "yellow.png"])[0]
    assert np.count_nonzero(one) == 1


def test_backbone_mapping_gives_each_model_its_own_trunk():
    """``model.backbone: {model: trunk}`` (the paper-bench preset): the built network and the row
    label follow each model's entry; unlisted models keep their own trunk."""
    cfg = load_config(
        None, ["model.backbone={glamor: resnet18, resnet50: resnet34}", "model.image_size=[32,64]"]
    )
    trunks = {}
    for name in ("glamor", "resnet50", "resnext50_32x4d"):
        cfg.model.name = name
        arch = arch_from_config(cfg.model, 5)
        trunks[name] = arch["backbone"]
        model = build_from_arch(arch)
        convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        trunks[name + "_convs"] = convs
    assert trunks["glamor"] == "resnet18"
    assert trunks["resnet50"] == "resnet34"
    assert trunks["resnext50_32x4d"] is None  # its own trunk
    # resnet34 has 36 convolutions, resnext50 53: the trunk really differs
    assert trunks["resnet50_convs"] == 36
    assert trunks["resnext50_32x4d_convs"] == 53
    assert model_label("resnet50", cfg) == "ResNet-34 (plain trunk, same head as GLAMOR)"
    assert (
        model_label("resnext50_32x4d", cfg) == "ResNeXt50 32×4d (plain trunk, same head as GLAMOR)"
    )
    assert model_label("glamor", cfg) == "GLAMOR (ResNet-18 trunk)"
    bench = load_config(resolve_config("paper-bench"))
    assert [bench.model.backbone_for(m) for m in bench.pipeline.models] == [
        "resnet18", "resnet18", "resnet18", None
    ]  # fmt: skip
