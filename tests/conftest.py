"""Shared fixtures for the whole test suite (owned by the synth area).

``tiny_synth``: a ``tiny`` synthetic dataset generated once per session (a few seconds); tests
read ``tiny_synth / "real"`` (AIC real layout with query/gallery ground truth) and
``tiny_synth / "simulation"`` (AIC simulation layout with colour/type labels). Treat it as
read-only: copy it (``shutil.copytree``) before changing anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``out`` folder of ``vreid.synth.generate(out, preset="tiny", seed=0)``."""
    from vreid.synth import generate

    out = tmp_path_factory.mktemp("synth") / "tiny"
    return generate(out, preset="tiny", seed=0, workers=1, progress=False)
