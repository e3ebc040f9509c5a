"""Helpers for the dataset tests: tiny real image files written with Pillow."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import pytest
from PIL import Image


def _jpeg_bytes(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def write_images(folder: Path, names: Iterable[str]) -> list[Path]:
    """Write a tiny valid JPEG at ``folder/name`` for every name; return the paths."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(JPEG)
        paths.append(path)
    return paths


@pytest.fixture
def images():
    """The :func:`write_images` helper as a fixture."""
    return write_images
