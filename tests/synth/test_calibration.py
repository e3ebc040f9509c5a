"""Colour-histogram features, the local mAP, the calibration report and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vreid.core.errors import DatasetError
from vreid.workflows.calibration import calibration_report, colour_histogram_features
from vreid.workflows.cli import app


def test_colour_histograms_separate_colours(tmp_path: Path) -> None:
    paths = []
    for name, rgb in [("red1", (200, 20, 20)), ("red2", (215, 25, 20)), ("blue", (20, 30, 200))]:
        p = tmp_path / f"{name}.png"
        Image.new("RGB", (40, 30), rgb).save(p)
        paths.append(p)
    f = colour_histogram_features(paths)
    assert f.shape == (3, 128)
    assert f.dtype == np.float32
    np.testing.assert_allclose((f**2).sum(1), 1.0, rtol=1e-5)  # sqrt of an L1-normalised histogram
    assert np.linalg.norm(f[0] - f[1]) < 1e-6  # same bin
    assert np.linalg.norm(f[0] - f[2]) == pytest.approx(np.sqrt(2), rel=1e-5)  # disjoint bins


def test_colour_histogram_of_a_box(tmp_path: Path) -> None:
    two = Image.new("RGB", (40, 20), (20, 30, 200))
    two.paste((200, 20, 20), (0, 0, 20, 20))  # left half red, right half blue
    two.save(tmp_path / "two.png")
    Image.new("RGB", (8, 8), (200, 20, 20)).save(tmp_path / "red.png")
    boxes = np.array([[0, 0, 15, 20], [0, 0, 8, 8]], dtype=float)
    f = colour_histogram_features([tmp_path / "two.png", tmp_path / "red.png"], boxes=boxes)
    whole = colour_histogram_features([tmp_path / "two.png"])
    assert np.linalg.norm(f[0] - f[1]) < 1e-6  # the box holds only the red half
    assert np.count_nonzero(whole[0]) > np.count_nonzero(f[0]) == 1  # whole: red and blue


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        colour_histogram_features([bad])


def test_report_and_contact_sheet(tiny_synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_synth, out)
    numbers = calibration_report(out)
    assert 0 < numbers["colour_hist_mAP"] <= 1
    assert numbers["queries"] > 0
    assert 0 < numbers["colour_hist_box_mAP"] <= 1
    assert json.loads((out / "calibration.json").read_text())["queries"] == numbers["queries"]
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 200
    assert sheet.height > 200


def test_cli_synth(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["synth", str(out), "--preset", "tiny", "--ids", "5", "--cameras", "3", "--seed", "4"]
    result = runner.invoke(app, [*args, "--size", "64x48", "--report"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "synth.json").read_text())
    assert info["ids"] == 5
    assert info["cameras"] == 3
    assert info["size"] == [64, 48]
    assert (out / "calibration.json").is_file()
    assert (out / "contact_sheet.png").is_file()
    bad = runner.invoke(app, ["synth", str(tmp_path / "b"), "--size", "64by48"])
    assert bad.exit_code != 0
    assert not (tmp_path / "b").exists()
