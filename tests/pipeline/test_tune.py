"""Post-processing tuned on validation identities: the values come from the grids, the curve
covers every value tried, and the test split is never read."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vreid.core.config import load_config
from vreid.core.errors import ConfigError
from vreid.retrieval.chain import GroundTruth
from vreid.workflows.pipeline import PipelineContext, build_stages, run_pipeline
from vreid.workflows.pipeline.stages import stage_tune
from vreid.workflows.tune import TUNED, tune_retrieval


def _clustered(rng, ids, per_id, dim, noise):
    centres = rng.normal(size=(ids, dim))
    labels = np.repeat(np.arange(ids), per_id)
    x = centres[labels] + noise * rng.normal(size=(labels.size, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_coordinate_search_picks_grid_values_and_never_loses():
    rng = np.random.default_rng(0)
    feats, labels = _clustered(rng, 12, 6, 32, 0.9)
    other = feats + 0.3 * rng.normal(size=feats.shape).astype(np.float32)
    colour, _ = _clustered(rng, 12, 6, 8, 0.2)  # a good attribute: tight per identity
    q = np.arange(labels.size) % 6 == 0
    cams = np.arange(labels.size) % 6
    truth = GroundTruth(labels[q], labels[~q], cams[q], cams[~q])
    cfg = load_config(None, ["tune.k1=[5, 10]", "tune.k2=[2, 3]", "tune.lambda_value=[0.3, 0.6]"])
    features = {"a": (feats[q], feats[~q]), "b": (other[q], other[~q])}
    attributes = {"color": (colour[q], colour[~q]), "type": (colour[q], colour[~q])}
    result = tune_retrieval(cfg.retrieval, cfg.tune, features, truth, attributes=attributes)
    assert set(result.chosen) == set(TUNED)
    for setting in ("gamma_type", "gamma_colour", "k1", "k2", "lambda_value"):
        assert result.chosen[setting] in [
            *getattr(cfg.tune, setting),
            getattr(cfg.retrieval, setting),
        ]
    assert result.best_score >= result.default_score
    sizes = sum(len(getattr(cfg.tune, s)) for s in TUNED)
    assert len(result.curve) == sizes  # every value of every applicable grid was scored
    assert max(c["score"] for c in result.curve) == pytest.approx(result.best_score)


def test_tune_needs_a_validation_split():
    with pytest.raises(ConfigError, match=r"train\.val_fraction > 0"):
        build_stages(load_config("tiny", ["tune.enabled=true"]))


@pytest.mark.slow
def test_tune_stage_reads_the_training_split_only(tiny_synth, tmp_path):
    cfg = load_config(
        "tiny",
        [
            f"data.root={tiny_synth / 'real'}",
            f"data.sim_root={tiny_synth / 'simulation'}",
            "train.val_fraction=0.3",
            "tune.enabled=true",
            "tune.k1=[5, 10]",
            "tune.k2=[2]",
            "tune.lambda_value=[0.3]",
            "tune.gamma_type=[0.0, 0.2]",
            "tune.gamma_colour=[0.1]",
        ],
    )
    run = run_pipeline(cfg, tmp_path / "run", progress=False)
    assert "tune" in run["ran"]
    tuned = json.loads((tmp_path / "run" / "tune" / "tune.json").read_text())
    assert tuned["validation"]["queries"] > 0
    rows = json.loads((tmp_path / "run" / "distances" / "rows.json").read_text())
    assert rows["tuned"] is True
    assert rows["retrieval"]["k1"] == tuned["chosen"]["k1"]
    assert (
        "tuned on validation identities" in (tmp_path / "run" / "report" / "index.html").read_text()
    )

    # the stage again, on a dataset whose query and gallery (the test split) are gone
    ctx = PipelineContext(cfg, (tmp_path / "run").resolve(), progress=False)
    ds = ctx.dataset()
    ctx._cache["dataset"] = dataclasses.replace(
        ds, splits={**ds.splits, "query": [], "gallery": []}
    )
    (tmp_path / "run" / "tune" / "tune.json").unlink()
    stage_tune(ctx)
    again = json.loads((tmp_path / "run" / "tune" / "tune.json").read_text())
    assert again["chosen"] == tuned["chosen"]
