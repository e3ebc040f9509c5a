"""AI City Challenge layouts: AIC20 CityFlow-ReID (real and simulation), AIC21 CityFlowV2-ReID
(real and simulation), and our synthetic output — one reader and the matching writer.

Split ↔ file names: train → ``image_train/``, ``name_train.txt``, ``train_label.xml``,
``train_track_id.txt`` / ``train_track.txt``; query → ``image_query/``, ``name_query.txt``,
``query_label.xml``; gallery → ``image_test/``, ``name_test.txt``, ``test_label.xml``,
``test_track_id.txt`` / ``test_track.txt``. The AIC21 simulation keeps its images in
``sys_image_train/``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from vreid.core.artefacts import write_text_atomic
from vreid.core.errors import DatasetError
from vreid.data.attributes import AIC_COLORS, AIC_TYPES
from vreid.data.files import (
    FolderIndex,
    LabelItem,
    check_name,
    list_images,
    parse_camera,
    parse_int,
    parse_tracks,
    present,
    read_checked_name_file,
    read_label_items,
    require_images,
)
from vreid.data.records import SPLITS, ImageRecord, ReidDataset

log = logging.getLogger("vreid.data")

AIC_IMAGE_DIRS: dict[str, str] = {
    "train": "image_train",
    "query": "image_query",
    "gallery": "image_test",
}
"""Image folder of each split in the AIC layouts."""
AIC_FILE_STEMS: dict[str, str] = {"train": "train", "query": "query", "gallery": "test"}
"""Stem of the name/label/track files of each split (``name_<stem>.txt``, ``<stem>_label.xml``)."""
SIM21_IMAGE_DIR = "sys_image_train"

_ROOT_ELEMENTS = {"train": "TrainingImages", "query": "QueryImages", "gallery": "TestImages"}
_CORE_ATTRS = ("imageName", "vehicleID", "cameraID", "colorID", "typeID")
_ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------------
# reading


def _int_attr(attrs: dict[str, str], key: str, label_file: Path, line: int) -> int | None:
    value = attrs.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return parse_int(value, key, f"{label_file}, line {line}")  # raises with the message


def _record_from_item(
    item: LabelItem, label_file: Path, path: Path, name: str, split: str, track: int | None
) -> tuple[ImageRecord, dict[str, str]]:
    attrs = item.attrs
    cam = attrs.get("cameraID")
    camera = None
    if cam is not None:
        digits = cam[1:] if cam[:1] in ("c", "C") else cam
        camera = (
            int(digits)
            if digits.isdigit()
            else parse_camera(cam, f"{label_file}, line {item.line}")
        )
    color_id = _int_attr(attrs, "colorID", label_file, item.line)
    type_id = _int_attr(attrs, "typeID", label_file, item.line)
    if color_id is not None and not 0 <= color_id < len(AIC_COLORS):
        raise DatasetError(
            f"{label_file}, line {item.line}: colorID {color_id} outside the AIC colour ids "
            f"0..{len(AIC_COLORS) - 1}"
        )
    if type_id is not None and not 0 <= type_id < len(AIC_TYPES):
        raise DatasetError(
            f"{label_file}, line {item.line}: typeID {type_id} outside the AIC type ids "
            f"0..{len(AIC_TYPES) - 1}"
        )
    record = ImageRecord(
        path,
        name,
        split,
        _int_attr(attrs, "vehicleID", label_file, item.line),
        camera,
        track,
        color_id,
        type_id,
    )
    extras = {k: v for k, v in attrs.items() if k not in _CORE_ATTRS} if len(attrs) > 1 else {}
    return record, extras


_WARNED: set[tuple[str, int, int]] = set()


def _warn_untracked(name_file: Path, id_file: Path, split: str, untracked: int, total: int) -> None:
    """One logging warning (once per file and count in a process) when the name form of the
    tracks leaves images of the split without a track.

    The real AIC19/AIC20 ``train_track.txt`` omits one image of each track that
    ``train_track_id.txt`` lists (the last one there; single-image tracks become empty lines); the
    id form is complete.
    """
    key = (str(name_file), untracked, total)
    if untracked <= 0 or key in _WARNED:
        return
    _WARNED.add(key)
    log.warning(
        "%s: %d of %d %s images have no track (the AIC19/AIC20 releases' name form omits one "
        "image of each track; their %s, the id form, is complete: put it beside it)",
        name_file,
        untracked,
        total,
        split,
        id_file.name,
    )


def _read_split(
    root: Path, split: str, folder: Path
) -> tuple[list[ImageRecord], dict[str, dict[str, str]]] | None:
    """Read one split; ``None`` when the split is absent (no folder and no files naming it)."""
    stem = AIC_FILE_STEMS[split]
    name_file = root / f"name_{stem}.txt"
    label_file = root / f"{stem}_label.xml"
    if not folder.is_dir():
        listed_by = [f for f in (name_file, label_file) if f.is_file()]
        if listed_by:
            raise DatasetError(
                f"{listed_by[0]}: lists the {split} images, but their folder {folder} is "
                "missing; unpack the images there"
            )
        return None

    items: dict[str, LabelItem] = {}
    if present(label_file):
        items = {name: item for name, item, _ in read_label_items(label_file)}

    if present(name_file):
        listed = read_checked_name_file(name_file)
        if items:
            listed_set = {n for n, _ in listed}
            for name, where in listed:
                if name not in items:
                    raise DatasetError(
                        f"{where}: image {name!r} has no Item in {label_file}; "
                        "the name and label files must list the same images"
                    )
            for name, item in items.items():
                if name not in listed_set:
                    raise DatasetError(
                        f"{label_file}, line {item.line}: image {name!r} is not listed in "
                        f"{name_file}; the name and label files must list the same images"
                    )
        source = name_file
    elif present(label_file):
        listed = [(n, f"{label_file}, line {it.line}") for n, it in items.items()]
        source = label_file
    else:
        listed = [(n, f"{folder}") for n in list_images(folder)]
        source = folder

    if not listed:
        raise DatasetError(
            f"{source}: the {split} split is empty (no images listed); "
            "add images or remove the split's folder and files"
        )
    require_images(folder, listed)
    names = [n for n, _ in listed]

    track_of: dict[str, int] = {}
    track_id_file = root / f"{stem}_track_id.txt"
    track_name_file = root / f"{stem}_track.txt"
    if present(track_id_file):
        track_of = parse_tracks(track_id_file, names, by_index=True)
    elif present(track_name_file):
        track_of = parse_tracks(track_name_file, names, by_index=False)
        _warn_untracked(
            track_name_file, track_id_file, split, len(names) - len(track_of), len(names)
        )

    records: list[ImageRecord] = []
    extras: dict[str, dict[str, str]] = {}
    for name in names:
        path = folder / name  # joining a child is ~2x faster than Path(str, name)
        track = track_of.get(name)
        item = items.get(name)
        if item is None:
            records.append(ImageRecord(path=path, name=name, split=split, track=track))
            continue
        record, extra = _record_from_item(item, label_file, path, name, split, track)
        records.append(record)
        if extra:
            extras[name] = extra
    return records, extras


def read_aic(root: str | os.PathLike[str], format: str = "aic20") -> ReidDataset:
    """Read an AIC layout (``aic20``, ``aic21``, ``aic20-sim``, ``aic21-sim``) under ``root``.

    Split order follows ``name_<stem>.txt`` when present, else the label file, else the sorted
    image folder. Labels come from ``<stem>_label.xml`` when present (train always; query/test
    in AIC21 and our synthetic data, with ``vehicleID`` when ground truth is known); tracks from
    ``<stem>_track_id.txt`` (1-based indices) or else ``<stem>_track.txt`` (file names). The real
    AIC19/AIC20 ``train_track.txt`` omits one image of each track (its single-image tracks are
    empty lines), so the id form is preferred; with only the name form, a logging warning (once)
    says how many images have no track.
    """
    root = Path(root).resolve()
    simulation = format.endswith("-sim")
    dataset = ReidDataset(root=root, format=format)
    for split in ("train",) if simulation else SPLITS:
        folder = root / AIC_IMAGE_DIRS[split]
        if split == "train" and format == "aic21-sim" and (root / SIM21_IMAGE_DIR).is_dir():
            folder = root / SIM21_IMAGE_DIR
        result = _read_split(root, split, folder)
        if result is None:
            continue
        dataset.splits[split], extras = result
        if extras:
            dataset.extra_attributes[split] = extras
    if not dataset.splits:
        raise DatasetError(
            f"{root}: no AIC split found (expected {', '.join(AIC_IMAGE_DIRS.values())})"
        )
    return dataset


# ------------------------------------------------------------------------------------------
# writing


def _item_line(record: ImageRecord, extra: Mapping[str, str] | None) -> str:
    parts = [f"imageName={quoteattr(record.name)}"]
    if record.vehicle_id is not None:
        parts.append(f'vehicleID="{record.vehicle_id:04d}"')
    if record.camera is not None:
        parts.append(f'cameraID="c{record.camera:03d}"')
    if record.color is not None:
        parts.append(f'colorID="{record.color}"')
    if record.type is not None:
        parts.append(f'typeID="{record.type}"')
    for key, value in (extra or {}).items():
        parts.append(f"{key}={quoteattr(str(value))}")
    return "<Item " + " ".join(parts) + " />"


def _label_xml(
    split: str,
    records: Sequence[ImageRecord],
    extras: Mapping[str, Mapping[str, str]],
    encoding: str,
) -> str:
    root_el = _ROOT_ELEMENTS[split]
    lines = [
        f'<?xml version="1.0" encoding="{encoding}"?>',
        f'<{root_el} Version="1.0">',
        f'<Items number="{len(records)}">',
        *(_item_line(r, extras.get(r.name)) for r in records),
        "</Items>",
        f"</{root_el}>",
        "",
    ]
    text = "\n".join(lines)
    # Keep the content ASCII (the gb2312 header promises a subset of it): escape anything else.
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _track_lines(records: Sequence[ImageRecord]) -> tuple[str, str] | None:
    """(``*_track_id.txt`` text, ``*_track.txt`` text), or None if no record has a track."""
    tracks: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        if r.track is not None:
            tracks.setdefault(r.track, []).append(i)
    if not tracks:
        return None
    n_lines = max(tracks) + 1
    by_index = []
    by_name = []
    for t in range(n_lines):
        members = tracks.get(t, [])
        by_index.append("".join(f"{i + 1} " for i in members))
        by_name.append("".join(f"{records[i].name} " for i in members))
    return "\n".join(by_index) + "\n", "\n".join(by_name) + "\n"


def _validate(root: Path, split: str, records: Sequence[ImageRecord], folder: Path) -> None:
    if not records:
        raise DatasetError(f"write_aic: the {split} split is empty; pass at least one record")
    index = FolderIndex(folder)
    seen: set[str] = set()
    for r in records:
        where = f"write_aic({root}): {split} record {r.name!r}"
        if r.split != split:
            raise DatasetError(f"{where}: has split {r.split!r}, but was passed as {split!r}")
        check_name(r.name, where)
        if any(c.isspace() for c in r.name):
            raise DatasetError(f"{where}: image names may not contain whitespace")
        if r.name in seen:
            raise DatasetError(f"{where}: duplicate image name")
        seen.add(r.name)
        if not index.exists(r.name):
            raise DatasetError(f"{where}: image {folder / r.name} does not exist; write it first")
        for what, value in (("vehicle_id", r.vehicle_id), ("camera", r.camera), ("track", r.track)):
            if value is not None and value < 0:
                raise DatasetError(f"{where}: {what} must be >= 0, got {value}")
        if r.color is not None and not 0 <= r.color < len(AIC_COLORS):
            raise DatasetError(f"{where}: colour id {r.color} outside 0..{len(AIC_COLORS) - 1}")
        if r.type is not None and not 0 <= r.type < len(AIC_TYPES):
            raise DatasetError(f"{where}: type id {r.type} outside 0..{len(AIC_TYPES) - 1}")


def write_aic(
    root: str | os.PathLike[str],
    splits: Mapping[str, Sequence[ImageRecord]],
    *,
    simulation: bool = False,
    extra_attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Write the AIC name, label and track files for images already under ``root``.

    Records of split ``train`` / ``query`` / ``gallery`` must name images in ``root/image_train``,
    ``root/image_query`` / ``root/image_test``. Real layout (``simulation=False``): ``name_*.txt``,
    ``train_label.xml`` (``encoding="gb2312"`` header, ASCII content), ``query_label.xml`` and
    ``test_label.xml`` in the AIC21 layout (``imageName``, ``cameraID``, plus ``vehicleID`` /
    ``colorID`` / ``typeID`` when known — our local ground truth), and for every split with tracks
    both ``<stem>_track_id.txt`` (1-based indices, trailing space) and ``<stem>_track.txt`` (names).
    Simulation layout: only the ``train`` split, ``train_label.xml`` (UTF-8) with every known field.

    ``extra_attributes`` maps a train image name to further attributes written on its ``Item``
    (e.g. ``orientation``, ``lightInt``, ``lightDir``, ``camHei``, ``camDis``); they come back in
    :attr:`ReidDataset.extra_attributes` ``["train"]``. Returns ``root``. ``load_dataset(root)``
    reproduces the records exactly (paths resolved).
    """
    root = Path(root)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise DatasetError(
            f"write_aic({root}): unknown split(s) {sorted(unknown)}; use {', '.join(SPLITS)}"
        )
    if simulation and set(splits) != {"train"}:
        raise DatasetError(
            f"write_aic({root}): the simulation layout has only a train split, got {sorted(splits)}"
        )
    extras = dict(extra_attributes or {})
    train_names = {r.name for r in splits.get("train", ())}
    for name, attrs in extras.items():
        if name not in train_names:
            raise DatasetError(
                f"write_aic({root}): extra_attributes names {name!r}, which is not a train image"
            )
        for key in attrs:
            if key in _CORE_ATTRS or not _ATTR_NAME.match(key):
                raise DatasetError(
                    f"write_aic({root}): extra attribute {key!r} of {name!r} is not allowed "
                    f"(must be an XML name other than {', '.join(_CORE_ATTRS)})"
                )
    for split, records in splits.items():
        _validate(root, split, records, root / AIC_IMAGE_DIRS[split])

    for split in SPLITS:
        if split not in splits:
            continue
        records = splits[split]
        stem = AIC_FILE_STEMS[split]
        split_extras = extras if split == "train" else {}
        if not simulation:
            write_text_atomic(root / f"name_{stem}.txt", "".join(f"{r.name}\n" for r in records))
        encoding = "utf-8" if simulation else "gb2312"
        write_text_atomic(
            root / f"{stem}_label.xml",
            _label_xml(split, records, split_extras, encoding),
            encoding="ascii",
        )
        tracks = _track_lines(records)
        track_files = (root / f"{stem}_track_id.txt", root / f"{stem}_track.txt")
        for path, text in zip(track_files, tracks or ("", ""), strict=True):
            if tracks is not None:
                write_text_atomic(path, text)
            else:  # a stale track file from an earlier write would give these records tracks
                path.unlink(missing_ok=True)
    return root
