"""A `vreid synth` output folder reads as its real/ dataset; messages never send users to docs that
are not installed."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from vreid.core.config import load_config
from vreid.data import load_dataset, load_from_config

SRC = Path(__file__).resolve().parents[2] / "src" / "vreid"


def test_synth_output_reads_as_its_real_dataset(tiny_synth, caplog):
    real = load_dataset(tiny_synth / "real")
    with caplog.at_level(logging.WARNING, logger="vreid.data"):
        via_out = load_from_config(load_config(None, [f"data.root={tiny_synth}"]).data)
    assert via_out.root == real.root
    assert via_out.format == real.format == "aic20"
    assert {s: [r.name for r in recs] for s, recs in via_out.splits.items()} == {
        s: [r.name for r in recs] for s, recs in real.splits.items()
    }
    said = [r.getMessage() for r in caplog.records if r.name == "vreid.data"]
    assert len(said) == 1
    assert "`vreid synth` output folder" in said[0]
    assert str(tiny_synth / "real") in said[0]


def test_data_info_on_synth_output(tiny_synth, vreid_cli):
    proc = vreid_cli("data", "info", tiny_synth)
    assert proc.returncode == 0, proc.stderr
    assert "unknown dataset format" not in proc.stderr
    assert f"reading its real-camera dataset {tiny_synth / 'real'}" in proc.stderr
    n_query = len(list((tiny_synth / "real" / "image_query").iterdir()))
    query_row = next(line for line in proc.stdout.splitlines() if " query " in line)
    assert f" {n_query} " in query_row


def _non_docstring_strings(tree: ast.AST) -> list[tuple[int, str]]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_message_points_to_docs_that_are_not_installed():
    """docs/readme/ is not part of the installed package: no error, warning or help string in
    src/ may send a user there (docstrings are for developers reading the source)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for line, text in _non_docstring_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if "docs/readme" in text:
                offenders.append(f"{path.relative_to(SRC)}:{line}")
    for path in sorted(SRC.rglob("*.yaml")):
        if "docs/readme" in path.read_text(encoding="utf-8"):
            offenders.append(str(path.relative_to(SRC)))
    assert offenders == []
    assert len(list(SRC.rglob("*.py"))) > 50  # the walk did see the sources
