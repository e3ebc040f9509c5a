"""Shared fixtures for the whole test suite (owned by the synth area).

``tiny_synth``: a ``tiny`` synthetic dataset generated once per session (a few seconds); tests
read ``tiny_synth / "real"`` (AIC real layout with query/gallery ground truth) and
``tiny_synth / "simulation"`` (AIC simulation layout with colour/type labels). Treat it as
read-only: copy it (``shutil.copytree``) before changing anything.

``random_detector``: a ``vreid train-detector`` checkpoint of randomly initialised weights (small
input size, few proposals) for tests of the cropping plumbing: its boxes are arbitrary but scored
about 0.5, so a low ``min_score`` crops every image.

``small_overrides``: the ``--set`` overrides of a CPU-sized GLAMOR training (resnet18 trunk,
32×64 images, P×K = 4×4, one epoch of two iterations).

``vreid_cli``: ``vreid_cli(*args)`` runs ``python -m vreid ARGS`` in a child process (this
checkout's sources) and returns the ``CompletedProcess`` (text output captured): how a user's
shell sees exit codes and one-line errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SRC_ROOT = Path(__file__).resolve().parents[1] / "src"

# A CPU-sized GLAMOR: resnet18 trunk with the attention modules, small images, P×K = 4×4.
SMALL_TRAINING = (
    "model.name=glamor",
    "model.backbone=resnet18",
    "model.image_size=[32,64]",
    "train.p=4",
    "train.k=4",
    "train.num_workers=0",
    "train.eval_every=0",
    "train.max_iters_per_epoch=2",
    "runtime.device=cpu",
    "train.epochs=1",
)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``out`` folder of ``vreid.synth.generate(out, preset="tiny", seed=0)``."""
    from vreid.synth import generate

    out = tmp_path_factory.mktemp("synth") / "tiny"
    return generate(out, preset="tiny", seed=0, workers=1, progress=False)


RANDOM_DETECTOR_ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="session")
def random_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from vreid.engine.detector import save_detector_checkpoint
    from vreid.models.detectors import build_detector

    torch.manual_seed(0)
    # small input resolution and few proposals keep the tests fast
    small = {
        "min_size": 64,
        "max_size": 128,
        "rpn_pre_nms_top_n_test": 50,
        "rpn_post_nms_top_n_test": 20,
    }
    model = build_detector(RANDOM_DETECTOR_ARCH, num_classes=2, **small)
    return save_detector_checkpoint(
        model,
        RANDOM_DETECTOR_ARCH,
        tmp_path_factory.mktemp("det") / "random.pt",
        epoch=0,
        options=small,
    )


@pytest.fixture(scope="session")
def small_overrides() -> tuple[str, ...]:
    """The ``--set`` overrides of the small training configuration."""
    return SMALL_TRAINING


@pytest.fixture(scope="session")
def vreid_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vreid", *map(str, args)],
            env=dict(os.environ, PYTHONPATH=str(SRC_ROOT)),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
