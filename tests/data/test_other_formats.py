"""VeRi-776, VehicleID and folder readers on hand-written files; format detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import write_images

from vreid.core.errors import DatasetError
from vreid.data import detect_format, load_dataset
from vreid.data.vehicleid import gallery_mask

VERI_TRAIN = ["0001_c001_00016450_0.jpg", "0001_c002_00016470_0.jpg", "0003_c005_00010000_1.jpg"]
VERI_QUERY = ["0002_c002_00030600_0.jpg"]
VERI_TEST = [
    "0002_c002_00030600_0.jpg",
    "0002_c003_00030650_0.jpg",
    "0002_c003_00030660_1.jpg",
    "0005_c002_00040000_0.jpg",
]


def _veri_xml(root_el: str, rows: list[tuple[str, str, str, str, str]]) -> str:
    items = "\n".join(
        f'<Item imageName="{n}" vehicleID="{v}" cameraID="{c}" colorID="{col}" typeID="{t}" />'
        for n, v, c, col, t in rows
    )
    return (
        '<?xml version="1.0" encoding="gb2312"?>\n'
        f'<{root_el} Version="1.0">\n<Items number="{len(rows)}">\n{items}\n</Items>\n'
        f"</{root_el}>\n"
    )


def make_veri(root: Path) -> Path:
    write_images(root / "image_train", VERI_TRAIN)
    write_images(root / "image_query", VERI_QUERY)
    write_images(root / "image_test", VERI_TEST)
    for stem, names in (("train", VERI_TRAIN), ("query", VERI_QUERY), ("test", VERI_TEST)):
        (root / f"name_{stem}.txt").write_text("\n".join(names) + "\n")
    (root / "train_label.xml").write_text(
        _veri_xml(
            "TrainingImages",
            [
                (VERI_TRAIN[0], "0001", "c001", "10", "9"),  # black estate
                (VERI_TRAIN[1], "0001", "c002", "10", "9"),
                (VERI_TRAIN[2], "0003", "c005", "1", "0"),  # typeID 0: invalid
            ],
        )
    )
    (root / "test_label.xml").write_text(
        _veri_xml(
            "TestImages",
            [
                (VERI_TEST[0], "0002", "c002", "5", "2"),  # red suv
                (VERI_TEST[1], "0002", "c003", "5", "2"),
                (VERI_TEST[2], "0002", "c003", "5", "2"),
                (VERI_TEST[3], "0005", "c002", "7", "1"),  # white sedan
            ],
        )
    )
    (root / "list_color.txt").write_text("1 yellow\n2 orange\n")
    # A key (the track's first image), then its images, with a trailing space.
    (root / "test_track.txt").write_text(
        f"{VERI_TEST[1]} {VERI_TEST[1]} {VERI_TEST[2]} \n{VERI_TEST[3]} {VERI_TEST[3]} \n"
    )
    return root


def test_veri_ids_colours_types_and_tracks(tmp_path: Path):
    make_veri(tmp_path)
    assert detect_format(tmp_path) == "veri776"
    with pytest.warns(UserWarning, match=r"colour/type id 0.*train_label\.xml, line 6"):
        ds = load_dataset(tmp_path)
    train = ds["train"]
    assert [r.vehicle_id for r in train] == [1, 1, 3]
    assert [r.camera for r in train] == [1, 2, 5]
    # VeRi 1-based → AIC 0-based: 10 black → 9, 9 estate → 8; type 0 → unknown.
    assert [(r.color, r.type) for r in train] == [(9, 8), (9, 8), (0, None)]
    (query,) = ds["query"]
    # The query has no label file: vehicle and camera from its name, colour/type from its vehicle.
    assert (query.vehicle_id, query.camera, query.color, query.type) == (2, 2, 4, 1)
    gallery = ds["gallery"]
    assert [(r.color, r.type) for r in gallery] == [(4, 1), (4, 1), (4, 1), (6, 0)]
    assert [r.track for r in gallery] == [None, 0, 0, 1]


def test_veri_tracks_from_test_track_veri_with_non_image_keys(tmp_path: Path):
    make_veri(tmp_path)
    (tmp_path / "test_track.txt").unlink()
    (tmp_path / "test_track_VeRi.txt").write_text(
        f"0002_c003_t00030650 {VERI_TEST[1]} {VERI_TEST[2]} \n"
        f"0005_c002_t00040000 {VERI_TEST[3]} \n0002_c002_t00030600 {VERI_TEST[0]} \n"
    )
    with pytest.warns(UserWarning, match="colour/type id 0"):  # make_veri's vehicle 3
        gallery = load_dataset(tmp_path)["gallery"]
    assert [r.track for r in gallery] == [2, 0, 0, 1]


def test_veri_detected_from_file_names_without_marker_files(tmp_path: Path):
    make_veri(tmp_path)
    (tmp_path / "list_color.txt").unlink()
    assert detect_format(tmp_path) == "veri776"


def make_vehicleid(root: Path, test_rows: list[tuple[int, int]]) -> Path:
    train_rows = [(1, 10), (2, 10), (3, 11)]
    write_images(root / "image", [f"{i}.jpg" for i, _ in train_rows + test_rows])
    split = root / "train_test_split"
    split.mkdir()
    (split / "train_list.txt").write_text("".join(f"{i} {v}\n" for i, v in train_rows))
    (split / "test_list_800.txt").write_text("".join(f"{i} {v}\n" for i, v in test_rows))
    return root


def test_vehicleid_protocol_one_gallery_image_per_id(tmp_path: Path):
    test_rows = [(100 + i, 20 + i % 4) for i in range(12)]  # 4 ids, 3 images each
    make_vehicleid(tmp_path, test_rows)
    assert detect_format(tmp_path) == "vehicleid"
    ds = load_dataset(tmp_path)
    assert [(r.name, r.vehicle_id) for r in ds["train"]] == [
        ("1.jpg", 10),
        ("2.jpg", 10),
        ("3.jpg", 11),
    ]
    gallery, query = ds["gallery"], ds["query"]
    assert sorted(r.vehicle_id for r in gallery) == [20, 21, 22, 23]
    assert len(query) == 8
    assert {r.name for r in gallery} | {r.name for r in query} == {f"{i}.jpg" for i, _ in test_rows}
    assert {r.camera for r in ds} == {0}
    # Same seed and draw → same split; the 10 draws do not all agree.
    again = load_dataset(tmp_path, format="vehicleid")
    assert again.splits == ds.splits
    draws = {tuple(r.name for r in load_dataset(tmp_path, draw=d)["gallery"]) for d in range(10)}
    assert len(draws) > 1


def test_vehicleid_gallery_mask_picks_exactly_one_per_id():
    vids = np.repeat(np.arange(50), 5)
    for draw in range(10):
        mask = gallery_mask(vids, seed=3, draw=draw)
        assert np.array_equal(np.bincount(vids[mask]), np.ones(50, dtype=np.int64))
    assert not np.array_equal(gallery_mask(vids, draw=0), gallery_mask(vids, draw=1))


def test_vehicleid_options_are_checked(tmp_path: Path):
    make_vehicleid(tmp_path, [(100, 1), (101, 1)])
    with pytest.raises(DatasetError, match=r"test_list_1600\.txt"):
        load_dataset(tmp_path, test_size=1600)
    with pytest.raises(DatasetError, match="test_size 500"):
        load_dataset(tmp_path, test_size=500)
    with pytest.raises(DatasetError, match="draw 10"):
        load_dataset(tmp_path, draw=10)


def test_folder_layout_with_csv(tmp_path: Path):
    write_images(tmp_path / "train" / "12", ["b.jpg", "a.jpg"])
    write_images(tmp_path / "train" / "3", ["c.png"])
    write_images(tmp_path / "query" / "12", ["q.jpg"])
    write_images(tmp_path / "gallery" / "12", ["g.jpg"])
    write_images(tmp_path / "gallery", ["unknown.jpg"])
    # hidden files and folders are never images: macOS metadata, an interrupted write, a notebook
    write_images(tmp_path / "train" / "12", ["._a.jpg", ".a.x1y2.tmp.jpg"])
    write_images(tmp_path / "train" / ".ipynb_checkpoints", ["a.jpg"])
    (tmp_path / "labels.csv").write_text(
        "split,image,camera,track,color,type\n"
        "train,12/a.jpg,4,0,red,suv\n"
        "train,3/c.png,5,,9,\n"
        "query,12/q.jpg,7,,,\n"
    )
    assert detect_format(tmp_path) == "folder"
    ds = load_dataset(tmp_path)
    root = tmp_path.resolve()
    train = ds["train"]
    assert [r.name for r in train] == ["3/c.png", "12/a.jpg", "12/b.jpg"]
    assert [r.vehicle_id for r in train] == [3, 12, 12]
    assert [r.camera for r in train] == [5, 4, None]
    assert [r.track for r in train] == [None, 0, None]
    assert [(r.color, r.type) for r in train] == [(9, None), (4, 1), (None, None)]
    assert train[1].path == root / "train" / "12" / "a.jpg"
    assert ds["query"][0].camera == 7
    assert [(r.name, r.vehicle_id) for r in ds["gallery"]] == [
        ("unknown.jpg", None),
        ("12/g.jpg", 12),
    ]


def test_load_from_config_passes_the_format_options(tmp_path: Path):
    from vreid.core.config import load_config
    from vreid.data import load_from_config

    make_vehicleid(tmp_path, [(100 + i, i % 3) for i in range(9)])
    cfg = load_config(None, [f"data.root={tmp_path}", "data.vehicleid_draw=3"])
    assert load_from_config(cfg.data).splits == load_dataset(tmp_path, draw=3).splits
    with pytest.raises(DatasetError, match=r"data\.root is not set"):
        load_from_config(load_config().data)


def test_image_paths_skip_hidden_files_folders_and_folder_links(tmp_path: Path):
    from vreid.data.image_datasets import image_paths

    write_images(tmp_path / "b", ["2.png", "._2.png"])
    write_images(tmp_path / ".cache", ["3.jpg"])
    write_images(tmp_path, ["1.JPG", ".1.ab12.tmp.jpg"])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "b")  # not followed: its images would come twice
    assert [p.relative_to(tmp_path).as_posix() for p in image_paths(tmp_path)] == [
        "1.JPG",
        "b/2.png",
    ]
