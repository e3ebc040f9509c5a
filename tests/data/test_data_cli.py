"""`vreid data info` and `vreid data check` end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dataset_helpers import JPEG, make_aic20
from typer.testing import CliRunner

import vreid
from vreid.workflows.cli import app

runner = CliRunner()


def _row(output: str, split: str) -> list[str]:
    line = next(line for line in output.splitlines() if f" {split} " in line)
    return [cell.strip() for cell in line.strip("│┃ ").split("│")]


def test_data_info_prints_counts_per_split(tmp_path: Path):
    make_aic20(tmp_path)
    result = runner.invoke(app, ["data", "info", str(tmp_path)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "(aic20)" in result.output
    # split, ids, images, cameras, tracks, colour, type
    assert _row(result.output, "train") == ["train", "2", "4", "4", "2", "0%", "0%"]
    assert _row(result.output, "query") == ["query", "-", "2", "-", "-", "0%", "0%"]
    assert _row(result.output, "gallery") == ["gallery", "-", "3", "-", "2", "0%", "0%"]


def test_data_check_finds_corrupt_images(tmp_path: Path):
    make_aic20(tmp_path)
    ok = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "all 9 images are readable" in ok.output
    (tmp_path / "image_test" / "000002.jpg").write_bytes(b"not an image")
    (tmp_path / "image_train" / "000004.jpg").write_bytes(JPEG[: len(JPEG) - 40])  # truncated
    bad = runner.invoke(app, ["data", "check", str(tmp_path), "--workers", "2"])
    assert bad.exit_code == 1
    assert "image_test/000002.jpg" in bad.output
    assert "image_train/000004.jpg" in bad.output
    assert "000001.jpg" not in bad.output
    assert "2 of 9 images are corrupt" in bad.output


def _vreid(*args: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(vreid.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "vreid", *args], capture_output=True, text=True, env=env, check=False
    )


def test_bad_dataset_is_one_line_error_with_status_2(tmp_path: Path):
    make_aic20(tmp_path)
    (tmp_path / "test_track_id.txt").write_text("3 \n1 2 9 \n")
    result = _vreid("data", "info", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "test_track_id.txt, line 2: track index 9 out of range" in result.stderr
    unknown = _vreid("data", "check", str(tmp_path), "--format", "market")
    assert unknown.returncode == 2
    # refused at the config boundary
    assert "data.format" in unknown.stderr
    assert "'market'" in unknown.stderr


def test_data_info_folder_layout_with_csv_option(tmp_path: Path):
    from dataset_helpers import write_images

    write_images(tmp_path / "data" / "train" / "5", ["a.jpg", "b.jpg"])
    write_images(tmp_path / "data" / "train" / "6", ["c.jpg"])
    (tmp_path / "my.csv").write_text("split,image,camera,color\ntrain,5/a.jpg,1,red\n")
    args = ["data", "info", str(tmp_path / "data"), "--csv", str(tmp_path / "my.csv")]
    result = runner.invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "(folder)" in result.output
    assert _row(result.output, "train") == ["train", "2", "3", "1", "-", "33%", "0%"]
