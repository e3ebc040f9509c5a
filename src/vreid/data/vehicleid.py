"""VehicleID reader with the seeded query/gallery protocol and the colour/model attributes.

Layout: ``image/<imgid>.jpg``, ``train_test_split/train_list.txt`` and
``train_test_split/test_list_{800,1600,2400}.txt`` with lines ``<imgid> <vid>``; optionally
``attribute/color_attr.txt`` / ``attribute/model_attr.txt`` (lines ``<vid> <colour or model id>``)
with the names in ``attribute/color_names.txt`` / ``attribute/model_names.txt`` (``<name> <id>``).
Protocol: from the chosen test list, one random image per vehicle goes to the gallery and the rest
are queries; results are averaged over 10 seeded draws (``draw`` 0–9). VehicleID has no cameras:
every image gets camera 0 (no same-camera filtering applies).

Attributes: an image takes its vehicle's colour and model. The colour maps to the AIC colour of the
same name, the model to the AIC type of its body (:mod:`vreid.data.vehicleid_attributes` says what
maps and what does not); the raw colour name and model name go to ``extra_attributes``
(``color_name``, ``model``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vreid.core.errors import DatasetError
from vreid.data import vehicleid_attributes
from vreid.data.files import (
    check_name,
    check_unique,
    data_lines,
    present,
    require_images,
)
from vreid.data.records import ImageRecord, ReidDataset

TEST_SIZES = (800, 1600, 2400)
NUM_DRAWS = 10


def _read_list(path: Path) -> list[tuple[str, int, str]]:
    """``(image name, vehicle id, where)`` for each line ``<imgid> <vid>`` of a split list."""
    out = []
    for where, text in data_lines(path):
        tokens = text.split()
        if len(tokens) != 2:
            raise DatasetError(f"{where}: expected '<imgid> <vid>', got {text!r}")
        imgid, vid = tokens
        try:
            vehicle = int(vid)
        except ValueError:
            raise DatasetError(f"{where}: vehicle id {vid!r} is not an integer") from None
        name = imgid if "." in imgid else f"{imgid}.jpg"
        out.append((check_name(name, where), vehicle, where))
    check_unique([(n, w) for n, _, w in out])
    if not out:
        raise DatasetError(f"{path}: the split list is empty (no '<imgid> <vid>' lines)")
    return out


#: The colour names of the VehicleID release (``color_names.txt``), used when that file is absent.
DEFAULT_COLOR_NAMES = ("black", "blue", "gray", "red", "sliver", "white", "yellow")


@dataclass(frozen=True)
class VehicleAttributes:
    """What ``attribute/`` says about one vehicle (any field may be unknown)."""

    color_name: str | None = None
    model: str | None = None

    @property
    def color(self) -> int | None:
        """AIC colour id (``None``: unknown or no AIC counterpart, e.g. silver)."""
        return None if self.color_name is None else vehicleid_attributes.color_id(self.color_name)

    @property
    def type(self) -> int | None:
        """AIC type id of the model's body (``None``: unknown or not in the table)."""
        return None if self.model is None else vehicleid_attributes.type_id(self.model)

    def extras(self) -> dict[str, str]:
        out = {}
        if self.color_name is not None:
            out["color_name"] = self.color_name
        if self.model is not None:
            out["model"] = self.model
        return out


def _read_pairs(path: Path, *, name_first: bool) -> list[tuple[str, int, str]]:
    """``(text, integer, "file, line N")`` for each non-blank line of a two-column attribute file:
    ``<name> <id>`` (``name_first``: the name may hold spaces; the id is the last token) or
    ``<vid> <id>``."""
    out = []
    for where, text in data_lines(path):
        parts = text.rsplit(None, 1) if name_first else text.split()
        if len(parts) != 2:
            form = "'<name> <id>'" if name_first else "'<vehicle id> <id>'"
            raise DatasetError(f"{where}: expected {form}, got {text!r}")
        key, value = parts
        try:
            number = int(value)
        except ValueError:
            raise DatasetError(f"{where}: id {value!r} is not an integer") from None
        if not name_first:
            try:
                int(key)
            except ValueError:
                raise DatasetError(f"{where}: vehicle id {key!r} is not an integer") from None
        out.append((key, number, where))
    return out


def _names(path: Path, default: tuple[str, ...] | None) -> dict[int, str] | None:
    """id → name from a ``*_names.txt`` file (``default`` in id order when the file is absent)."""
    if not path.is_file():
        return None if default is None else dict(enumerate(default))
    names: dict[int, str] = {}
    seen: dict[int, str] = {}
    for name, number, where in _read_pairs(path, name_first=True):
        if number in names:
            raise DatasetError(f"{where}: id {number} already named at {seen[number]}")
        names[number], seen[number] = name, where
    return names


