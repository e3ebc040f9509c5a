"""The report on a hand-made run directory: table values, rank-list selection, resolvable images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_pages import parse_report

from vreid.engine.attributes import no_better_than_majority
from vreid.workflows.report import build_report
from vreid.workflows.report.html import cmc_curves, curve_label, results_table_rows, run_labels
from vreid.workflows.report.plots import cmc_figure, read_scalars, training_figure
from vreid.workflows.report.ranklist import (
    CAPTION_PX,
    TRACK_COLOURS,
    average_precision_per_query,
    select_best_and_worst,
)


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


def test_cmc_legend_names_rows_like_the_table_and_sits_below_the_axes():
    labels = {"ensemble": "Ensemble (GLAMOR + Counter GLAMOR, 1:1)", "glamor": "GLAMOR (ResNet-18)"}
    assert curve_label("glamor", labels) == "GLAMOR (ResNet-18)"
    assert curve_label("colour_histogram") == "Colour-histogram baseline (floor)"
    assert curve_label("ensemble+rerank+metadata+tracks", labels) == (
        "Ensemble (GLAMOR + Counter GLAMOR, 1:1) + re-ranking + metadata + track averaging"
    )
    cmc = [0.5, 0.6, 0.7, 0.8, 0.9]
    names = [curve_label(k, labels) for k in ("glamor", "ensemble", "ensemble+rerank+metadata")]
    fig = cmc_figure({name: {"cmc": cmc} for name in names}, max_rank=5)
    fig.canvas.draw()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [f"{n} (R1 50.0)" for n in names]
    renderer = fig.canvas.get_renderer()
    box, axes = legend.get_window_extent(renderer), fig.axes[0].get_tightbbox(renderer)
    assert box.y1 <= axes.y0  # below the axes and their tick labels: covers no curve
    assert box.x0 >= 0
    assert box.x1 <= fig.bbox.x1


def test_report_cmc_uses_run_labels(tmp_path: Path):
    run = make_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["ensemble+rerank+metadata+tracks"] = dict(metrics["glamor"], cmc=[0.7] * 10)
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "distances" / "rows.json").write_text(
        json.dumps({"labels": {"glamor": "GLAMOR (ResNet-18 trunk)"}})
    )
    index = build_report(run)
    assert (index.parent / "cmc.png").is_file()
    # the results table and the legend share the run's labels
    assert parse_report(index).tables[0][2][0] == "GLAMOR (ResNet-18 trunk)"
    assert list(cmc_curves(metrics, run_labels(run))) == [
        "Colour-histogram baseline (floor)",
        "GLAMOR (ResNet-18 trunk)",
        "Ensemble (pipeline.ensemble, retrieval.ensemble_weights) + re-ranking + metadata + "
        "track averaging",
    ]


def _dark_runs(mask_rows: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    runs, n = [], 0
    for v in [*mask_rows.tolist(), False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_rank_list_captions_are_legible_at_the_displayed_size(tmp_path: Path):
    index = build_report(make_run(tmp_path))
    text = index.read_text(encoding="utf-8")
    # shown at the picture's own size (scrolling sideways), not scaled down to the page
    assert '<p class="wide"><img src="ranklist_best.png"' in text
    assert ".wide img{max-width:none}" in text
    sheet = np.asarray(Image.open(index.parent / "ranklist_best.png").convert("RGB"))
    # the first gallery caption strip: the first run of the first track colour in the top row
    strip = np.all(sheet == TRACK_COLOURS[0], axis=2)
    ys, xs = np.nonzero(strip)
    y0 = ys.min()
    rows = ys[ys < y0 + 3 * CAPTION_PX]
    x0 = xs[ys == y0].min()
    x1 = x0 + _dark_runs(strip[y0, x0:])[0]  # the strip's width
    box = sheet[y0 : rows.max() + 1, x0:x1]
    glyph_rows = (box.min(axis=2) < 100).any(axis=1)
    heights = _dark_runs(glyph_rows)
    assert len(heights) == 1  # one caption line: rank, camera, track
    assert heights[0] >= 11  # the digits' height in pixels of the page


def test_training_curves_are_per_epoch_with_validation_map(tmp_path: Path):
    history = [
        {"epoch": e, "loss": 3.0 - e, "ce": 2.0 - e / 2, "triplet": 1.0 / e, "lr": 3.5e-4,
         "images_per_s": 50.0, "iterations": 20, "mAP": m, "rank1": m + 0.1,
         "eval_split": "validation"}
        for e, m in ((1, 0.12), (2, 0.25), (3, 0.31))
    ]  # fmt: skip
    (tmp_path / "history.json").write_text(json.dumps(history))
    scalars = read_scalars(tmp_path)
    assert scalars["validation mAP"] == [(1, 0.12), (2, 0.25), (3, 0.31)]
    fig = training_figure({"glamor/finetune": scalars})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:2] == ["loss", "validation mAP"]
    assert "iterations" not in titles
    assert "images_per_s" not in titles
    for ax in fig.axes:
        if ax.get_title():
            assert ax.get_xlabel() == "epoch"
    panel = next(ax for ax in fig.axes if ax.get_title() == "validation mAP")
    xs, ys = panel.lines[0].get_data()
    assert list(xs) == [1, 2, 3]
    assert list(ys) == [0.12, 0.25, 0.31]


def test_attribute_heads_are_compared_with_the_majority_class(tmp_path: Path):
    # the demo's type head: 47.4 % against a majority class of 46.4 % on 500 images
    assert no_better_than_majority(0.474, 0.464, 500)
    assert not no_better_than_majority(0.75, 0.30, 100)
    assert no_better_than_majority(0.61, 0.60, 100_000)  # 1 point: below the 2-point floor
    assert not no_better_than_majority(None, 0.5, 10)
    # an eval.json without the majority class: nothing to compare, nothing claimed
    (tmp_path / "plain").mkdir()
    plain = build_report(make_run(tmp_path / "plain"))
    table = next(t for t in parse_report(plain).tables if t[0][0] == "Head")
    assert table[1] == ["color", "75.0", "–", "4", "–"]
    run = make_run(tmp_path)
    (run / "attributes" / "eval.json").write_text(
        json.dumps(
            {
                "color": {"accuracy": 0.75, "majority_baseline": 0.30, "num_images": 100},
                "type": {"accuracy": 0.474, "majority_baseline": 0.464, "num_images": 500},
            }
        )
    )
    index = build_report(run)
    table = next(t for t in parse_report(index).tables if t[0][0] == "Head")
    assert table[1] == ["color", "75.0", "30.0", "100", "better"]
    assert table[2] == ["type", "47.4", "46.4", "500", "no better than the majority class"]
    text = index.read_text(encoding="utf-8")
    assert "<b>Warning:</b> type (47.4 % vs 46.4 %): no better than always guessing" in text
