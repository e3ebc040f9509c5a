"""The pipeline with ``crop.enabled``: every dataset it reads is cropped once, the later stages read
the crops, and other crop settings (or other weights in the same file) make a new crop folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from report_pages import parse_report

from vreid.core.config import load_config, resolve_config
from vreid.workflows.pipeline import (
    PipelineContext,
    build_stages,
    run_pipeline,
    stage_data,
)


def _crop_boxes(root: Path) -> dict[str, tuple[int, int, int, int, str]]:
    with (root / "crop_boxes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return {
        r["image"]: (int(r["x1"]), int(r["y1"]), int(r["x2"]), int(r["y2"]), r["found"])
        for r in rows
    }


@pytest.mark.slow
def test_pipeline_crops_its_datasets_and_reads_the_crops(tiny_synth, random_detector, tmp_path):
    weights = tmp_path / "detector.pt"
    shutil.copyfile(random_detector, weights)
    overrides = [
        f"data.root={tiny_synth / 'real'}",
        f"data.sim_root={tiny_synth / 'simulation'}",
        "crop.enabled=true",
        f"crop.weights={weights}",
        "crop.min_score=0.3",  # random weights score their boxes about 0.5
        "crop.batch_size=3",
    ]
    cfg = load_config(resolve_config("tiny"), overrides)
    run_dir = tmp_path / "run"
    result = run_pipeline(cfg, run_dir, progress=False)

    (tag,) = (run_dir / "crop").iterdir()
    roots = json.loads((run_dir / "data_roots.json").read_text())
    assert roots["real"] == str(tag / "real")
    assert roots["sim"] == str(tag / "simulation")
    # the attribute model trains on the simulation set: the same cropped folder, cropped once
    assert roots["attributes"] == roots["sim"]
    assert sorted(p.name for p in tag.iterdir()) == ["real", "simulation"]

    settings = json.loads((tag / "real" / "crop_settings.json").read_text())
    assert settings["min_score"] == 0.3
    assert settings["weights_sha256"] is not None
    report = json.loads((tag / "real" / "crop_report.json").read_text())
    assert report["cropped"] > 0
    assert report["images"] == len(_crop_boxes(tag / "real"))

    # the query and gallery images the later stages read are the crops, sized like their boxes
    boxes = _crop_boxes(tag / "real")
    records = json.loads((run_dir / "records.json").read_text())
    checked = 0
    for rec in records["query"] + records["gallery"]:
        path = Path(rec["path"])
        rel = path.relative_to(tag / "real").as_posix()
        x1, y1, x2, y2, found = boxes[rel]
        with Image.open(path) as im:
            assert im.size == (x2 - x1, y2 - y1)
        checked += found == "1"
    assert checked > 0
    assert result["metrics"] is not None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["ensemble+rerank+metadata+tracks"]["mAP"] <= 1
    page = parse_report(run_dir / "report" / "index.html")
    crop_rows = [row for t in page.tables for row in t if row[:1] == ["real"] and len(row) == 6]
    assert crop_rows, "the report has no cropping row for the real set"
    _, detector, _, images, cropped, kept = crop_rows[0]
    assert detector == report["detector"]
    assert [images, cropped, kept] == [
        str(report["images"]),
        str(report["cropped"]),
        str(report["uncropped"]),
    ]

    # other settings: a new crop folder, nothing found at min_score 1 so every image is kept whole
    strict = load_config(resolve_config("tiny"), [*overrides, "crop.min_score=1.0"])
    stage_data(PipelineContext(strict, run_dir.resolve(), progress=False))
    second = {p for p in (run_dir / "crop").iterdir()} - {tag}
    assert len(second) == 1
    (second,) = second
    assert all(found == "0" for *_, found in _crop_boxes(second / "real").values())

    # crop.sets=[real]: the real crops are reused, the simulation and attribute sets stay as given
    real_only = load_config(resolve_config("tiny"), [*overrides, "crop.sets=[real]"])
    stage_data(PipelineContext(real_only, run_dir.resolve(), progress=False))
    roots = json.loads((run_dir / "data_roots.json").read_text())
    assert roots["real"] == str(tag / "real")
    assert roots["sim"] == roots["attributes"] == str(tiny_synth / "simulation")
    assert len(list((run_dir / "crop").iterdir())) == 2

    # the same path with other weights: the data stage is out of date and crops into a new folder
    data_stage = build_stages(cfg)[0]
    before = data_stage.config_hash(cfg)
    state = torch.load(weights, weights_only=True)
    state["model"] = {
        k: v * 1.01 if v.is_floating_point() else v for k, v in state["model"].items()
    }
    torch.save(state, weights)
    assert data_stage.config_hash(cfg) != before  # what run_pipeline compares to re-run a stage
    stage_data(PipelineContext(cfg, run_dir.resolve(), progress=False))
    assert len(list((run_dir / "crop").iterdir())) == 3
