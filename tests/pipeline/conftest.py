"""``tiny_run``: one ``tiny`` pipeline run per test session (about a minute of CPU), shared by the
pipeline tests and the entry-point comparison. Tests that change it re-run it with their own
config and put it back; a test that must not change it works on a copy made of hard links
(``shutil.copytree(run_dir, dst, copy_function=os.link)``: instant, and safe because every artefact
is replaced, never written in place) brought up to date with ``run_pipeline(cfg, copy)``."""

from __future__ import annotations

from pathlib import Path

import pytest

from vreid.core.config import load_config, resolve_config
from vreid.workflows.pipeline import run_pipeline


@pytest.fixture(scope="session")
def tiny_run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory):
    """``(config, run_dir, result of the first run_pipeline)`` of the tiny preset on ``tiny_synth``."""
    base = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(
        resolve_config("tiny"),
        [f"data.root={tiny_synth / 'real'}", f"data.sim_root={tiny_synth / 'simulation'}"],
    )
    # A relative run directory, as `make demo` passes it (runs/demo); later tests re-run the same
    # directory by its absolute path and must find the stages up to date.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        first = run_pipeline(cfg, Path("run"), progress=False)
    return cfg, base / "run", first
