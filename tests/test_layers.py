"""The layers hold: import-linter's contract (pyproject.toml) passes, and no library module hides
an import of the package inside a function (each import shows at the top of its module)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("core", "data", "synth", "models", "inference", "retrieval", "engine")


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_library_imports_sit_at_module_level():
    nested = []
    for package in LIBRARY:
        for path in sorted((REPO / "src" / "vreid" / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vreid"):
                        nested.append(f"{path.relative_to(REPO)}:{node.lineno} {node.module}")
    assert not nested, "function-level imports in the library:\n" + "\n".join(nested)
