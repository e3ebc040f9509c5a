"""Atomic artefact writing: the file appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import stat

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
