"""The pipeline's CLI commands that need no training."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from vreid.workflows.cli import app

runner = CliRunner()


def test_config_show_resolves_a_preset_with_overrides():
    result = runner.invoke(app, ["config", "show", "demo", "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    tree = yaml.safe_load(result.output)
    assert tree["train"]["epochs"] == 3
    assert tree["model"]["backbone"] == "resnet18"
    assert tree["pipeline"]["synth_dir"] == "data/demo"


def test_config_list_names_the_presets():
    result = runner.invoke(app, ["config", "list"])
    assert result.exit_code == 0
    names = {line.split("\t")[0] for line in result.output.splitlines()}
    assert {"demo", "tiny", "aic20", "veri776"} <= names


def test_report_of_a_folder_without_metrics_fails_with_a_message(tmp_path: Path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0
    assert "metrics.json" in str(result.exception)
