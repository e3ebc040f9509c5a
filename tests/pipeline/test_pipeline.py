"""The pipeline end to end on the tiny preset: artefacts, caching, --from, and its report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from report_pages import parse_report

from vreid.core.config import list_presets, load_config, resolve_config
from vreid.core.errors import ConfigError
from vreid.workflows.pipeline import build_stages, run_pipeline

REPO = Path(__file__).resolve().parents[2]
TABLE_KEYS = [
    "colour_histogram",
    "untrained",
    "glamor",
    "counter_glamor",
    "ensemble",
    "ensemble+rerank",
    "ensemble+rerank+metadata",
    "ensemble+rerank+metadata+tracks",
]


def test_packaged_presets_validate():
    """The presets live once, in the package (src/vreid/configs), and each one validates."""
    packaged = list_presets()
    assert {"demo", "tiny", "aic20", "veri776"} <= set(packaged)
    assert not (REPO / "configs").exists(), "presets are kept once, in src/vreid/configs"
    for name, path in packaged.items():
        cfg = load_config(path)  # every preset validates
        assert cfg.pipeline.name == name
    with pytest.raises(ConfigError, match="presets: "):
        resolve_config("no-such-preset")


def test_ensemble_members_must_be_trained_models():
    """An ensemble member missing from pipeline.models is refused, naming both lists; so are
    ensemble weights of another length."""
    tiny = resolve_config("tiny")
    cfg = load_config(tiny, ["pipeline.models=[glamor]"])
    message = (
        "pipeline.ensemble ['glamor', 'counter_glamor'] names ['counter_glamor'], not among the "
        "trained pipeline.models ['glamor']"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_stages(cfg)
    cfg = load_config(tiny, ["retrieval.ensemble_weights=[1,2,3]"])
    with pytest.raises(ConfigError, match=r"ensemble_weights \[1.0, 2.0, 3.0\] has 3 entries"):
        build_stages(cfg)
    assert "ensemble_weights" not in load_config(tiny).pipeline.model_dump()


@pytest.mark.slow
def test_tiny_pipeline_writes_every_artefact(tiny_run):
    _, run_dir, first = tiny_run
    assert first["skipped"] == []
    stages = [
        "data",
        "attributes",
        "train-glamor",
        "train-counter_glamor",
        "extract",
        "distances",
        "metrics",
        "submission",
        "report",
    ]
    assert first["ran"] == stages
    for stage in stages:
        manifest = json.loads((run_dir / "manifests" / f"{stage}.json").read_text())
        assert manifest["stage"] == stage
        for rel in manifest["outputs"]:
            assert (run_dir / rel).is_file(), rel
    records = json.loads((run_dir / "records.json").read_text())
    n_q, n_g = len(records["query"]), len(records["gallery"])
    for model in ("glamor", "counter_glamor"):
        for phase in ("pretrain", "finetune"):
            assert (run_dir / "models" / model / phase / "checkpoints" / "last.pt").is_file()
        q = np.load(run_dir / "features" / model / "query.npy")
        assert q.shape[0] == n_q
    for head in ("color", "type"):
        assert np.load(run_dir / "attributes" / "features" / head / "gallery.npy").shape[0] == n_g

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics) == TABLE_KEYS
    for key, m in metrics.items():
        assert 0.0 <= m["mAP"] <= 1.0, key
        assert 0.0 <= m["full"]["mAP"] <= 1.0, key
        assert len(m["cmc"]) == 100
        assert m["cmc"][min(100, n_g) - 1] == pytest.approx(1.0), key  # every match within g
        assert np.all(np.diff(m["cmc"]) >= 0), key
        d = np.load(run_dir / "distances" / f"{key}.npy")
        assert d.shape == (n_q, n_g)
    # track averaging: every gallery image of a track has the same distance to a query
    d = np.load(run_dir / "distances" / "ensemble+rerank+metadata+tracks.npy")
    tracks = np.array([r["track"] for r in records["gallery"]])
    for t in np.unique(tracks)[:5]:
        cols = d[:, tracks == t]
        np.testing.assert_allclose(cols, cols[:, :1].repeat(cols.shape[1], 1), rtol=1e-5)

    lines = (run_dir / "track2.txt").read_text().splitlines()
    assert len(lines) == n_q
    top = min(100, n_g)
    for i, line in enumerate(lines):
        idx = [int(x) for x in line.split()]
        assert len(idx) == top
        assert len(set(idx)) == top
        assert all(1 <= x <= n_g for x in idx)
        # nearest first: the listed distances never decrease
        assert np.all(np.diff(d[i, np.array(idx) - 1]) >= -1e-6)


@pytest.mark.slow
def test_tiny_report_table_and_images(tiny_run):
    _, run_dir, _ = tiny_run
    index = run_dir / "report" / "index.html"
    page = parse_report(index)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = {row[0]: row[1:] for t in page.tables for row in t if len(row) == 7}
    # rows are labelled by what was built: the tiny preset's trunk is a ResNet-18
    assert table["GLAMOR (ResNet-18 trunk)"][0] == f"{100 * metrics['glamor']['mAP']:.1f}"
    assert "Ensemble (GLAMOR + Counter GLAMOR, 1:1)" in table
    # the paper's own numbers, labelled as the paper's, beside the run's table
    paper = {row[0]: row[1:] for t in page.tables for row in t if len(row) == 3}
    assert paper["ResNet-50"] == ["29.4", "45.9"]
    assert paper["GLAMOR + Counter GLAMOR + metadata re-ranking (theirs)"] == ["37.3", "52.6"]
    assert table["+ track averaging"][2] == (
        f"{100 * metrics['ensemble+rerank+metadata+tracks']['cmc'][0]:.1f}"
    )
    assert len(page.images) >= 5
    for src in page.images:
        assert (index.parent / src).is_file(), src
    assert "ranklist_best.png" in page.images


@pytest.mark.slow
def test_tiny_pipeline_caches_and_reruns_from_a_stage(tiny_run):
    cfg, run_dir, _ = tiny_run
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "distances").glob("*.npy")}
    again = run_pipeline(cfg, run_dir, progress=False)
    assert again["ran"] == []
    assert {p: p.stat().st_mtime_ns for p in before} == before

    rerun = run_pipeline(cfg, run_dir, from_stage="distances", progress=False)
    assert rerun["ran"] == ["distances", "metrics", "submission", "report"]
    assert "extract" in rerun["skipped"]

    # a changed re-ranking key re-runs the retrieval chain and what follows, not the training
    changed = cfg.model_copy(deep=True)
    changed.retrieval.k1 = cfg.retrieval.k1 + 1
    third = run_pipeline(changed, run_dir, progress=False)
    assert "train-glamor" in third["skipped"]
    assert third["ran"] == ["distances", "metrics", "submission", "report"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["retrieval"]["k1"] == cfg.retrieval.k1 + 1

    # retrieval.top: the metrics' depth and the submission's length, nothing upstream
    shorter = cfg.model_copy(deep=True)
    shorter.retrieval.top = 5
    fourth = run_pipeline(shorter, run_dir, progress=False)
    assert fourth["ran"] == ["distances", "metrics", "submission", "report"]
    assert len(fourth["metrics"]["glamor"]["cmc"]) == 5
    lines = (run_dir / "track2.txt").read_text().splitlines()
    assert {len(line.split()) for line in lines} == {5}

    # no configuration's results were lost: each is kept under results/<key>/, side by side
    kept = {
        p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("results/*/metrics.json")
    }
    assert len(kept) >= 3
    assert sorted(len(m["glamor"]["cmc"]) for m in kept.values())[:2] == [5, cfg.retrieval.top]
    page = (run_dir / "report" / "index.html").read_text()
    assert "Runs in this folder" in page
    assert f"retrieval.k1={cfg.retrieval.k1 + 1}" in page  # the k1 run, shown beside this one
    run_pipeline(cfg, run_dir, progress=False)  # as it was, for the other tests

    with pytest.raises(ConfigError, match="unknown stage"):
        run_pipeline(cfg, run_dir, from_stage="nope", progress=False)


@pytest.mark.slow
def test_interrupted_stage_runs_again(tiny_run):
    """A stage without a manifest (killed before it finished) runs again; identical outputs leave
    the downstream stages up to date."""
    cfg, run_dir, _ = tiny_run
    run_pipeline(cfg, run_dir, progress=False)
    (run_dir / "manifests" / "distances.json").unlink()
    (run_dir / "distances" / "glamor.npy").unlink()
    resumed = run_pipeline(cfg, run_dir, progress=False)
    assert resumed["ran"][0] == "distances"
    assert "train-glamor" in resumed["skipped"]
    assert (run_dir / "distances" / "glamor.npy").is_file()
