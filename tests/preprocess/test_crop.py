"""Cropping a dataset end to end with the real torchvision detector code path.

The detector here is ``fasterrcnn_mobilenet_v3_large_320_fpn`` with randomly initialised weights
(2 classes) saved as a ``vreid train-detector`` checkpoint: its boxes are meaningless, so these
tests check only the plumbing — every image goes through the detector, the chosen box is what is
cut out, names/labels/tracks survive, resumption, atomic writes and errors. Crop quality is measured
by ``benchmarks/crop_quality.py`` with a trained detector.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vreid.core.errors import ConfigError, DatasetError, WeightsError
from vreid.data import load_dataset
from vreid.inference.crop import crop_dataset, crop_folder

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"
SRC_ROOT = Path(__file__).resolve().parents[2] / "src"


def _boxes(dst: Path) -> dict[str, list[str]]:
    with (dst / "crop_boxes.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "x1", "y1", "x2", "y2", "found", "confidence", "width", "height"]
    return {r[0]: r[1:] for r in rows[1:]}


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp" in p.name]


def _noise_folder(root: Path, count: int, size=(64, 48)) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).save(root / f"{i:02d}.png")
    (root / "notes.txt").write_text("not an image\n")
    return root


def _same_records(a, b):
    assert set(a.splits) == set(b.splits)
    for split in a.splits:
        key = lambda r: (r.name, r.vehicle_id, r.camera, r.track, r.color, r.type)  # noqa: E731
        assert [key(r) for r in a[split]] == [key(r) for r in b[split]], split


def test_crop_dataset_end_to_end(tiny_synth, random_detector, tmp_path):
    src = tiny_synth / "real"
    dst = tmp_path / "cropped"
    report = crop_dataset(
        src, dst, weights=random_detector, min_score=0.3, margin=0.05, device="cpu",
        batch_size=4, progress=False,
    )  # fmt: skip
    source = load_dataset(src)
    records = list(source)
    assert report.images == len(records) > 20
    assert report.processed == report.images
    assert report.skipped == 0
    assert report.detector == ARCH
    assert report.cropped + len(report.uncropped) == report.images
    assert report.cropped > 0  # random weights still give boxes scored ~0.5

    # DST reads back as the same dataset (names, ids, cameras, tracks, attributes)
    cropped = load_dataset(dst)
    assert cropped.format == source.format
    _same_records(source, cropped)
    for name in ("train_label.xml", "name_train.txt", "test_track_id.txt"):
        if (src / name).exists():
            assert (dst / name).read_bytes() == (src / name).read_bytes()

    boxes = _boxes(dst)
    assert len(boxes) == report.images
    uncropped = (dst / "crop_uncropped.txt").read_text().split()
    assert uncropped == report.uncropped
    for rel, (x1, y1, x2, y2, found, _conf, w, h) in boxes.items():
        x1, y1, x2, y2, w, h = map(int, (x1, y1, x2, y2, w, h))
        with Image.open(src / rel) as im:
            original = np.asarray(im.convert("RGB")).astype(np.int16)
        assert original.shape[:2] == (h, w)
        if found == "0":
            assert rel in uncropped
            assert (dst / rel).read_bytes() == (src / rel).read_bytes()
            continue
        assert 0 <= x1 < x2 <= w
        assert 0 <= y1 < y2 <= h
        with Image.open(dst / rel) as im:
            crop = np.asarray(im.convert("RGB")).astype(np.int16)
        assert crop.shape[:2] == (y2 - y1, x2 - x1)
        # JPEG re-encoding at quality 95: the pixels are those of the source region
        assert np.abs(crop - original[y1:y2, x1:x2]).mean() < 4

    # true boxes rewritten in crop coordinates
    src_rows = list(csv.reader((src / "vehicle_boxes.csv").read_text().splitlines()))
    dst_rows = list(csv.reader((dst / "vehicle_boxes.csv").read_text().splitlines()))
    assert len(src_rows) == len(dst_rows)
    folders = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
    for s, d in zip(src_rows[1:], dst_rows[1:], strict=True):
        x1, y1, x2, y2, *_ = map(int, boxes[f"{folders[s[0]]}/{s[1]}"][:4])
        expected = [
            min(max(float(s[2]) - x1, 0), x2 - x1),
            min(max(float(s[3]) - y1, 0), y2 - y1),
            min(max(float(s[4]) - x1, 0), x2 - x1),
            min(max(float(s[5]) - y1, 0), y2 - y1),
        ]
        assert [float(v) for v in d[2:]] == pytest.approx(expected, abs=1e-3)

    info = json.loads((dst / "crop_report.json").read_text())
    assert info["images"] == report.images
    assert info["detector"] == ARCH
    # the journal stays: a later run verifies finished crops against it
    assert (dst / ".crop_progress.csv").is_file()
    assert not _temporaries(dst)

    # a second run skips everything
    again = crop_dataset(
        src, dst, weights=random_detector, min_score=0.3, margin=0.05, device="cpu",
        progress=False,
    )  # fmt: skip
    assert again.processed == 0
    assert again.skipped == report.images
    assert _boxes(dst) == boxes

    # other settings into the same DST are refused
    with pytest.raises(ConfigError, match="other settings"):
        crop_dataset(src, dst, weights=random_detector, margin=0.2, device="cpu", progress=False)


def test_nothing_found_keeps_images_whole_and_lists_them(random_detector, tmp_path):
    src = _noise_folder(tmp_path / "src", 3)
    report = crop_folder(
        src, tmp_path / "dst", weights=random_detector, min_score=1.0, device="cpu", progress=False
    )
    assert report.cropped == 0
    assert report.uncropped == ["00.png", "01.png", "02.png"]
    assert (tmp_path / "dst" / "crop_uncropped.txt").read_text() == "00.png\n01.png\n02.png\n"
    for name in report.uncropped:
        assert (tmp_path / "dst" / name).read_bytes() == (src / name).read_bytes()
    assert (tmp_path / "dst" / "notes.txt").read_text() == "not an image\n"


def test_weights_retrained_into_the_same_file_do_not_resume_old_crops(random_detector, tmp_path):
    """Same path, other content: the old crops were made by another detector, so DST is refused."""
    src = _noise_folder(tmp_path / "src", 2)
    weights = tmp_path / "det.pt"
    shutil.copyfile(random_detector, weights)
    kwargs = dict(weights=weights, min_score=0.3, device="cpu", progress=False)
    crop_folder(src, tmp_path / "dst", **kwargs)
    assert crop_folder(src, tmp_path / "dst", **kwargs).skipped == 2  # same file: resumed

    state = torch.load(weights, weights_only=True)
    state["model"] = {
        k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()
    }
    torch.save(state, weights)
    with pytest.raises(ConfigError, match="other settings"):
        crop_folder(src, tmp_path / "dst", **kwargs)


def test_unreadable_image_stops_with_its_name_and_the_rerun_resumes(random_detector, tmp_path):
    src = _noise_folder(tmp_path / "src", 10)
    (src / "07.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dst = tmp_path / "dst"
    kwargs = dict(
        weights=random_detector, min_score=0.3, device="cpu", batch_size=2, progress=False
    )
    with pytest.raises(DatasetError, match=r"07\.png"):
        crop_folder(src, dst, **kwargs)
    # batches [00,01] [02,03] [04,05] finished; the batch holding 07 wrote nothing
    finished = sorted(p.name for p in dst.glob("*.png"))
    assert finished == ["00.png", "01.png", "02.png", "03.png", "04.png", "05.png"]
    journal = (dst / ".crop_progress.csv").read_text().splitlines()
    assert sorted(line.split(",")[0] for line in journal) == finished
    assert not _temporaries(dst)

    shutil.copyfile(src / "00.png", src / "07.png")  # the user fixes the file
    report = crop_folder(src, dst, **kwargs)
    assert report.skipped == 6
    assert report.processed == 4
    assert report.images == 10

    # the resumed output equals an uninterrupted run
    fresh = crop_folder(src, tmp_path / "fresh", **kwargs)
    assert fresh.processed == 10
    assert _boxes(dst) == _boxes(tmp_path / "fresh")
    for name in finished:
        assert (dst / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_killed_run_leaves_no_partial_file_and_resumes(random_detector, tmp_path):
    src = _noise_folder(tmp_path / "src", 16, size=(96, 64))
    dst = tmp_path / "dst"
    code = (
        "import sys; from vreid.inference.crop import crop_folder; "
        "crop_folder(sys.argv[1], sys.argv[2], weights=sys.argv[3], min_score=0.3, "
        "device='cpu', batch_size=1, progress=False)"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(src), str(dst), str(random_detector)], env=env
    )
    journal = dst / ".crop_progress.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done_before = len(journal.read_text().splitlines())
    assert 3 <= done_before < 16
    # every image present under its final name is complete (a temporary file of the write the
    # kill interrupted may remain: it is hidden, and the resumed run removes it)
    for path in dst.glob("[!.]*.png"):
        with Image.open(path) as im:
            im.load()
    # whether the kill hit a write is timing; a stray half-written temporary always is there
    (dst / ".05.k1ll3d.tmp.png").write_bytes(b"\x89PNG\r\n")
    report = crop_folder(
        src, dst, weights=random_detector, min_score=0.3, device="cpu", batch_size=4,
        progress=False,
    )  # fmt: skip
    assert report.skipped >= done_before
    assert report.skipped + report.processed == 16
    assert len(_boxes(dst)) == 16
    assert not _temporaries(dst)


def test_bad_inputs(tiny_synth, random_detector, tmp_path):
    src = tiny_synth / "real"
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty_hub"))
    try:
        with pytest.raises(WeightsError, match="vreid train-detector"):
            crop_dataset(src, tmp_path / "a", detector=ARCH, device="cpu", progress=False)
    finally:
        torch.hub.set_dir(hub)
    assert not (tmp_path / "a").exists()  # nothing written before the weights are known
    with pytest.raises(ConfigError, match="known detectors"):
        crop_dataset(src, tmp_path / "b", detector="nope", weights=random_detector, progress=False)
    with pytest.raises(ConfigError, match="overlaps"):
        crop_folder(tiny_synth, tiny_synth / "real" / "out", weights=random_detector)
    with pytest.raises(DatasetError, match="not found"):
        crop_dataset(tmp_path / "missing", tmp_path / "c", weights=random_detector)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a crop output"):
        crop_folder(
            _noise_folder(tmp_path / "f", 1), tmp_path / "busy", weights=random_detector,
            device="cpu", progress=False,
        )  # fmt: skip


def test_cli_crop_folder_and_error_line(random_detector, tmp_path, vreid_cli):
    from typer.testing import CliRunner

    from vreid.workflows.cli import app

    src = _noise_folder(tmp_path / "src", 2)
    result = CliRunner().invoke(
        app,
        ["crop", str(src), str(tmp_path / "dst"), "--folder", "--weights", str(random_detector),
         "--device", "cpu", "--min-score", "0.3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "of 2 images cropped" in result.output
    assert len(_boxes(tmp_path / "dst")) == 2

    proc = vreid_cli("crop", src, tmp_path / "x", "--detector", "yolo")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown detector 'yolo'" in lines[0]


def test_journal_with_a_torn_last_line(tmp_path):
    from vreid.inference.crop import _read_journal

    journal = tmp_path / ".crop_progress.csv"
    journal.write_text(
        "a.jpg,1,2,30,40,1,0.9000,64,48,1234,00ff\nb.jpg,0,0,64,48,0,0.0000,64,48,99,ab"
    )
    entries = _read_journal(journal)
    assert list(entries) == ["a.jpg"]
    box, size, digest = entries["a.jpg"]
    assert box.x2 == 30
    assert box.height == 48
    assert (size, digest) == (1234, "00ff")
