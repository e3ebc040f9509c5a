"""Fixtures of the training tests: a small CPU configuration and a trained checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vreid.config import Config, load_config
from vreid.datasets import ReidDataset, load_dataset

# A CPU-sized GLAMOR: resnet18 trunk with the attention modules, small images, P×K = 4×4.
SMALL = (
    "model.name=glamor",
    "model.backbone=resnet18",
    "model.image_size=[32,64]",
    "train.p=4",
    "train.k=4",
    "train.num_workers=0",
    "train.eval_every=0",
    "train.max_iters_per_epoch=2",
    "train.device=cpu",
    "train.epochs=1",
)


@pytest.fixture(scope="session")
def small_overrides() -> tuple[str, ...]:
    """The ``--set`` overrides of the small configuration."""
    return SMALL


@pytest.fixture(scope="session")
def small_config() -> Callable[..., Config]:
    """``small_config(root, *overrides)``: the small configuration on dataset ``root``."""

    def make(root: Path | None = None, *overrides: str) -> Config:
        data = [f"data.root={root}"] if root is not None else []
        return load_config(None, [*SMALL, *data, *overrides])

    return make


@pytest.fixture(scope="session")
def synth_real(tiny_synth: Path) -> ReidDataset:
    """The real-style split of the tiny synthetic dataset."""
    return load_dataset(tiny_synth / "real")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synth_real, small_config):
    """A run of one short epoch on the tiny synthetic set (its TrainResult)."""
    from vreid.training.loop import train

    out = tmp_path_factory.mktemp("trained") / "run"
    return train(small_config(synth_real.root), out, dataset=synth_real, progress=False)
