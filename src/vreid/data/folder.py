"""Generic folder layout, for bringing your own data without writing a loader.

Layout: ``root/<split>/<vehicle_id>/<image>`` with split ``train``, ``query`` or ``gallery`` and
an integer vehicle id folder; images directly in ``root/<split>/`` have an unknown vehicle id.
Optional CSV (``root/labels.csv`` or ``csv=``) with header ``split,image`` plus any of
``camera,track,color,type``; ``image`` is the path relative to the split folder
(``0007/a.jpg``); colour/type are AIC ids or names (``red``, ``suv``); empty cells are unknown.
"""

from __future__ import annotations

import csv as csv_format
import os
from dataclasses import replace
from pathlib import Path

from vreid.core.errors import DatasetError
from vreid.data.attributes import AIC_COLORS, AIC_TYPES
from vreid.data.files import check_name, is_image_name, read_text
from vreid.data.files import present as file_present
from vreid.data.records import SPLITS, ImageRecord, ReidDataset

DEFAULT_CSV = "labels.csv"
CSV_COLUMNS = ("split", "image", "camera", "track", "color", "type")


def _is_image(entry: os.DirEntry[str]) -> bool:
    return entry.is_file() and is_image_name(entry.name)


def _scan_split(root: Path, split: str) -> list[ImageRecord]:
    folder = root / split
    records = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    loose = [e.name for e in entries if _is_image(e)]
    records += [ImageRecord(folder / n, n, split) for n in loose]
    vehicle_dirs = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith("."):  # .ipynb_checkpoints and the like
            continue
        try:
            vehicle_dirs.append((int(entry.name), entry))
        except ValueError:
            raise DatasetError(
                f"{folder / entry.name}: folder name is not an integer vehicle id; the folder "
                "layout is root/<split>/<vehicle_id>/<image>"
            ) from None
    for vid, entry in sorted(vehicle_dirs, key=lambda pair: (pair[0], pair[1].name)):
        with os.scandir(entry.path) as it:
            names = sorted(e.name for e in it if _is_image(e))
        records += [
            ImageRecord(folder / entry.name / n, f"{entry.name}/{n}", split, vehicle_id=vid)
            for n in names
        ]
    if not records:
        raise DatasetError(
            f"{folder}: the {split} split is empty (no images in {folder}/<vehicle_id>/)"
        )
    return records


def _attr_id(value: str, table: tuple[str, ...], what: str, where: str) -> int:
    lowered = [t.lower() for t in table]
    if value.strip().lower() in lowered:
        return lowered.index(value.strip().lower())
    try:
        k = int(value)
    except ValueError:
        raise DatasetError(
            f"{where}: {what} {value!r} is neither an AIC id nor one of {', '.join(table)}"
        ) from None
    if not 0 <= k < len(table):
        raise DatasetError(f"{where}: {what} id {k} outside 0..{len(table) - 1}")
    return k


def _int_cell(value: str, what: str, where: str) -> int:
    try:
        k = int(value)
    except ValueError:
        raise DatasetError(f"{where}: {what} {value!r} is not an integer") from None
    if k < 0:
        raise DatasetError(f"{where}: {what} must be >= 0, got {k}")
    return k


def _apply_csv(path: Path, splits: dict[str, list[ImageRecord]]) -> None:
    rows = list(csv_format.reader(read_text(path).splitlines()))
    if not rows:
        raise DatasetError(
            f"{path}, line 1: empty CSV; expected a header such as split,image,camera"
        )
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown or "split" not in header or "image" not in header:
        raise DatasetError(
            f"{path}, line 1: header {','.join(header)!r} must have columns split,image and "
            f"optionally camera,track,color,type (unknown: {', '.join(unknown) or 'none'})"
        )
    index = {split: {r.name: i for i, r in enumerate(recs)} for split, recs in splits.items()}
    seen: dict[tuple[str, str], int] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path}, line {line_no}"
        if len(row) != len(header):
            raise DatasetError(f"{where}: {len(row)} cells, but the header has {len(header)}")
        cells = {h: c.strip() for h, c in zip(header, row, strict=True)}
        split, name = cells["split"], check_name(cells["image"], where)
        if split not in index:
            raise DatasetError(
                f"{where}: split {split!r} is not one of the splits present: {', '.join(index)}"
            )
        if name not in index[split]:
            raise DatasetError(f"{where}: image {name!r} is not in {path.parent / split}")
        if (split, name) in seen:
            raise DatasetError(
                f"{where}: duplicate row for {split}/{name} (first on line {seen[split, name]})"
            )
        seen[split, name] = line_no
        updates: dict[str, int] = {}
        if cells.get("camera"):
            updates["camera"] = _int_cell(cells["camera"], "camera", where)
        if cells.get("track"):
            updates["track"] = _int_cell(cells["track"], "track", where)
        if cells.get("color"):
            updates["color"] = _attr_id(cells["color"], AIC_COLORS, "color", where)
        if cells.get("type"):
            updates["type"] = _attr_id(cells["type"], AIC_TYPES, "type", where)
        i = index[split][name]
        splits[split][i] = replace(splits[split][i], **updates)


def read_folder(
    root: str | os.PathLike[str], *, csv: str | os.PathLike[str] | None = None
) -> ReidDataset:
    """Read ``root/<split>/<vehicle_id>/<image>`` plus an optional per-image CSV (see module doc)."""
    root = Path(root).resolve()
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        raise DatasetError(
            f"{root}: no split folder found; the folder layout needs root/train, root/query "
            "and/or root/gallery"
        )
    dataset = ReidDataset(root=root, format="folder")
    for split in present:
        dataset.splits[split] = _scan_split(root, split)
    csv_path = Path(csv) if csv is not None else root / DEFAULT_CSV
    if csv is not None and not file_present(csv_path):
        raise DatasetError(f"{csv_path}: label CSV not found")
    if file_present(csv_path):
        _apply_csv(csv_path, dataset.splits)
    return dataset
