"""Which weights the pipeline ends with: a run killed in the middle of a training stage resumes it
from its last checkpoint and ends with the weights of an uninterrupted run; `pipeline.checkpoint:
best` takes the epoch chosen on validation identities, never on the test split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vreid.core.config import load_config, resolve_config
from vreid.workflows.pipeline import run_pipeline

SRC_ROOT = Path(__file__).resolve().parents[2] / "src"
EPOCHS = 12


@pytest.mark.slow
def test_killed_training_stage_resumes_to_the_uninterrupted_weights(tiny_synth, tmp_path):
    overrides = [
        f"data.root={tiny_synth / 'real'}",
        f"data.sim_root={tiny_synth / 'simulation'}",
        f"train.epochs={EPOCHS}",
        "pipeline.models=[glamor]",
        "pipeline.ensemble=[glamor]",
        "pipeline.attributes=false",
    ]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vreid", "pipeline", "tiny", "--run-dir", str(killed), "-q"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, PYTHONPATH=str(SRC_ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt_dir = killed / "models" / "glamor" / "finetune" / "checkpoints"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (ckpt_dir / "last.pt").is_file():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    epoch_at_kill = torch.load(ckpt_dir / "last.pt", weights_only=True)["epoch"]
    assert epoch_at_kill < EPOCHS
    assert not (killed / "manifests" / "train-glamor.json").exists()  # the stage did not finish

    cfg = load_config(resolve_config("tiny"), overrides)
    resumed = run_pipeline(cfg, killed, progress=False)
    assert "train-glamor" in resumed["ran"]
    assert "data" in resumed["skipped"]
    history = json.loads((killed / "models" / "glamor" / "finetune" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))

    clean = run_pipeline(cfg, tmp_path / "clean", progress=False)
    assert clean["metrics"] is not None
    a = torch.load(ckpt_dir / "last.pt", weights_only=True)["model"]
    b = torch.load(
        tmp_path / "clean" / "models" / "glamor" / "finetune" / "checkpoints" / "last.pt",
        weights_only=True,
    )["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["metrics"] == clean["metrics"]


@pytest.mark.slow
def test_best_checkpoint_is_chosen_on_validation_identities(tiny_synth, tmp_path):
    from vreid.core.errors import ConfigError
    from vreid.inference.extract import Extractor
    from vreid.workflows.pipeline import build_stages

    overrides = [
        f"data.root={tiny_synth / 'real'}",
        f"data.sim_root={tiny_synth / 'simulation'}",
        "pipeline.models=[glamor]",
        "pipeline.ensemble=[glamor]",
        "pipeline.attributes=false",
        "pipeline.checkpoint=best",
    ]
    # best.pt chosen on the test split is refused
    with pytest.raises(ConfigError, match="held-out training identities"):
        build_stages(load_config(resolve_config("tiny"), [*overrides, "train.eval_every=1"]))

    cfg = load_config(
        resolve_config("tiny"),
        [*overrides, "train.val_fraction=0.25", "train.eval_every=1", "train.epochs=3"],
    )
    run = run_pipeline(cfg, tmp_path / "run", progress=False)
    finetune = tmp_path / "run" / "models" / "glamor" / "finetune"
    history = json.loads((finetune / "history.json").read_text())
    assert {h["eval_split"] for h in history} == {"validation"}
    best_epoch = max(history, key=lambda h: h["mAP"])["epoch"]
    best = finetune / "checkpoints" / "best.pt"
    assert torch.load(best, weights_only=True)["epoch"] == best_epoch
    records = json.loads((tmp_path / "run" / "records.json").read_text())["query"]
    features = np.load(tmp_path / "run" / "features" / "glamor" / "query.npy")
    expected = Extractor(best, device="cpu")([r["path"] for r in records]).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert run["metrics"] is not None
