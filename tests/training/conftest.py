"""Fixtures of the training tests: a small CPU configuration and a trained checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vreid.core.config import Config, load_config
from vreid.data import ReidDataset, load_dataset


@pytest.fixture(scope="session")
def small_config(small_overrides: tuple[str, ...]) -> Callable[..., Config]:
    """``small_config(root, *overrides)``: the small configuration (``small_overrides`` of the
    top-level conftest) on dataset ``root``."""

    def make(root: Path | None = None, *overrides: str) -> Config:
        data = [f"data.root={root}"] if root is not None else []
        return load_config(None, [*small_overrides, *data, *overrides])

    return make


@pytest.fixture(scope="session")
def synth_real(tiny_synth: Path) -> ReidDataset:
    """The real-style split of the tiny synthetic dataset."""
    return load_dataset(tiny_synth / "real")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synth_real, small_config):
    """A run of one short epoch on the tiny synthetic set (its TrainResult)."""
    from vreid.engine.reid import train

    out = tmp_path_factory.mktemp("trained") / "run"
    return train(small_config(synth_real.root), out, dataset=synth_real, progress=False)
