"""VeRi-776 reader.

Layout: ``image_train/``, ``image_query/``, ``image_test/`` (the gallery), ``name_*.txt``,
``train_label.xml`` and ``test_label.xml`` (gb2312-declared, VeRi 1-based colour/type ids),
``test_track.txt``. Query images carry no label file; their vehicle and camera come from the
file name (``VVVV_cCCC_FFFFFFFF_K.jpg``) and their colour/type from the vehicle's labels.
Colour/type ids are mapped to the AIC 0-based tables (VeRi ``k`` → AIC ``k - 1``); id 0 (given
to a few vehicles by old label files) becomes unknown, with a warning.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import replace
from pathlib import Path

from vreid.core.errors import DatasetError
from vreid.data.attributes import VERI_COLORS, VERI_TYPES, veri_to_aic
from vreid.data.files import (
    check_unique,
    list_images,
    parse_camera,
    parse_int,
    present,
    read_checked_name_file,
    read_label_items,
    read_lines,
    require_images,
)
from vreid.data.records import SPLITS, ImageRecord, ReidDataset

VERI_IMAGE_DIRS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
_STEMS = {"train": "train", "query": "query", "gallery": "test"}
_NAME = re.compile(r"^(\d+)_[cC](\d+)_")


def veri_name_labels(name: str) -> tuple[int | None, int | None]:
    """``(vehicle id, camera)`` of an image named in the VeRi form ``VVVV_cCCC_…`` (also what
    ``vreid synth`` names its simulation images), ``(None, None)`` for any other name."""
    match = _NAME.match(Path(name).name)
    if match is None:
        return None, None
    return int(match.group(1)), int(match.group(2))


def _veri_attr(
    value: str | None, what: str, attribute: str, where: str, zero: list[str]
) -> int | None:
    """VeRi 1-based id → AIC 0-based id (:func:`veri_to_aic`); 0 → None (recorded in ``zero`` for
    one warning)."""
    if value is None:
        return None
    k = parse_int(value, what, where)
    try:
        aic = veri_to_aic(attribute, k)
    except ValueError:
        size = len(VERI_COLORS if attribute == "color" else VERI_TYPES)
        raise DatasetError(f"{where}: {what} {k} outside the VeRi ids 1..{size}") from None
    if aic is None:
        zero.append(where)
    return aic


def _parse_veri_tracks(path: Path, names: list[str]) -> dict[str, int]:
    """``test_track.txt``: per line a key, then image names (trailing space); track id = line.

    The key is usually the track's first image repeated; a key that is a gallery image and is not
    repeated on its line is counted as a member too. A key that is no image (``test_track_VeRi.txt``'s
    ``0002_c002_t00030600`` form) only names the track.
    """
    known = set(names)
    track_of: dict[str, int] = {}
    for line_no, line in enumerate(read_lines(path)):
        tokens = line.split()
        if not tokens:
            continue
        key, members = tokens[0], tokens[1:]
        if key in known and key not in members:
            members = [key, *members]
        where = f"{path}, line {line_no + 1}"
        for name in members:
            if name not in known:
                raise DatasetError(f"{where}: track lists image {name!r}, not in the gallery")
            if name in track_of:
                raise DatasetError(
                    f"{where}: image {name!r} is already in the track of line "
                    f"{track_of[name] + 1}; each image belongs to one track"
                )
            track_of[name] = line_no
    return track_of


def read_veri(root: str | os.PathLike[str]) -> ReidDataset:
    """Read VeRi-776 under ``root`` (see the module docstring for the layout and id mapping)."""
    root = Path(root).resolve()
    dataset = ReidDataset(root=root, format="veri776")
    zero_ids: list[str] = []
    labels: dict[str, dict[str, tuple[dict[str, str], str]]] = {}
    vehicle_attrs: dict[int, tuple[int | None, int | None]] = {}

    for split in SPLITS:
        label_file = root / f"{_STEMS[split]}_label.xml"
        if not present(label_file):
            continue
        labels[split] = {
            name: (item.attrs, where) for name, item, where in read_label_items(label_file)
        }

    for split in SPLITS:
        folder = root / VERI_IMAGE_DIRS[split]
        name_file = root / f"name_{_STEMS[split]}.txt"
        if not folder.is_dir():
            if present(name_file) or split in labels:
                raise DatasetError(
                    f"{name_file if present(name_file) else root / f'{_STEMS[split]}_label.xml'}"
                    f": lists the {split} images, but their folder {folder} is missing"
                )
            continue
        if present(name_file):
            listed = read_checked_name_file(name_file)
            source: Path = name_file
        else:
            listed = [(n, str(folder)) for n in list_images(folder)]
            source = folder
            check_unique(listed)
        if not listed:
            raise DatasetError(f"{source}: the {split} split is empty (no images listed)")
        require_images(folder, listed)
        split_labels = labels.get(split, {})

        records = []
        for name, where in listed:
            attrs, label_where = split_labels.get(name, ({}, where))
            match = _NAME.match(name)
            vid_text = attrs.get("vehicleID")
            cam_text = attrs.get("cameraID")
            if (vid_text is None or cam_text is None) and match is None:
                raise DatasetError(
                    f"{where}: image {name!r} has no label and its name is not of the VeRi "
                    "form VVVV_cCCC_FFFFFFFF_K.jpg, so its vehicle and camera are unknown"
                )
            vid = (
                parse_int(vid_text, "vehicleID", label_where)
                if vid_text is not None
                else int(match.group(1))  # type: ignore[union-attr]
            )
            cam = (
                parse_camera(cam_text, label_where) if cam_text is not None else int(match.group(2))  # type: ignore[union-attr]
            )
            color = _veri_attr(attrs.get("colorID"), "colorID", "color", label_where, zero_ids)
            vtype = _veri_attr(attrs.get("typeID"), "typeID", "type", label_where, zero_ids)
            if attrs:
                known = vehicle_attrs.get(vid, (None, None))
                vehicle_attrs[vid] = (
                    color if color is not None else known[0],
                    vtype if vtype is not None else known[1],
                )
            records.append(
                ImageRecord(
                    path=folder / name,
                    name=name,
                    split=split,
                    vehicle_id=vid,
                    camera=cam,
                    color=color,
                    type=vtype,
                )
            )
        dataset.splits[split] = records

    # Images without colour/type labels (the queries) take their vehicle's.
    for split, records in dataset.splits.items():
        dataset.splits[split] = [
            r
            if r.color is not None and r.type is not None
            else _with_vehicle_attrs(r, vehicle_attrs.get(r.vehicle_id))  # type: ignore[arg-type]
            for r in records
        ]

    # Releases ship test_track.txt (key = the track's first image) and/or test_track_VeRi.txt
    # (key = "<vehicle>_<camera>_t<time>", not an image); both list the same tracks.
    track_file = next(
        (p for p in (root / "test_track.txt", root / "test_track_VeRi.txt") if p.is_file()), None
    )
    if track_file is not None and "gallery" in dataset.splits:
        gallery = dataset.splits["gallery"]
        track_of = _parse_veri_tracks(track_file, [r.name for r in gallery])
        dataset.splits["gallery"] = [replace(r, track=track_of.get(r.name)) for r in gallery]

    if zero_ids:
        warnings.warn(
            f"{len(zero_ids)} VeRi labels give colour/type id 0 (invalid), treated as unknown; "
            f"first at {zero_ids[0]}",
            stacklevel=2,
        )
    if not dataset.splits:
        raise DatasetError(f"{root}: no VeRi split found (expected image_train/, image_test/ …)")
    return dataset


def _with_vehicle_attrs(
    record: ImageRecord, attrs: tuple[int | None, int | None] | None
) -> ImageRecord:
    if attrs is None:
        return record
    color = record.color if record.color is not None else attrs[0]
    vtype = record.type if record.type is not None else attrs[1]
    return replace(record, color=color, type=vtype)
