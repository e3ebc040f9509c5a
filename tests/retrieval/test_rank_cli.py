"""`vreid rank` and `vreid submission check` end to end on a tiny AIC-layout split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vreid.core.config import load_config
from vreid.core.errors import FeatureFileError
from vreid.data import ImageRecord, load_dataset, write_aic
from vreid.inference.features import save_features
from vreid.retrieval.metrics import evaluate
from vreid.retrieval.reranking import original_distance, rerank
from vreid.retrieval.submission import check_submission
from vreid.workflows.cli import app
from vreid.workflows.rank import rank_split

NUM_IDS, PER_ID = 12, 6


def make_split(root: Path, with_ids: bool = True) -> dict[str, list[ImageRecord]]:
    rng = np.random.default_rng(0)
    splits: dict[str, list[ImageRecord]] = {"query": [], "gallery": []}
    track = 0
    for vid in range(NUM_IDS):
        for k in range(PER_ID):
            split = "query" if k == 0 else "gallery"
            name = f"{vid:03d}{k:03d}.jpg"
            folder = root / ("image_query" if split == "query" else "image_test")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"\xff\xd8\xff\xd9")
            splits[split].append(
                ImageRecord(
                    path=folder / name,
                    name=name,
                    split=split,
                    vehicle_id=vid + 1 if with_ids else None,
                    camera=int(rng.integers(1, 4)),
                    track=None if split == "query" else track + (k > 3),
                )
            )
        track += 2
    write_aic(root, splits)
    return splits


def feats_for(records, dim: int, seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(NUM_IDS + 1, dim))
    ids = np.array([r.name[:3] for r in records], dtype=int)
    return (centres[ids] + rng.normal(scale=noise, size=(len(records), dim))).astype(np.float32)


@pytest.fixture
def split(tmp_path):
    root = tmp_path / "data"
    make_split(root)
    ds = load_dataset(root)
    q, g = ds["query"], ds["gallery"]
    feats = {}
    for model, seed in (("glamor", 1), ("counter", 2)):
        d = tmp_path / "features" / model
        fq, fg = feats_for(q, 32, seed, 0.9), feats_for(g, 32, seed, 0.9)
        save_features(d / "query", fq, [r.name for r in q])
        save_features(d / "gallery", fg, [r.name for r in g])
        feats[model] = (fq, fg)
    for head, dim in (("type", 6), ("color", 4)):
        d = tmp_path / "attrs" / head
        save_features(d / "query", feats_for(q, dim, 5, 0.3), [r.name for r in q])
        save_features(d / "gallery", feats_for(g, dim, 5, 0.3), [r.name for r in g])
    return root, tmp_path, ds, feats


def test_rank_cli_writes_everything(split):
    root, tmp, ds, _feats = split
    out = tmp / "ranked"
    runner = CliRunner()
    args = [
        "rank",
        str(tmp / "features/glamor"),
        str(tmp / "features/counter"),
        "--data",
        str(root),
    ]
    args += ["--out", str(out), "--attributes", str(tmp / "attrs"), "--set", "retrieval.k1=8"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "mAP" in res.output
    q, g = len(ds["query"]), len(ds["gallery"])
    ranks = check_submission(out / "track2.txt", q, g)
    assert ranks.shape == (q, g)  # gallery < 100: the whole gallery per line
    rows = [
        "glamor",
        "counter",
        "ensemble",
        "ensemble+rerank",
        "ensemble+rerank+metadata",
        "ensemble+rerank+metadata+tracks",
    ]
    info = json.loads((out / "rank.json").read_text())
    assert info["rows"] == rows
    assert info["final"] == rows[-1]
    assert info["steps"]["metadata"] == ["type", "color"]
    assert info["steps"]["track_average"] is True
    # metrics.json: the pipeline's table, {row: metrics} (AIC mAP@top + the full-length mAP)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == rows
    assert sorted(p.name for p in (out / "distances").iterdir()) == sorted(f"{r}.npy" for r in rows)
    qid = [r.vehicle_id for r in ds["query"]]
    gid = [r.vehicle_id for r in ds["gallery"]]
    for row in rows:
        dist = np.load(out / "distances" / f"{row}.npy")
        assert dist.shape == (q, g)
        assert metrics[row]["mAP"] == pytest.approx(evaluate(dist, qid, gid)["mAP"])
        full = evaluate(dist, qid, gid, protocol="all", max_rank=g)
        assert metrics[row]["full"]["mAP"] == pytest.approx(full["mAP"])
    assert "ensemble+rerank+metadata+tracks" in res.output
    lines = (out / "ranked_lists.txt").read_text().splitlines()
    assert lines[0].split()[0] == ds["query"][0].name
    assert lines[0].split()[1] == ds["gallery"][ranks[0, 0] - 1].name
    # a second run refuses to overwrite
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert "already exists" in str(res.exception)


def test_rank_split_matches_the_api(split):
    root, tmp, _ds, feats = split
    cfg = load_config(None, ["retrieval.track_average=false", "retrieval.k1=6", "retrieval.k2=3"])
    res = rank_split([tmp / "features/glamor"], root, tmp / "out", config=cfg)
    assert res.final == "ensemble+rerank"
    fq, fg = feats["glamor"]
    expected = rerank(fq, fg, k1=6, k2=3)
    np.testing.assert_array_equal(np.load(tmp / "out/distances/ensemble+rerank.npy"), expected)
    assert res.final_metrics["mAP"] > 0.5  # clustered features: re-ranking finds the ids


def test_flags_are_config_shorthands(split):
    """-c takes a preset name; --no-rerank and --top set retrieval.rerank / retrieval.top."""
    root, tmp, _ds, feats = split
    out = tmp / "ranked"
    args = ["rank", str(tmp / "features/glamor"), "-d", str(root), "-o", str(out), "-c", "tiny"]
    res = CliRunner().invoke(app, [*args, "--no-rerank", "--top", "7"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "rank.json").read_text())
    assert info["rows"] == ["glamor", "ensemble", "ensemble+tracks"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["ensemble"]["cmc"]) == 7
    assert all(len(line.split()) == 7 for line in (out / "track2.txt").read_text().splitlines())
    saved = load_config(out / "config.yaml")
    assert saved.retrieval.rerank is False
    assert saved.retrieval.top == 7
    assert saved.retrieval.k1 == 6  # the tiny preset's
    fq, fg = feats["glamor"]
    np.testing.assert_array_equal(
        np.load(out / "distances/ensemble.npy"), original_distance(fq, fg)
    )


def test_rank_errors_name_the_file(split, vreid_cli):
    root, tmp, _ds, _ = split
    bad = tmp / "features/glamor/gallery.names.txt"
    names = bad.read_text().splitlines()
    names[2], names[3] = names[3], names[2]
    bad.write_text("".join(n + "\n" for n in names))
    with pytest.raises(FeatureFileError, match=r"gallery\.names\.txt.*line 3"):
        rank_split([tmp / "features/glamor"], root, tmp / "out")
    np.save(tmp / "features/counter/gallery.npy", np.ones((len(names), 31), np.float32))
    with pytest.raises(FeatureFileError, match=r"gallery\.npy: feature dimension 31, expected 32"):
        rank_split([tmp / "features/counter"], root, tmp / "out")
    q = np.load(tmp / "attrs/type/query.npy")
    q[1, 1] = np.inf
    np.save(tmp / "attrs/type/query.npy", q)
    proc = vreid_cli(
        "rank", tmp / "features/glamor", "--data", root, "--out", tmp / "o",
        "--attributes", tmp / "attrs",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "type/query.npy" in proc.stderr
    assert "NaN or inf" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_ground_truth_says_so(tmp_path):
    root = tmp_path / "data"
    make_split(root, with_ids=False)
    ds = load_dataset(root)
    for split_name in ("query", "gallery"):
        recs = ds[split_name]
        save_features(
            tmp_path / "f" / split_name, feats_for(recs, 8, 0, 0.5), [r.name for r in recs]
        )
    res = CliRunner().invoke(
        app, ["rank", str(tmp_path / "f"), "-d", str(root), "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert "no mAP can be computed" in res.output
    assert not (tmp_path / "o/metrics.json").exists()
    assert (tmp_path / "o/track2.txt").exists()


def test_submission_check_cli(tmp_path):
    path = tmp_path / "track2.txt"
    path.write_text("1 2 3\n3 1 1\n")
    runner = CliRunner()
    res = runner.invoke(app, ["submission", "check", str(path), "--queries", "2", "--gallery", "3"])
    assert res.exit_code != 0
    assert "line 2: index 1 appears 2 times" in str(res.exception)
    path.write_text("1 2 3\n3 1 2\n")
    res = runner.invoke(app, ["submission", "check", str(path), "--queries", "2", "--gallery", "3"])
    assert res.exit_code == 0, res.output
    assert "ok (2 lines × 3" in res.output
