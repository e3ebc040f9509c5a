"""Fixtures of the index tests: a random-weights re-id checkpoint (resnet18 GLAMOR, 32×64
images) and folders of the ``tiny`` synthetic data's query and gallery images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from vreid.core.config import load_config
from vreid.inference.attributes import attribute_arch
from vreid.models.attributes import AttributeModel
from vreid.models.checkpoint import (
    arch_from_config,
    build_from_arch,
    save_checkpoint,
    save_model_checkpoint,
)


def _random_checkpoint(path: Path, seed: int) -> Path:
    cfg = load_config(
        None,
        ["model.name=glamor", "model.backbone=resnet18", "model.image_size=[32,64]"],
    )
    arch = arch_from_config(cfg.model, 8)
    torch.manual_seed(seed)
    model = build_from_arch(arch)
    return save_model_checkpoint(path, model, arch, cfg, vehicle_ids=range(8))


@pytest.fixture(scope="session")
def random_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("index_models")
    return [_random_checkpoint(out / f"model{s}.pt", s) for s in (0, 1)]


@pytest.fixture(scope="session")
def image_folders(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``query`` and ``gallery`` folders (copies), and ``more``: the gallery's last third."""
    root = tmp_path_factory.mktemp("index_images")
    real = tiny_synth / "real"
    query = root / "query"
    shutil.copytree(real / "image_query", query)
    gallery_all = sorted((real / "image_test").iterdir())
    cut = 2 * len(gallery_all) // 3
    gallery, more = root / "gallery", root / "more"
    gallery.mkdir()
    more.mkdir()
    for p in gallery_all[:cut]:
        shutil.copy(p, gallery / p.name)
    for p in gallery_all[cut:]:
        shutil.copy(p, more / p.name)
    return {"query": query, "gallery": gallery, "more": more}


@pytest.fixture(scope="session")
def random_attribute_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights attribute model (resnet18, 32×64, 16-d heads) saved as `vreid
    train-attributes` saves one (its heads marked trained, so the index accepts it)."""
    cfg = load_config(None, ["model.image_size=[32,64]"])
    torch.manual_seed(5)
    model = AttributeModel("resnet18", 8, pretrained=None, embed_dim=16)
    path = tmp_path_factory.mktemp("index_attributes") / "attributes.pt"
    return save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "arch": attribute_arch(model),
            "config": cfg.model_dump(mode="json"),
            "epoch": 0,
            "heads_trained": True,
        },
    )
