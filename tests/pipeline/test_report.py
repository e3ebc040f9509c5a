"""The report on a hand-made run directory: table values, rank-list selection, resolvable images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_pages import parse_report

from vreid.workflows.report import build_report
from vreid.workflows.report.html import results_table_rows
from vreid.workflows.report.plots import read_scalars
from vreid.workflows.report.ranklist import average_precision_per_query, select_best_and_worst


def test_average_precision_matches_hand_computation():
    # query 0: gallery order by distance = [2, 0, 1, 3] -> ids [5, 5, 7, 5] vs query id 5
    # matches at ranks 1, 2, 4 -> AP = (1/1 + 2/2 + 3/4) / 3
    d = np.array([[0.5, 0.9, 0.1, 1.0], [0.1, 0.2, 0.3, 0.4]])
    gids = np.array([5, 7, 5, 5])
    ap = average_precision_per_query(d, np.array([5, 9]), gids, block=1)
    assert ap[0] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert np.isnan(ap[1])  # no true match for id 9
    best, worst = select_best_and_worst(np.array([0.2, np.nan, 0.9, 0.5, 0.1]), 4)
    assert best == [2, 3]
    assert worst == [4, 0]


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "run <x>"
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    q_ids, g_ids = [1, 2, 3], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    records = {}
    for split, ids in (("query", q_ids), ("gallery", g_ids)):
        rows = []
        for i, vid in enumerate(ids):
            p = imgs / f"{split}_{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(p)
            rows.append(
                {
                    "path": str(p),
                    "name": p.name,
                    "vehicle_id": vid,
                    "camera": i % 3,
                    "track": None if split == "query" else i // 2,
                }
            )
        records[split] = rows
    (run / "distances").mkdir(parents=True)
    (run / "records.json").write_text(json.dumps(records))
    d = rng.random((3, 12)).astype(np.float32)
    d[0, :2] = 0.0  # query 0 perfect
    d[2, 4:6] = 5.0  # query 2 worst
    np.save(run / "distances" / "ensemble+rerank+metadata+tracks.npy", d)
    cmc = [0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.95, 0.95, 1.0]
    metrics = {
        "glamor": {
            "mAP": 0.4,
            "cmc": cmc,
            "mINP": 0.1,
            "num_valid_queries": 3,
            "full": {"mAP": 0.41, "mINP": 0.12},
        },
        "colour_histogram": {
            "mAP": 0.05,
            "cmc": [0.1] * 10,
            "mINP": 0.01,
            "num_valid_queries": 3,
            "full": {"mAP": 0.06, "mINP": 0.02},
        },
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "attributes").mkdir()
    (run / "attributes" / "eval.json").write_text(
        json.dumps(
            {
                "color": {
                    "accuracy": 0.75,
                    "num_images": 4,
                    "classes": ["red", "<blue>"],
                    "confusion": [[2, 0], [1, 1]],
                }
            }
        )
    )
    (run / "models" / "glamor" / "finetune").mkdir(parents=True)
    (run / "models" / "glamor" / "finetune" / "history.json").write_text(
        json.dumps([{"epoch": 1, "loss": 3.0, "mAP": 0.1}, {"epoch": 2, "loss": 2.0, "mAP": 0.3}])
    )
    (run / "config.yaml").write_text(
        "pipeline:\n  name: '<script>'\nreport:\n  num_rank_lists: 2\n"
    )
    return run


def test_report_table_images_and_escaping(tmp_path: Path):
    run = make_run(tmp_path)
    index = build_report(run)
    assert index == run / "report" / "index.html"
    page = parse_report(index)
    results = page.tables[0]
    assert results[0][:3] == ["Method", "mAP (AIC, top 100)", "mAP (full)"]
    # floor first, then GLAMOR: values in percent
    assert results[1][0].startswith("Colour-histogram")
    assert results[2] == ["GLAMOR", "40.0", "41.0", "50.0", "90.0", "100.0", "12.0"]
    assert len(page.images) >= 5  # cmc, best, worst, training, confusion
    for src in page.images:
        assert not src.startswith(("http", "/")), src
        target = index.parent / src
        assert target.is_file(), src
        with Image.open(target) as im:
            assert im.width > 50
    text = index.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    # the best query (0) is drawn in the best list with AP 1.00
    assert (index.parent / "ranklist_best.png").is_file()
    assert "ranklist_worst.png" in page.images


def test_results_rows_follow_table_order():
    rows = results_table_rows({"ensemble": {"mAP": 0.5}, "glamor": {"mAP": 0.25, "cmc": [0.5]}})
    assert [r[0] for r in rows] == ["glamor", "ensemble"]
    assert rows[0][2][:3] == ["25.0", "–", "50.0"]


def test_read_scalars_from_tensorboard(tmp_path: Path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(tmp_path / "tb")
    for step in range(3):
        w.add_scalar("loss/total", 3.0 - step, step)
    w.close()
    scalars = read_scalars(tmp_path)
    assert scalars["loss/total"] == [(0, 3.0), (1, 2.0), (2, 1.0)]


def test_missing_metrics_is_a_clear_error(tmp_path: Path):
    from vreid.core.errors import VreidError

    with pytest.raises(VreidError, match=r"metrics\.json"):
        build_report(tmp_path)
