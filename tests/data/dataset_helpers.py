"""Helpers for the dataset tests: tiny real image files written with Pillow."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

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


GB2312_HEADER = '<?xml version="1.0" encoding="gb2312"?>'


def aic_names(n: int) -> list[str]:
    """AIC-style file names 000001.jpg … for ``n`` images."""
    return [f"{i:06d}.jpg" for i in range(1, n + 1)]


def make_aic20(root: Path, *, crlf: bool = False) -> Path:
    """A tiny AIC20 CityFlow-ReID tree: 4 train, 2 query, 3 gallery images."""
    write_images(root / "image_train", aic_names(4))
    write_images(root / "image_query", aic_names(2))
    write_images(root / "image_test", aic_names(3))
    nl = "\r\n" if crlf else "\n"
    for stem, n in (("train", 4), ("query", 2), ("test", 3)):
        (root / f"name_{stem}.txt").write_bytes(nl.join(aic_names(n)).encode() + nl.encode())
    label = nl.join(
        [
            GB2312_HEADER,
            '<TrainingImages Version="1.0">',
            '<Items number="4">',
            '<Item imageName="000001.jpg" vehicleID="0269" cameraID="c026" />',
            '<Item imageName="000002.jpg" vehicleID="0269" cameraID="c027" />',
            '<Item imageName="000003.jpg" vehicleID="0001" cameraID="c001" />',
            '<Item imageName="000004.jpg" vehicleID="0001" cameraID="c036" />',
            "</Items>",
            "</TrainingImages>",
            "",
        ]
    )
    (root / "train_label.xml").write_bytes(label.encode("ascii"))
    # Tracks: 1-based indices with a trailing space; the same tracks as names.
    (root / "train_track_id.txt").write_text("1 2 \n4 3 \n")
    (root / "train_track.txt").write_text("000001.jpg 000002.jpg \n000004.jpg 000003.jpg \n")
    (root / "test_track_id.txt").write_text("3 \n1 2 \n")
    (root / "test_track.txt").write_text("000003.jpg \n000001.jpg 000002.jpg \n")
    return root
