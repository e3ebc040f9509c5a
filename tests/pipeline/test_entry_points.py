"""One retrieval chain: the pipeline, `vreid rank` (rank_split) and `vreid search` (search_images)
given the same features and settings give the same distances, and pipeline and rank the same
metrics. Works on hard-linked copies of the session's tiny run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vreid.workflows.pipeline import run_pipeline
from vreid.workflows.rank import rank_split
from vreid.workflows.search import search_images

FLOORS = ("colour_histogram", "untrained")


def _pipeline(cfg, shared: Path, dst: Path) -> tuple[Path, dict, dict]:
    """A copy of the shared run brought up to date with ``cfg``: (run_dir, rows.json, metrics)."""
    run_dir = Path(shutil.copytree(shared, dst, copy_function=os.link))  # the shared run unchanged
    run_pipeline(cfg, run_dir, progress=False)
    rows = json.loads((run_dir / "distances" / "rows.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return run_dir, rows, metrics


def _rank(cfg, run_dir: Path, out: Path):
    data = json.loads((run_dir / "data_roots.json").read_text())["real"]
    return rank_split(
        [run_dir / "features" / m for m in cfg.pipeline.ensemble],
        data,
        out,
        config=cfg,
        attribute_dir=run_dir / "attributes" / "features",
    )


def _same_rows(run_dir: Path, rows: dict, metrics: dict, rank, out: Path) -> None:
    """Every row of rank is the pipeline's row: same distances, same metrics, same track2.txt."""
    assert rank.rows == [r for r in rows["rows"] if r not in FLOORS]
    assert rank.final == rows["final"]
    rank_metrics = json.loads((out / "metrics.json").read_text())
    assert list(rank_metrics) == rank.rows
    for row in rank.rows:
        np.testing.assert_allclose(
            np.load(out / "distances" / f"{row}.npy"),
            np.load(run_dir / "distances" / f"{row}.npy"),
            rtol=1e-6,
            atol=1e-7,
            err_msg=row,
        )
        assert rank_metrics[row] == metrics[row], row
    assert (out / "track2.txt").read_text() == (run_dir / "track2.txt").read_text()


@pytest.mark.slow
def test_pipeline_rank_and_search_give_the_same_chain(tiny_run, tmp_path):
    cfg, shared, _ = tiny_run
    run_dir, rows, metrics = _pipeline(cfg, shared, tmp_path / "run")
    assert rows["rows"] == [
        *FLOORS,
        "glamor",
        "counter_glamor",
        "ensemble",
        "ensemble+rerank",
        "ensemble+rerank+metadata",
        "ensemble+rerank+metadata+tracks",
    ]
    rank = _rank(cfg, run_dir, tmp_path / "rank")
    _same_rows(run_dir, rows, metrics, rank, tmp_path / "rank")

    # search: the final checkpoints, the attribute model and the image files; no tracks in a
    # folder, so its final row is the pipeline's last one before track averaging
    data = Path(json.loads((run_dir / "data_roots.json").read_text())["real"])
    checkpoints = [
        run_dir / "models" / m / "finetune" / "checkpoints" / "last.pt"
        for m in cfg.pipeline.ensemble
    ]
    result = search_images(
        checkpoints,
        data / "image_query",
        data / "image_test",
        tmp_path / "search",
        config=cfg,
        attribute_checkpoint=run_dir / "attributes" / "model" / "checkpoints" / "attributes.pt",
        progress=False,
    )
    settings = json.loads((result.out_dir / "search.json").read_text())
    pre_tracks = rows["rows"][-2]
    assert settings["row"] == pre_tracks == "ensemble+rerank+metadata"
    assert settings["steps"]["metadata"] == ["type", "color"]
    records = json.loads((run_dir / "records.json").read_text())
    q_index = [result.queries.index(Path(r["path"])) for r in records["query"]]
    g_index = [result.gallery.index(Path(r["path"])) for r in records["gallery"]]
    np.testing.assert_allclose(
        result.distances[np.ix_(q_index, g_index)],
        np.load(run_dir / "distances" / f"{pre_tracks}.npy"),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_without_reranking_pipeline_and_rank_agree(tiny_run, tmp_path):
    """retrieval.rerank=false with weights 3:1: the pipeline used to re-rank anyway, drop the
    metadata and weigh 1:1 (final mAP 56.2 % against rank's 53.3 %)."""
    cfg, shared, _ = tiny_run
    cfg = cfg.model_copy(deep=True)
    cfg.retrieval.rerank = False
    cfg.retrieval.ensemble_weights = [3.0, 1.0]
    run_dir, rows, metrics = _pipeline(cfg, shared, tmp_path / "run")
    assert rows["rows"][len(FLOORS) + 2 :] == [
        "ensemble",
        "ensemble+metadata",
        "ensemble+metadata+tracks",
    ]
    assert rows["steps"]["ensemble_weights"] == [3.0, 1.0]
    rank = _rank(cfg, run_dir, tmp_path / "rank")
    _same_rows(run_dir, rows, metrics, rank, tmp_path / "rank")
    final = rank.final_metrics
    print(f"final row {rank.final}: mAP {100 * final['mAP']:.1f} % (pipeline and rank)")