def _per_vehicle(path: Path, names: dict[int, str] | None, what: str) -> dict[int, str | None]:
    """vehicle id → name (``None`` when no names table is known) from a ``*_attr.txt`` file."""
    out: dict[int, str | None] = {}
    seen: dict[int, tuple[int, str]] = {}
    for vid_text, number, where in _read_pairs(path, name_first=False):
        vid = int(vid_text)
        if vid in seen and seen[vid][0] != number:
            raise DatasetError(
                f"{where}: vehicle {vid} has {what} id {number}, but {seen[vid][1]} gives "
                f"{seen[vid][0]}"
            )
        if names is not None and number not in names:
            raise DatasetError(
                f"{where}: {what} id {number} is not in {path.parent / f'{what}_names.txt'} "
                f"(ids {min(names)}..{max(names)})"
            )
        seen[vid] = (number, where)
        out[vid] = names[number] if names is not None else None
    return out


def read_vehicle_attributes(root: str | os.PathLike[str]) -> dict[int, VehicleAttributes]:
    """Per vehicle id, the colour and model that ``root/attribute/`` gives (empty when absent).

    ``color_attr.txt`` needs ``color_names.txt`` or uses the release's colour order
    (:data:`DEFAULT_COLOR_NAMES`); ``model_attr.txt`` without ``model_names.txt`` gives no model.
    Bad lines raise :class:`DatasetError` naming the file and line.
    """
    folder = Path(root) / "attribute"
    colors: dict[int, str | None] = {}
    models: dict[int, str | None] = {}
    if present(folder / "color_attr.txt"):
        names = _names(folder / "color_names.txt", DEFAULT_COLOR_NAMES)
        colors = _per_vehicle(folder / "color_attr.txt", names, "color")
    if present(folder / "model_attr.txt"):
        model_names = _names(folder / "model_names.txt", None)
        models = _per_vehicle(folder / "model_attr.txt", model_names, "model")
    return {
        vid: VehicleAttributes(colors.get(vid), models.get(vid))
        for vid in sorted(set(colors) | set(models))
    }


def gallery_mask(vehicle_ids: np.ndarray, *, seed: int = 0, draw: int = 0) -> np.ndarray:
    """Boolean mask (N,) choosing one image per vehicle id for the gallery, reproducibly.

    ``vehicle_ids``: (N,) ints. The choice depends only on ``(seed, draw)`` and the list.
    """
    rng = np.random.default_rng([seed, draw])
    order = rng.permutation(len(vehicle_ids))
    _, first = np.unique(vehicle_ids[order], return_index=True)
    mask = np.zeros(len(vehicle_ids), dtype=bool)
    mask[order[first]] = True
    return mask


def read_vehicleid(
    root: str | os.PathLike[str], *, test_size: int = 800, draw: int = 0, seed: int = 0
) -> ReidDataset:
    """Read VehicleID: ``train`` from ``train_list.txt``; ``query``/``gallery`` drawn from
    ``test_list_<test_size>.txt`` (draw ``draw`` of the 10-draw protocol, seeded by ``seed``);
    colour/type from ``attribute/`` where present (see the module docstring)."""
    root = Path(root).resolve()
    if test_size not in TEST_SIZES:
        raise DatasetError(
            f"VehicleID test_size {test_size} is not one of {', '.join(map(str, TEST_SIZES))}"
        )
    if not 0 <= draw < NUM_DRAWS:
        raise DatasetError(f"VehicleID draw {draw} must be in 0..{NUM_DRAWS - 1}")
    folder = root / "image"
    split_dir = root / "train_test_split"
    dataset = ReidDataset(root=root, format="vehicleid")
    attributes = read_vehicle_attributes(root)
    unknown = VehicleAttributes()

    def record(name: str, vid: int, split: str) -> ImageRecord:
        a = attributes.get(vid, unknown)
        return ImageRecord(
            folder / name, name, split, vehicle_id=vid, camera=0, color=a.color, type=a.type
        )

    train_list = split_dir / "train_list.txt"
    if present(train_list):
        entries = _read_list(train_list)
        require_images(folder, [(n, w) for n, _, w in entries])
        dataset.splits["train"] = [record(n, v, "train") for n, v, _ in entries]

    test_list = split_dir / f"test_list_{test_size}.txt"
    if not present(test_list):
        raise DatasetError(
            f"{test_list}: VehicleID test list not found; choose test_size among the lists "
            f"present in {split_dir}"
        )
    entries = _read_list(test_list)
    require_images(folder, [(n, w) for n, _, w in entries])
    vids = np.array([v for _, v, _ in entries], dtype=np.int64)
    in_gallery = gallery_mask(vids, seed=seed, draw=draw)
    dataset.splits["query"] = [
        record(n, v, "query") for (n, v, _), g in zip(entries, in_gallery, strict=True) if not g
    ]
    dataset.splits["gallery"] = [
        record(n, v, "gallery") for (n, v, _), g in zip(entries, in_gallery, strict=True) if g
    ]
    if not dataset.splits["query"]:
        raise DatasetError(
            f"{test_list}: every vehicle has a single image, so the protocol leaves no queries"
        )
    for split, records in dataset.splits.items():
        extras = {
            r.name: attributes[r.vehicle_id].extras()
            for r in records
            if r.vehicle_id in attributes and attributes[r.vehicle_id].extras()
        }
        if extras:
            dataset.extra_attributes[split] = extras
    return dataset
