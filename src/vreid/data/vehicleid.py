"""VehicleID reader with the seeded query/gallery protocol.

Layout: ``image/<imgid>.jpg``, ``train_test_split/train_list.txt`` and
``train_test_split/test_list_{800,1600,2400}.txt`` with lines ``<imgid> <vid>``.
Protocol: from the chosen test list, one random image per vehicle goes to the gallery and the rest
are queries; results are averaged over 10 seeded draws (``draw`` 0–9). VehicleID has no cameras:
every image gets camera 0 (no same-camera filtering applies).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vreid.data.files import check_name, check_unique, read_lines, require_images
from vreid.data.records import ImageRecord, ReidDataset
from vreid.core.errors import DatasetError

TEST_SIZES = (800, 1600, 2400)
NUM_DRAWS = 10


def _read_list(path: Path) -> list[tuple[str, int, str]]:
    """``(image name, vehicle id, where)`` for each line ``<imgid> <vid>`` of a split list."""
    out = []
    for i, line in enumerate(read_lines(path), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}, line {i}"
        if len(tokens) != 2:
            raise DatasetError(f"{where}: expected '<imgid> <vid>', got {line.strip()!r}")
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
    ``test_list_<test_size>.txt`` (draw ``draw`` of the 10-draw protocol, seeded by ``seed``)."""
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

    train_list = split_dir / "train_list.txt"
    if train_list.is_file():
        entries = _read_list(train_list)
        require_images(folder, [(n, w) for n, _, w in entries])
        dataset.splits["train"] = [
            ImageRecord(folder / n, n, "train", vehicle_id=v, camera=0) for n, v, _ in entries
        ]

    test_list = split_dir / f"test_list_{test_size}.txt"
    if not test_list.is_file():
        raise DatasetError(
            f"{test_list}: VehicleID test list not found; choose test_size among the lists "
            f"present in {split_dir}"
        )
    entries = _read_list(test_list)
    require_images(folder, [(n, w) for n, _, w in entries])
    vids = np.array([v for _, v, _ in entries], dtype=np.int64)
    in_gallery = gallery_mask(vids, seed=seed, draw=draw)
    dataset.splits["query"] = [
        ImageRecord(folder / n, n, "query", vehicle_id=v, camera=0)
        for (n, v, _), g in zip(entries, in_gallery, strict=True)
        if not g
    ]
    dataset.splits["gallery"] = [
        ImageRecord(folder / n, n, "gallery", vehicle_id=v, camera=0)
        for (n, v, _), g in zip(entries, in_gallery, strict=True)
        if g
    ]
    if not dataset.splits["query"]:
        raise DatasetError(
            f"{test_list}: every vehicle has a single image, so the protocol leaves no queries"
        )
    return dataset
