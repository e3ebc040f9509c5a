"""Format detection and the one entry point every stage uses: :func:`load_dataset`."""

from __future__ import annotations

import logging
import os
import re
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vreid.core.errors import DatasetError
from vreid.core.formats import DatasetFormat
from vreid.data.aic import AIC_IMAGE_DIRS, SIM21_IMAGE_DIR, read_aic
from vreid.data.files import check_links
from vreid.data.folder import read_folder
from vreid.data.records import ReidDataset
from vreid.data.vehicleid import read_vehicleid
from vreid.data.veri import read_veri
from vreid.data.veriwild import read_veriwild

if TYPE_CHECKING:  # the config module is slow to import; the CLI's start-up does not need it
    from vreid.core.config import DataConfig

log = logging.getLogger("vreid.data")

FORMATS: tuple[str, ...] = typing.get_args(DatasetFormat)
"""Every format :func:`load_dataset` reads (besides ``auto``)."""

_VERI_MARKERS = ("list_color.txt", "list_type.txt", "gt_index.txt", "jk_index.txt", "camera_ID.txt")
_VERI_NAME = re.compile(r"^\d+_c\d+_\d+_\d+\.\w+$")
_FOLDER_SPLITS = ("train", "query", "gallery")


def _first_image_name(root: Path) -> str | None:
    name_file = root / "name_train.txt"
    if name_file.is_file():
        with name_file.open("rb") as fh:
            for raw in fh:
                if raw.strip():
                    return raw.strip().decode("utf-8", "replace")
    folder = root / "image_train"
    if folder.is_dir():
        with os.scandir(folder) as it:
            for entry in it:
                return entry.name
    return None


def dataset_root(root: str | os.PathLike[str]) -> Path:
    """The dataset folder to read for ``root``: ``root/real`` when ``root`` is the output folder of
    ``vreid synth`` (it holds ``real/`` and ``simulation/`` and no dataset of its own), said in one
    logging warning (logger ``vreid.data``); ``root`` itself otherwise."""
    root = Path(root)
    if (
        (root / "real").is_dir()
        and (root / "simulation").is_dir()
        and not any((root / d).is_dir() for d in (*AIC_IMAGE_DIRS.values(), *_FOLDER_SPLITS))
    ):
        log.warning(
            "%s: a `vreid synth` output folder; reading its real-camera dataset %s "
            "(its simulation set: data.sim_root=%s)",
            root,
            root / "real",
            root / "simulation",
        )
        return root / "real"
    return root


def detect_format(root: str | os.PathLike[str]) -> str:
    """Guess the format of the dataset under ``root`` from the files it holds.

    Raises :class:`DatasetError` listing the known formats when nothing matches.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    has = lambda name: (root / name).exists()  # noqa: E731
    if (root / "train_test_split").is_dir() and (root / "images").is_dir():
        return "veriwild"  # VERI-Wild: images/<vid>/<imgid>.jpg (VehicleID's folder is image/)
    if (root / "train_test_split").is_dir() and (root / "image").is_dir():
        return "vehicleid"
    if any(has(m) for m in _VERI_MARKERS):
        return "veri776"
    if (root / SIM21_IMAGE_DIR).is_dir():
        return "aic21-sim"
    image_dirs = {s: (root / d).is_dir() for s, d in AIC_IMAGE_DIRS.items()}
    if any(image_dirs.values()):
        first = _first_image_name(root)
        if first is not None and _VERI_NAME.match(first) and not has("query_label.xml"):
            return "veri776"
        if image_dirs["train"] and not image_dirs["query"] and not image_dirs["gallery"]:
            return "aic20-sim"
        if (
            not has("name_query.txt")
            and not has("name_test.txt")
            and (has("query_label.xml") or has("test_label.xml") or has("test_track.txt"))
        ):
            return "aic21"
        return "aic20"
    if any((root / s).is_dir() for s in _FOLDER_SPLITS):
        return "folder"
    raise DatasetError(
        f"{root}: unknown dataset format; known formats: {', '.join(FORMATS)} "
        "(AIC and VeRi-776: image_train/, image_query/, image_test/ with their label files; "
        "VehicleID and VERI-Wild: train_test_split/ with image/ or images/; folder: train/, "
        "query/, gallery/ with one sub-folder per vehicle id; `vreid synth` output: real/ and "
        "simulation/), or pass --format"
    )


def load_dataset(
    root: str | os.PathLike[str],
    format: str = "auto",
    *,
    follow_links: bool = False,
    **options: Any,
) -> ReidDataset:
    """Read the dataset under ``root`` into :class:`ReidDataset` (records per split, file order).

    ``format``: ``auto`` (detect) or one of :data:`FORMATS`. The output folder of ``vreid synth``
    reads as its ``real/`` dataset (:func:`dataset_root`). Options: ``vehicleid`` takes
    ``test_size`` (800/1600/2400), ``draw`` (0–9) and ``seed``; ``veriwild`` takes ``test_size``
    (3000/5000/10000); ``folder`` takes ``csv`` (a path to a per-image CSV of
    camera/track/colour/type).
    :func:`load_from_config` passes the config's options of the format read. Bad input raises :class:`DatasetError`
    naming the file (and line) and what is wrong. Images are stat-checked, not opened (see
    :func:`vreid.data.check_images`). An image reached through a symbolic link that leaves
    ``root`` (the image, a split or identity folder) is refused naming the link and its target
    unless ``follow_links`` (:func:`vreid.data.files.check_links`).
    """
    root = dataset_root(root)
    dataset = _read(root, format, options)
    if not follow_links:
        check_links(Path(root), (r.path for recs in dataset.splits.values() for r in recs))
    return dataset


def _read(root: Path, format: str, options: dict[str, Any]) -> ReidDataset:
    if format == "auto":
        format = detect_format(root)
    if format not in FORMATS:
        raise DatasetError(
            f"{root}: unknown dataset format {format!r}; known formats: auto, {', '.join(FORMATS)}"
        )
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    if format.startswith("aic"):
        if options:
            raise DatasetError(f"format {format} takes no options, got {sorted(options)}")
        return read_aic(root, format)
    if format == "veri776":
        return read_veri(root, **options)
    if format == "vehicleid":
        return read_vehicleid(root, **options)
    if format == "veriwild":
        return read_veriwild(root, **options)
    return read_folder(root, **options)


def load_from_config(
    data: DataConfig,
    root: str | os.PathLike[str] | None = None,
    format: str | None = None,
) -> ReidDataset:
    """The one way a stage or command reads a dataset from the config: :func:`load_dataset` on
    ``root`` (default ``data.root``) in ``format`` (default ``data.format``) with the options of
    ``data`` that the format read takes (VehicleID: ``vehicleid_test_size/_draw/_seed``;
    VERI-Wild: ``veriwild_test_size``; folder layout: ``folder_csv``)."""
    root = root if root is not None else data.root
    if root is None:
        raise DatasetError("data.root is not set; pass --set data.root=PATH")
    root = dataset_root(root)
    fmt = format if format is not None else data.format
    if fmt == "auto":
        fmt = detect_format(root)
    options: dict[str, Any] = {}
    if fmt == "vehicleid":
        options = {
            "test_size": data.vehicleid_test_size,
            "draw": data.vehicleid_draw,
            "seed": data.vehicleid_seed,
        }
    elif fmt == "veriwild":
        options = {"test_size": data.veriwild_test_size}
    elif fmt == "folder" and data.folder_csv is not None:
        options = {"csv": data.folder_csv}
    return load_dataset(root, fmt, follow_links=data.follow_links, **options)
