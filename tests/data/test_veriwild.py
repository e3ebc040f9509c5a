"""VERI-Wild (fast-reid's layout) on a small hand-written tree: the three test sets, cameras and
attributes from vehicle_info.txt, detection, the config option, and the errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dataset_helpers import write_images

from vreid.core.config import load_config
from vreid.core.errors import ConfigError, DatasetError
from vreid.data import detect_format, load_dataset, load_from_config
from vreid.data.attributes import AIC_COLORS, AIC_TYPES

HEADER = "id/image;Camera ID;Time;Model;Type;Color"
# vid/imgid;camera;time;model;type;colour
INFO = [
    "00001/000001;24;2015-12-02 16:45:16;Audi A6;Sedan;Black",
    "00001/000002;25;2015-12-02 16:47:01;Audi A6;Sedan;Black",
    "00002/000003;24;2015-12-03 08:01:13;Haval H6;SUV;White",
    "00003/000004;7;2015-12-04 10:11:12;Toyota Hiace;Van;Grey",
    "00003/000005;8;2015-12-04 10:13:00;Toyota Hiace;Van;Grey",
    "00003/000006;9;2015-12-04 10:20:30;Toyota Hiace;Van;Grey",
    "00004/000007;7;2015-12-05 18:00:00;Isuzu;HGV;Silver",
    "00004/000008;11;2015-12-05 18:05:00;Isuzu;HGV;Silver",
    "00005/000009;3;2015-12-06 09:00:00;Ford;pickup;Red",
    "00005/000010;4;2015-12-06 09:02:00;Ford;pickup;Red",
]
LISTS = {
    "train_list.txt": ["00001/000001", "00001/000002", "00002/000003"],
    "test_3000.txt": ["00003/000005", "00003/000006", "00004/000008"],
    "test_3000_query.txt": ["00003/000004", "00004/000007"],
    "test_5000.txt": ["00003/000005", "00004/000008", "00005/000010"],
    "test_5000_query.txt": ["00003/000004", "00005/000009"],
}


def make_veriwild(root: Path, *, info: list[str] | None = None) -> Path:
    write_images(root / "images", [f"{line.split(';')[0]}.jpg" for line in INFO])
    split = root / "train_test_split"
    split.mkdir(parents=True)
    for name, lines in LISTS.items():
        (split / name).write_text("\n".join(lines) + "\n")
    (split / "vehicle_info.txt").write_text("\n".join([HEADER, *(info or INFO)]) + "\n")
    return root


def test_veriwild_splits_cameras_and_attributes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_veriwild(tmp_path / "VERI-Wild")
    assert detect_format(root) == "veriwild"
    with caplog.at_level(logging.WARNING, logger="vreid.data"):
        ds = load_dataset(root)  # test_size 3000 by default
    assert ds.format == "veriwild"
    assert [r.name for r in ds["train"]] == [
        "00001/000001.jpg",
        "00001/000002.jpg",
        "00002/000003.jpg",
    ]
    assert ds["train"][0].path == (root / "images" / "00001" / "000001.jpg").resolve()
    assert [(r.vehicle_id, r.camera) for r in ds["train"]] == [(1, 24), (1, 25), (2, 24)]
    assert [(r.vehicle_id, r.camera) for r in ds["query"]] == [(3, 7), (4, 7)]
    assert [(r.vehicle_id, r.camera) for r in ds["gallery"]] == [(3, 8), (3, 9), (4, 11)]
    sedan, suv, van, truck = (AIC_TYPES.index(t) for t in ("sedan", "suv", "van", "truck"))
    black, white, gray = (AIC_COLORS.index(c) for c in ("black", "white", "gray"))
    assert [(r.color, r.type) for r in ds["train"]] == [
        (black, sedan),
        (black, sedan),
        (white, suv),
    ]
    # Grey → gray, HGV (heavy goods vehicle) → truck; Silver has no AIC colour: unknown
    assert [(r.color, r.type) for r in ds["query"]] == [(gray, van), (None, truck)]
    assert ds.extra_attributes["query"]["00004/000007.jpg"] == {
        "time": "2015-12-05 18:00:00",
        "model": "Isuzu",
        "type_name": "HGV",
        "color_name": "Silver",
    }
    (warning,) = [r.getMessage() for r in caplog.records if "no AIC" in r.getMessage()]
    assert "colour 'Silver' (2 images)" in warning

    medium = load_dataset(root, test_size=5000)
    assert [r.name for r in medium["query"]] == ["00003/000004.jpg", "00005/000009.jpg"]
    assert [r.type for r in medium["query"]] == [van, AIC_TYPES.index("pickup")]
    assert len(medium["gallery"]) == 3
    assert medium["train"] == ds["train"]


def test_veriwild_test_size_comes_from_the_config(tmp_path: Path) -> None:
    root = make_veriwild(tmp_path / "VERI-Wild")
    cfg = load_config(None, [f"data.root={root}", "data.veriwild_test_size=5000"])
    assert load_from_config(cfg.data).splits == load_dataset(root, test_size=5000).splits
    assert load_config(None).data.veriwild_test_size == 3000
    with pytest.raises(ConfigError, match="veriwild_test_size"):
        load_config(None, ["data.veriwild_test_size=4000"])
    # the large set is not in this tree: the error names the file and the sets present
    with pytest.raises(DatasetError, match=r"test_10000\.txt: .*test sets present: 3000, 5000"):
        load_dataset(root, "veriwild", test_size=10000)


@pytest.mark.parametrize(
    ("file", "line", "text", "message"),
    [
        ("vehicle_info.txt", 3, "00001/000002", r"vehicle_info\.txt, line 3: expected '<vid>/<imgid>;<camera>"),
        ("vehicle_info.txt", 4, "00002/000003;c24;t;m;SUV;White", r"vehicle_info\.txt, line 4: camera id 'c24' is not a number"),
        ("vehicle_info.txt", 5, "00001/000001;24;t;m;Sedan;Black", r"vehicle_info\.txt, line 5: image '00001/000001' is already described at .*line 2"),
        ("train_list.txt", 2, "00001/..", r"train_list\.txt, line 2: image name '00001/\.\.' escapes the dataset root"),
        ("train_list.txt", 1, "/etc/passwd", r"train_list\.txt, line 1: expected '<vehicle id>/<image id>'"),
        ("train_list.txt", 3, "../000003", r"train_list\.txt, line 3: vehicle id '\.\.' is not a number"),
        ("test_3000.txt", 2, "00009/000099", r"test_3000\.txt, line 2: lists image '00009/000099\.jpg', which is missing"),
        ("test_3000_query.txt", 1, "00003/000005", r"test_3000_query\.txt, line 1: image '00003/000005\.jpg' has no line in"),
    ],
)  # fmt: skip
def test_veriwild_bad_input_names_file_and_line(
    tmp_path: Path, file: str, line: int, text: str, message: str
) -> None:
    root = make_veriwild(tmp_path / "VERI-Wild")
    path = root / "train_test_split" / file
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    if file == "test_3000_query.txt":  # an image the list names but vehicle_info does not describe
        info = root / "train_test_split" / "vehicle_info.txt"
        info.write_text("\n".join(x for x in info.read_text().splitlines() if "000005" not in x))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_veriwild_needs_vehicle_info(tmp_path: Path) -> None:
    root = make_veriwild(tmp_path / "VERI-Wild")
    (root / "train_test_split" / "vehicle_info.txt").rename(root / "vehicle_info.txt")
    assert len(load_dataset(root)["train"]) == 3  # also found at the root
    (root / "vehicle_info.txt").unlink()
    with pytest.raises(
        DatasetError, match=r"vehicle_info\.txt: VERI-Wild's vehicle_info\.txt not found"
    ):
        load_dataset(root)
