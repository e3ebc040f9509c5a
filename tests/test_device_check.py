"""benchmarks/device_check.py --smoke: every check runs at toy size on the CPU and reports.

Runs the real script in a child process (no mocks): each check must be ``ok``, or ``skipped``
only where it needs CUDA or several GPUs, with the reason in its note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {
    "rerank_equal",
    "amp_train",
    "checkpoint",
    "torchrun",
    "train_throughput",
    "extract_rerank_speed",
    "short_training",
}


@pytest.mark.slow  # ~50 s on the shared 2-core machine
def test_device_check_smoke_runs_every_check(tmp_path: Path) -> None:
    out = tmp_path / "device_check.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "device_check.py"),
            "--smoke",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    rows = {r["name"]: r for r in report["checks"]}
    assert set(rows) == CHECKS
    for name, row in rows.items():
        assert row["status"] in ("ok", "skipped"), (name, row)
        assert row["seconds"] >= 0
        if row["status"] == "skipped":
            assert any(w in row["note"] for w in ("CUDA", "GPU", "torchrun")), (name, row)
    # real numbers, not placeholders
    assert rows["rerank_equal"]["numbers"]["cpu_vs_reference_same_top"] == 1.0
    assert rows["rerank_equal"]["numbers"]["cpu_vs_reference_max_abs_diff"] < 1e-4
    assert rows["checkpoint"]["numbers"]["max_abs_diff_vs_uninterrupted"] == 0.0
    assert rows["amp_train"]["numbers"]["bf16_loss"] > 0
    assert "fp16" in rows["amp_train"]["note"]  # CUDA-only part, said so
    assert rows["train_throughput"]["numbers"]["glamor_fp32"] > 0
    assert rows["train_throughput"]["numbers"]["torchvision_resnet50_fp32"] > 0
    assert rows["extract_rerank_speed"]["numbers"]["extract_bf16_images_per_s"] > 0
    assert 0.0 <= rows["short_training"]["numbers"]["mAP"] <= 1.0
    assert "device check" in proc.stdout
    assert "total" in proc.stdout
