"""VERI-Wild reader (Lou et al., CVPR 2019), in the layout fast-reid reads.

Layout::

    VERI-Wild/
      images/<vid>/<imgid>.jpg
      train_test_split/train_list.txt                   lines  <vid>/<imgid>
      train_test_split/test_{3000,5000,10000}.txt       the gallery of the small/medium/large test set
      train_test_split/test_{3000,5000,10000}_query.txt its queries
      train_test_split/vehicle_info.txt                 (or VERI-Wild/vehicle_info.txt)

``vehicle_info.txt`` has a header line, then one line per image,
``<vid>/<imgid>;<camera id>;<time>;<model>;<type>;<colour>``; the camera id gives the record's
camera, the type and colour names map to the AIC tables (:data:`TYPE_NAMES`, :data:`COLOR_NAMES`;
names without an AIC counterpart stay unknown, and one warning lists them), and the time and model
go to ``extra_attributes`` with the raw type and colour names. ``test_size`` picks the test set.
Every image must have a ``vehicle_info.txt`` line (its camera drives the evaluation protocol:
``retrieval.protocol: veri`` drops gallery images of the query's vehicle and camera, as fast-reid
evaluates VERI-Wild).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path

from vreid.core.errors import DatasetError
from vreid.data.attributes import AIC_COLORS, AIC_TYPES
from vreid.data.files import check_name, check_unique, data_lines, read_lines, require_images
from vreid.data.records import ImageRecord, ReidDataset

log = logging.getLogger("vreid.data")

TEST_SIZES = (3000, 5000, 10000)
"""Test sets of VERI-Wild: small (3,000 query ids), medium (5,000), large (10,000)."""
IMAGE_DIR = "images"
SPLIT_DIR = "train_test_split"
INFO_FILE = "vehicle_info.txt"

#: VERI-Wild type name (lower case) → AIC type name; other names stay unknown.
TYPE_NAMES: dict[str, str] = {
    "sedan": "sedan",
    "suv": "suv",
    "mpv": "mpv",
    "van": "van",
    "minivan": "van",
    "hatchback": "hatchback",
    "pickup": "pickup",
    "pickup truck": "pickup",
    "bus": "bus",
    "minibus": "bus",
    "coach": "bus",
    "truck": "truck",
    "light truck": "truck",
    "heavy truck": "truck",
    "hgv": "truck",
    "lorry": "truck",
    "estate": "estate",
    "wagon": "estate",
    "station wagon": "estate",
    "sportscar": "sportscar",
    "sports car": "sportscar",
    "rv": "RV",
}
#: VERI-Wild colour name (lower case) → AIC colour name; other names (silver, champagne …) stay
#: unknown.
COLOR_NAMES: dict[str, str] = {
    **{c: c for c in AIC_COLORS},
    "grey": "gray",
    "gold": "golden",
}

_ENTRY = re.compile(r"^([^/]+)/([^/]+)$")


def _entry(token: str, where: str) -> tuple[int, str, str]:
    """``(vehicle id, image id, image name under images/)`` of a ``<vid>/<imgid>`` token."""
    match = _ENTRY.match(token)
    if match is None:
        raise DatasetError(f"{where}: expected '<vehicle id>/<image id>', got {token!r}")
    vid_text, image = match.groups()
    if not vid_text.isdigit():
        raise DatasetError(f"{where}: vehicle id {vid_text!r} is not a number")
    stem = image.rsplit(".", 1)[0] if "." in image else image
    name = f"{vid_text}/{image if '.' in image else image + '.jpg'}"
    check_name(name, where)
    return int(vid_text), stem, name


def _read_list(path: Path) -> list[tuple[int, str, str, str]]:
    """``(vehicle id, image id, image name, where)`` per non-blank line of a split list."""
    out = []
    for where, text in data_lines(path):
        if len(text.split()) != 1:
            raise DatasetError(f"{where}: expected one '<vehicle id>/<image id>' per line")
        vid, stem, name = _entry(text, where)
        out.append((vid, stem, name, where))
    check_unique([(name, where) for _, _, name, where in out])
    if not out:
        raise DatasetError(f"{path}: the list is empty (no '<vehicle id>/<image id>' lines)")
    return out


class _Info:
    """The lines of ``vehicle_info.txt``: per ``(vid, imgid)``, camera and attributes.

    Parsed with plain string operations (the real file has 416,314 lines); its names only key the
    lookup, the images' paths come from the split lists (checked by :func:`_entry`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[tuple[int, str], tuple[int, list[str], int]] = {}
        lines = self.lines
        first = True
        for i, line in enumerate(read_lines(path), start=1):
            head, _, rest = line.strip().partition(";")
            if not head:
                continue
            vid_text, slash, image = head.partition("/")
            well_formed = slash and vid_text.isdigit() and image and "/" not in image
            if first:
                first = False
                if not well_formed:
                    continue  # the header: id/image;Camera ID;Time;Model;Type;Color
            fields = rest.split(";")
            camera_text = fields[0].strip()
            if not well_formed or not rest:
                self._bad(i, line)
            if not camera_text.isdigit():
                raise DatasetError(f"{path}, line {i}: camera id {camera_text!r} is not a number")
            key = (int(vid_text), image.rsplit(".", 1)[0] if "." in image else image)
            if key in lines:
                raise DatasetError(
                    f"{path}, line {i}: image {head!r} is already described at line {lines[key][2]}"
                )
            lines[key] = (int(camera_text), [f.strip() for f in fields[1:]], i)
        if not lines:
            raise DatasetError(f"{path}: no image lines (expected '<vid>/<imgid>;<camera>;…')")

    def _bad(self, line_no: int, text: str) -> None:
        raise DatasetError(
            f"{self.path}, line {line_no}: expected "
            f"'<vid>/<imgid>;<camera>;<time>;<model>;<type>;<colour>', got {text.strip()!r}"
        )


