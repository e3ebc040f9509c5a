"""`vreid search`: query images against a plain folder, with the ranking recomputed independently."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vreid.core.config import load_config
from vreid.core.errors import DatasetError
from vreid.data import load_dataset
from vreid.inference.extract import Extractor
from vreid.retrieval.distance import ensemble, pairwise_distances
from vreid.retrieval.reranking import original_distance, rerank
from vreid.workflows.cli import app
from vreid.workflows.report.ranklist import CAPTION_PX, GREEN, RED
from vreid.workflows.search import crop_warning, search_images


@pytest.fixture(scope="module")
def checkpoints(tiny_synth, tmp_path_factory, small_overrides) -> list[Path]:
    from vreid.engine.reid import train

    out = []
    for seed in (0, 1):
        cfg = load_config(
            None, [*small_overrides, f"data.root={tiny_synth / 'real'}", f"train.seed={seed}"]
        )
        run = train(cfg, tmp_path_factory.mktemp("search") / f"m{seed}", progress=False)
        out.append(run.last_checkpoint)
    return out


@pytest.fixture
def folders(tiny_synth, tmp_path) -> tuple[Path, Path]:
    """The query images and the gallery images in two sub-folders (a nested folder is searched)."""
    query = tmp_path / "query"
    query.mkdir()
    for p in sorted((tiny_synth / "real" / "image_query").iterdir()):
        shutil.copy(p, query / p.name)
    gallery = tmp_path / "gallery"
    for i, p in enumerate(sorted((tiny_synth / "real" / "image_test").iterdir())):
        sub = gallery / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, sub / p.name)
    return query, gallery


def _features(ckpt, paths):
    return Extractor(ckpt, device="cpu")(paths).numpy()


def _config(*overrides: str):
    return load_config(None, ["runtime.device=cpu", *overrides])


def test_plain_distances_and_ranking_files(checkpoints, folders, tmp_path):
    query, gallery = folders
    cfg = _config("retrieval.top=7", "retrieval.rerank=false")
    result = search_images(
        checkpoints[:1], query, gallery, tmp_path / "out", config=cfg, progress=False
    )
    q_paths = sorted(query.iterdir())
    g_paths = sorted(gallery.rglob("*.jpg"), key=lambda p: p.relative_to(gallery).as_posix())
    assert result.queries == q_paths
    assert result.gallery == g_paths
    # without re-ranking: the squared Euclidean distance over each query's largest (same order)
    q_feats, g_feats = _features(checkpoints[0], q_paths), _features(checkpoints[0], g_paths)
    expected = pairwise_distances(q_feats, g_feats, squared=True)
    expected /= np.maximum(
        expected.max(1), pairwise_distances(q_feats, q_feats, squared=True).max(1)
    )[:, None]
    np.testing.assert_allclose(result.distances, expected, atol=1e-5)
    assert np.array_equal(
        result.ranking, np.argsort(result.distances, axis=1, kind="stable")[:, :7]
    )

    out = result.out_dir
    assert np.array_equal(np.load(out / "distances.npy"), result.distances)
    with (out / "ranking.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(q_paths) >= 3
    assert len(rows) == len(q_paths) * 7
    names = (out / "gallery.txt").read_text().split()
    first = [r for r in rows if r["query"] == q_paths[0].name]
    assert [r["gallery"] for r in first] == [names[i] for i in result.ranking[0]]
    assert [int(r["rank"]) for r in first] == list(range(1, 8))
    assert all(n.startswith(("a/", "b/")) for n in names)
    assert (out / "ranklists.png").read_bytes()[:4] == b"\x89PNG"
    settings = json.loads((out / "search.json").read_text())
    assert settings["queries"] == len(q_paths)
    assert settings["steps"]["rerank"] is False
    assert settings["row"] == "ensemble"
    assert settings["top"] == 7


def test_two_models_are_reranked_then_averaged(checkpoints, folders, tmp_path):
    query, gallery = folders
    cfg = _config("retrieval.k1=6", "retrieval.k2=3", "retrieval.ensemble_weights=[2,1]")
    result = search_images(
        checkpoints, query, gallery, tmp_path / "out", config=cfg, progress=False
    )
    q_paths, g_paths = result.queries, result.gallery
    expected = ensemble(
        [
            rerank(_features(c, q_paths), _features(c, g_paths), k1=6, k2=3, lambda_value=0.3)
            for c in checkpoints
        ],
        [2, 1],
    )
    np.testing.assert_allclose(result.distances, expected, atol=1e-5)
    settings = json.loads((result.out_dir / "search.json").read_text())
    assert settings["row"] == "ensemble+rerank"
    assert settings["retrieval"]["k1"] == 6


def test_cli_flags_are_config_shorthands(checkpoints, folders, tmp_path):
    """-c takes a preset name (tiny: k1=6, k2=3); --no-rerank and --top set retrieval keys."""
    query, gallery = folders
    out = tmp_path / "cli"
    args = ["search", str(checkpoints[0]), "-q", str(query), "-g", str(gallery), "-o", str(out)]
    res = CliRunner().invoke(app, [*args, "-c", "tiny", "--no-rerank", "--top", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    settings = json.loads((out / "search.json").read_text())
    assert settings["top"] == 3
    assert settings["retrieval"]["rerank"] is False
    assert settings["retrieval"]["k1"] == 6
    assert settings["device"] == "cpu"
    with (out / "ranking.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3 * len(list(query.iterdir()))


def test_a_single_query_file_and_runs_are_never_overwritten(checkpoints, folders, tmp_path):
    query, gallery = folders
    one = sorted(query.iterdir())[2]
    cfg = _config("retrieval.rerank=false")
    first = search_images(
        checkpoints[:1], one, gallery, tmp_path / "out", config=cfg, progress=False
    )
    second = search_images(
        checkpoints[:1], one, gallery, tmp_path / "out", config=cfg, progress=False
    )
    assert first.queries == [one]
    assert first.distances.shape == (1, len(first.gallery))
    assert second.out_dir == tmp_path / "out-2"
    assert np.array_equal(first.distances, second.distances)


def test_crop_first_searches_the_crops(checkpoints, folders, random_detector, tmp_path):
    query, gallery = folders
    cfg = _config("retrieval.rerank=false", "crop.enabled=true")
    cfg.crop.weights = random_detector
    result = search_images(
        checkpoints[:1], query, gallery, tmp_path / "out", config=cfg, progress=False
    )
    crops = result.out_dir / "crops"
    q_crops = [crops / "query" / p.name for p in result.queries]
    assert all(p.is_file() for p in q_crops)
    g_crops = [crops / "gallery" / p.relative_to(gallery) for p in result.gallery]
    expected = original_distance(
        _features(checkpoints[0], q_crops), _features(checkpoints[0], g_crops)
    )
    np.testing.assert_allclose(result.distances, expected, atol=1e-5)


def test_bad_inputs_name_the_path(checkpoints, folders, tmp_path, vreid_cli):
    query, _ = folders
    cfg = _config()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty: no images"):
        search_images(checkpoints[:1], query, empty, tmp_path / "o", config=cfg, progress=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(DatasetError, match=r"notes.txt: the query is not an image"):
        search_images(checkpoints[:1], notes, query, tmp_path / "o", config=cfg, progress=False)
    proc = vreid_cli("search", checkpoints[0], "--query", tmp_path / "nope", "--gallery", query)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nope: the query is neither an image file nor a folder" in lines[0]


def test_a_failed_search_leaves_nothing_behind(checkpoints, folders, tmp_path, vreid_cli):
    """--crop without detector weights (none cached, no network) fails with one line that names
    search's own flag, and leaves no run folder, so the next run is not moved to DIR-2."""
    query, gallery = folders
    out = tmp_path / "run"
    proc = vreid_cli(
        "search", checkpoints[0], "-q", query, "-g", gallery, "-o", out, "--crop",
        "--set", "crop.detector=fasterrcnn_mobilenet_v3_large_320_fpn",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--detector-weights PATH" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not (tmp_path / "run-2").exists()


@pytest.mark.slow
def test_crop_that_finds_nothing_is_counted_and_warned(
    checkpoints, folders, random_detector, tmp_path, vreid_cli
):
    """--min-score 1.0: the random detector's boxes (scores about 0.5) are all ignored, every image
    is kept whole; search says so (counts and a warning). crop's options map onto crop.*."""
    query, gallery = folders
    n_q, n_g = len(list(query.iterdir())), len(list(gallery.rglob("*.jpg")))
    out = tmp_path / "none"
    common = ("--crop", "--detector-weights", random_detector, "--no-rerank", "--quiet")
    proc = vreid_cli(
        "search", checkpoints[0], "-q", query, "-g", gallery, "-o", out, *common,
        "--min-score", "1.0", "--margin", "0.1", "--crop-batch-size", "3",
        "--set", "runtime.device=cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        f"cropped: query 0 of {n_q} (kept whole {n_q}); gallery 0 of {n_g} (kept whole {n_g})"
        in (proc.stdout)
    )
    assert (
        f"warning: the detector found no vehicle in {n_q} of {n_q} query and {n_g} of {n_g} "
        "gallery images, which were searched whole"
    ) in " ".join(proc.stderr.split())
    settings = json.loads((out / "search.json").read_text())
    assert settings["crop"]["min_score"] == 1.0
    assert settings["crop"]["margin"] == 0.1
    assert settings["crop"]["batch_size"] == 3
    assert settings["crop_counts"]["gallery"] == {"images": n_g, "cropped": 0, "whole": n_g}

    # a low threshold crops every image: counts, no warning
    cfg = _config("retrieval.rerank=false", "crop.enabled=true", "crop.min_score=0.01")
    cfg.crop.weights = random_detector
    result = search_images(
        checkpoints[:1], query, gallery, tmp_path / "all", config=cfg, progress=False
    )
    assert result.crops == {
        "query": {"images": n_q, "cropped": n_q, "whole": 0},
        "gallery": {"images": n_g, "cropped": n_g, "whole": 0},
    }
    assert crop_warning(result.crops) is None


def test_crop_warning_needs_more_than_half_kept_whole():
    assert crop_warning(None) is None
    assert crop_warning({"query": {"images": 4, "cropped": 2, "whole": 2}}) is None
    text = crop_warning(
        {
            "query": {"images": 4, "cropped": 2, "whole": 2},
            "gallery": {"images": 10, "cropped": 4, "whole": 6},
        }
    )
    assert text is not None
    assert text.startswith("the detector found no vehicle in 6 of 10 gallery images")


def test_search_says_what_each_model_was_trained_on(checkpoints, folders, tiny_synth, tmp_path):
    query, gallery = folders
    real = load_dataset(tiny_synth / "real")
    n_ids = len({r.vehicle_id for r in real["train"]})
    out = tmp_path / "cli"
    args = ["search", *map(str, checkpoints), "-q", str(query), "-g", str(gallery), "-o", str(out)]
    res = CliRunner().invoke(app, [*args, "--no-rerank", "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for ckpt in checkpoints:
        run = ckpt.parent.parent.name  # m0, m1
        assert (
            f"model {run} (glamor): trained on {real.root} (aic20): {n_ids} identities, "
            f"{len(real['train'])} images, input 32×64 (h×w), 1 epoch"
        ) in res.output
    settings = json.loads((out / "search.json").read_text())
    assert [m["label"] for m in settings["models"]] == ["m0 (glamor)", "m1 (glamor)"]
    assert settings["models"][0]["trained_on"]["identities"] == n_ids


def test_search_takes_the_small_inference_file(checkpoints, folders, tmp_path):
    query, gallery = folders
    cfg = _config("retrieval.rerank=false")
    full = search_images(
        checkpoints[:1], query, gallery, tmp_path / "a", config=cfg, progress=False
    )
    small = checkpoints[0].with_name("model.pt")
    assert small.stat().st_size < 0.4 * checkpoints[0].stat().st_size
    got = search_images([small], query, gallery, tmp_path / "b", config=cfg, progress=False)
    assert np.array_equal(full.distances, got.distances)


def test_rank_list_captions_and_true_match_frames(checkpoints, tiny_synth, tmp_path):
    """Images named in the VeRi form (the synthetic simulation set's names: VVVVV_cCCC_N.jpg) carry
    their vehicle id and camera: frames are green for the same vehicle, red otherwise, and each
    caption has two lines (rank, camera, distance; the name)."""
    sim = sorted((tiny_synth / "simulation" / "image_train").iterdir())
    by_vehicle: dict[int, list[Path]] = {}
    for p in sim:
        by_vehicle.setdefault(int(p.name.split("_")[0]), []).append(p)
    vehicles = [v for v, ps in sorted(by_vehicle.items()) if len(ps) >= 3][:4]
    query, gallery = tmp_path / "q", tmp_path / "g"
    query.mkdir()
    gallery.mkdir()
    for v in vehicles:
        first, *rest = by_vehicle[v]
        shutil.copy(first, query / first.name)
        for p in rest[:2]:
            shutil.copy(p, gallery / p.name)
    cfg = _config("retrieval.rerank=false", "retrieval.top=4")
    result = search_images(
        checkpoints[:1], query, gallery, tmp_path / "out", config=cfg, progress=False
    )
    sheet = np.asarray(Image.open(result.out_dir / "ranklists.png").convert("RGB"))
    tw, th, border, pad, gap, left = 128, 96, 4, 4, 18, 70
    line = CAPTION_PX + 4
    strip = 2 * line + 2
    cell_w, cell_h = tw + 2 * border + pad, th + 2 * border + strip + pad
    assert sheet.shape[0] == len(vehicles) * cell_h + pad
    q_ids = [int(p.name.split("_")[0]) for p in result.queries]
    g_ids = [int(p.name.split("_")[0]) for p in result.gallery]
    for row, qi in enumerate(range(len(result.queries))):
        y = pad + row * cell_h
        for rank, gi in enumerate(result.ranking[qi].tolist()):
            x = left + cell_w * (rank + 1) + gap
            want = GREEN if g_ids[gi] == q_ids[qi] else RED
            assert tuple(sheet[y + 1, x + 1]) == want
            # the caption strip: two text lines (dark pixel rows in two runs)
            box = sheet[y + th + 2 * border : y + th + 2 * border + strip, x : x + tw]
            dark = (box.min(axis=2) < 100).any(axis=1)
            runs = np.flatnonzero(np.diff(dark.astype(int)) == 1).size + int(dark[0])
            assert runs == 2
