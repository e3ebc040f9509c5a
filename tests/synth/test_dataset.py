"""The generated dataset: layout, splits, ground truth, boxes, determinism."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vreid.core.errors import ConfigError, DatasetError, VreidError
from vreid.data import load_dataset
from vreid.synth import generate


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_real_split_reads_back_with_ground_truth(tiny_synth: Path) -> None:
    ds = load_dataset(tiny_synth / "real")
    assert ds.has_ground_truth
    n = {s: len(ds[s]) for s in ("train", "query", "gallery")}
    assert all(v > 0 for v in n.values()), n
    for r in ds:
        assert r.path.is_file()
        assert r.camera is not None
        assert r.vehicle_id is not None
    assert all(r.track is not None for r in (*ds["train"], *ds["gallery"]))


def test_identities_disjoint_and_seen_by_two_cameras(tiny_synth: Path) -> None:
    real = load_dataset(tiny_synth / "real")
    sim = load_dataset(tiny_synth / "simulation")
    train = {r.vehicle_id for r in real["train"]}
    test = {r.vehicle_id for r in (*real["query"], *real["gallery"])}
    simulated = {r.vehicle_id for r in sim["train"]}
    assert train
    assert test
    assert simulated
    assert not train & test
    assert not simulated & (train | test)
    cams = defaultdict(set)
    for r in real:
        cams[r.vehicle_id].add(r.camera)
    assert min(len(c) for c in cams.values()) >= 2


def test_queries_match_other_cameras_only(tiny_synth: Path) -> None:
    ds = load_dataset(tiny_synth / "real")
    gallery_cams = defaultdict(set)
    for r in ds["gallery"]:
        gallery_cams[r.vehicle_id].add(r.camera)
    for q in ds["query"]:
        # the query's own (id, camera) track is not in the gallery, other cameras of it are
        assert q.camera not in gallery_cams[q.vehicle_id]
        assert gallery_cams[q.vehicle_id] - {q.camera}
    # every test identity has queries and gallery images
    assert {q.vehicle_id for q in ds["query"]} == set(gallery_cams)
    # every gallery track is one identity in one camera
    tracks = defaultdict(set)
    for r in ds["gallery"]:
        tracks[r.track].add((r.vehicle_id, r.camera))
    assert all(len(v) == 1 for v in tracks.values())


def test_simulation_labels(tiny_synth: Path) -> None:
    ds = load_dataset(tiny_synth / "simulation")
    recs = ds["train"]
    assert recs
    assert all(r.color is not None and r.type is not None for r in recs)
    extras = ds.extra_attributes["train"]
    for r in recs:
        e = extras[r.name]
        assert 0 <= float(e["orientation"]) < 360
        assert float(e["camHei"]) > 0
        assert float(e["camDis"]) > 0
        assert 0 <= float(e["lightDir"]) < 360
        assert float(e["lightInt"]) > 0


@pytest.mark.parametrize("root", ["real", "simulation"])
def test_boxes_cover_every_image_and_lie_inside(tiny_synth: Path, root: str) -> None:
    ds = load_dataset(tiny_synth / root)
    with open(tiny_synth / root / "vehicle_boxes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(len(v) for v in ds.splits.values())
    by_key = {(r.split, r.name): r for r in ds}
    for row in rows:
        rec = by_key[(row["split"], row["image_name"])]
        w, h = Image.open(rec.path).size
        assert (w, h) == (256, 256)
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= w
        assert 0 <= y1 < y2 <= h
        assert (x2 - x1) * (y2 - y1) > 0.02 * w * h  # a vehicle, not a speck


def test_same_seed_same_bytes_for_any_worker_count(tiny_synth: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", preset="tiny", seed=0, workers=2, progress=False)
    assert _tree_hash(again) == _tree_hash(tiny_synth)


def test_other_seed_other_images(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", preset="tiny", ids=4, cameras=2, seed=1, progress=False)
    b = generate(tmp_path / "b", preset="tiny", ids=4, cameras=2, seed=2, progress=False)
    ha, hb = _tree_hash(a), _tree_hash(b)
    images = [k for k in ha if k.endswith(".jpg") and k in hb]
    assert images
    assert all(ha[k] != hb[k] for k in images)


def test_refuses_to_overwrite_and_rejects_bad_arguments(tiny_synth: Path, tmp_path: Path) -> None:
    with pytest.raises(VreidError, match="already exists"):
        generate(tiny_synth, preset="tiny", progress=False)
    with pytest.raises(ConfigError, match="preset"):
        generate(tmp_path / "x", preset="huge", progress=False)
    with pytest.raises(ConfigError, match="ids"):
        generate(tmp_path / "x", preset="tiny", ids=2, progress=False)
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".x.partial*"))


def test_overrides_change_counts(tmp_path: Path) -> None:
    out = generate(tmp_path / "o", preset="tiny", ids=6, cameras=3, size=(96, 64), progress=False)
    ds = load_dataset(out / "real")
    ids = {r.vehicle_id for r in ds}
    cams = {r.camera for r in ds}
    assert len(ids) == 6
    assert cams <= {1, 2, 3}
    assert Image.open(ds["train"][0].path).size == (96, 64)
    boxes = np.loadtxt(
        out / "real" / "vehicle_boxes.csv", delimiter=",", skiprows=1, usecols=(2, 3, 4, 5)
    )
    assert (boxes[:, 2] <= 96).all()
    assert (boxes[:, 3] <= 64).all()


def test_config_settings_reach_the_generator(tmp_path: Path) -> None:
    """synth.ids / cameras / size / seed of the config are what `vreid synth` and the pipeline
    generate (they used to stop at the config)."""
    from vreid.core.config import load_config
    from vreid.synth import generate_from_config
    from vreid.workflows.pipeline import ensure_synthetic_data

    cfg = load_config(
        None, ["synth.preset=tiny", "synth.ids=6", "synth.cameras=3", "synth.size=[64, 48]"]
    )
    out = generate_from_config(tmp_path / "s", cfg.synth, workers=1, progress=False)
    info = json.loads((out / "synth.json").read_text())
    assert (info["ids"], info["cameras"], info["size"]) == (6, 3, [64, 48])
    with Image.open(next((out / "real" / "image_train").iterdir())) as im:
        assert im.size == (64, 48)
    assert ensure_synthetic_data(cfg, out, progress=False) == out  # same settings: reused
    other = load_config(None, ["synth.preset=tiny", "synth.ids=8"])
    with pytest.raises(DatasetError, match="'ids': 6"):
        ensure_synthetic_data(other, out, progress=False)