def _records(
    entries: list[tuple[int, str, str, str]],
    info: _Info,
    split: str,
    folder: Path,
    unmapped: Counter[str],
) -> tuple[list[ImageRecord], dict[str, dict[str, str]]]:
    records = []
    extras: dict[str, dict[str, str]] = {}
    for vid, stem, name, where in entries:
        found = info.lines.get((vid, stem))
        if found is None:
            raise DatasetError(
                f"{where}: image {name!r} has no line in {info.path}, so its camera is "
                "unknown; restore the line or remove the image from the list"
            )
        camera, rest, _ = found
        time_, model, type_name, color_name = [*rest, "", "", "", ""][:4]
        aic_type = TYPE_NAMES.get(type_name.lower()) if type_name else None
        aic_color = COLOR_NAMES.get(color_name.lower()) if color_name else None
        if type_name and aic_type is None:
            unmapped[f"type {type_name!r}"] += 1
        if color_name and aic_color is None:
            unmapped[f"colour {color_name!r}"] += 1
        records.append(
            ImageRecord(
                folder / name,
                name,
                split,
                vehicle_id=vid,
                camera=camera,
                color=None if aic_color is None else AIC_COLORS.index(aic_color),
                type=None if aic_type is None else AIC_TYPES.index(aic_type),
            )
        )
        extra = {
            k: v for k, v in (("time", time_), ("model", model), ("type_name", type_name)) if v
        }
        if color_name:
            extra["color_name"] = color_name
        if extra:
            extras[name] = extra
    return records, extras


def read_veriwild(root: str | os.PathLike[str], *, test_size: int = 3000) -> ReidDataset:
    """Read VERI-Wild under ``root``: ``train`` from ``train_list.txt`` (when present),
    ``query``/``gallery`` from ``test_<test_size>_query.txt`` / ``test_<test_size>.txt`` (see the
    module docstring). Bad input raises :class:`DatasetError` naming the file and line."""
    root = Path(root).resolve()
    if test_size not in TEST_SIZES:
        raise DatasetError(
            f"VERI-Wild test_size {test_size} is not one of {', '.join(map(str, TEST_SIZES))}"
        )
    split_dir = root / SPLIT_DIR
    folder = root / IMAGE_DIR
    info_path = next(
        (p for p in (split_dir / INFO_FILE, root / INFO_FILE) if p.is_file()), split_dir / INFO_FILE
    )
    if not info_path.is_file():
        raise DatasetError(
            f"{info_path}: VERI-Wild's vehicle_info.txt not found (also looked in {root}); it "
            "gives every image's camera"
        )
    gallery_list = split_dir / f"test_{test_size}.txt"
    query_list = split_dir / f"test_{test_size}_query.txt"
    for path in (gallery_list, query_list):
        if not path.is_file():
            present = sorted(
                int(m.group(1))
                for p in split_dir.glob("test_*_query.txt")
                if (m := re.match(r"test_(\d+)_query\.txt$", p.name))
            )
            raise DatasetError(
                f"{path}: VERI-Wild test list not found; test sets present: "
                f"{', '.join(map(str, present)) or 'none'} (data.veriwild_test_size)"
            )
    info = _Info(info_path)
    dataset = ReidDataset(root=root, format="veriwild")
    unmapped: Counter[str] = Counter()
    lists = {"train": split_dir / "train_list.txt", "query": query_list, "gallery": gallery_list}
    for split, path in lists.items():
        if not path.is_file():
            continue
        entries = _read_list(path)
        require_images(folder, [(name, where) for _, _, name, where in entries])
        records, extras = _records(entries, info, split, folder, unmapped)
        dataset.splits[split] = records
        if extras:
            dataset.extra_attributes[split] = extras
    if unmapped:
        log.warning(
            "%s: names with no AIC colour/type counterpart, left unknown: %s",
            info_path,
            ", ".join(f"{k} ({n} image{'' if n == 1 else 's'})" for k, n in unmapped.most_common()),
        )
    return dataset
