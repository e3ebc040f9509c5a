"""Atomic artefact writing: the file appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from vreid.core.artefacts import atomic_path, write_json_atomic


def test_atomic_file_gets_the_permissions_a_plain_open_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    artefact = write_json_atomic(tmp_path / "metrics.json", {"mAP": 0.5})
    assert stat.S_IMODE(artefact.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_failed_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_json_atomic(tmp_path / "metrics.json", {"mAP": 0.5})

    def interrupted_write() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted_write()
    assert target.read_text() == '{\n  "mAP": 0.5\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_unreadable_arrays_and_json_name_the_file(tmp_path: Path):
    from vreid.core.artefacts import read_json, read_npy
    from vreid.core.errors import VreidError
    from vreid.inference.features import load_features

    empty = tmp_path / "query.npy"
    empty.write_bytes(b"")
    (tmp_path / "query.names.txt").write_text("")
    with pytest.raises(VreidError, match=r"query\.npy: not a readable \.npy array \(empty file\)"):
        read_npy(empty)
    with pytest.raises(VreidError, match=r"query\.npy: not a readable"):
        load_features(tmp_path / "query")
    truncated = tmp_path / "t.npy"
    np.save(truncated, np.ones((100, 8), dtype=np.float32))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(VreidError, match=r"t\.npy: not a readable"):
        read_npy(truncated)
    bad = tmp_path / "metrics.json"
    bad.write_text("[1, 2]")
    with pytest.raises(VreidError, match=r"metrics\.json: expected a JSON dict"):
        read_json(bad)
    bad.write_text("{")
    with pytest.raises(VreidError, match=r"metrics\.json: not valid JSON"):
        read_json(bad)


def test_the_machine_saying_no_is_one_line(tmp_path: Path, vreid_cli):
    """An OSError (here: an output path under a file) is one line naming the path, exit 2."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    proc = vreid_cli("synth", str(blocker / "out"), "--preset", "tiny")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "afile" in lines[0]
    assert "Not a directory" in lines[0]


def test_synth_overwrite_replaces_only_synth_output(tmp_path: Path, vreid_cli):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    proc = vreid_cli("synth", str(thesis), "--preset", "tiny", "--overwrite")
    assert proc.returncode == 2
    assert "only replaces a folder made by `vreid synth`" in proc.stderr
    assert (thesis / "chapter1.tex").read_text() == "years of work"


def test_run_lock_refuses_a_second_run_and_survives_a_killed_holder(tmp_path: Path):
    """Two runs on one folder: the second is refused naming the holder's pid; a SIGKILLed holder
    leaves no lock behind (the kernel drops it), and a killed writer's temporary is cleaned."""
    import signal
    import subprocess
    import sys

    from vreid.core.artefacts import run_lock
    from vreid.core.errors import VreidError

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from vreid.core.artefacts import run_lock\n"
            f"with run_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(VreidError, match=rf"is in use by pid {holder.pid} "),
            run_lock(tmp_path),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    orphan = tmp_path / "checkpoints" / ".last.ab12cd34.tmp.pt"
    orphan.parent.mkdir()
    orphan.write_bytes(b"half a checkpoint")
    keep = tmp_path / "checkpoints" / "last.pt"
    keep.write_bytes(b"whole")
    with run_lock(tmp_path):
        assert not orphan.exists()
        assert keep.read_bytes() == b"whole"
