"""The readers on real copies of the AIC20 and VehicleID label files (with placeholder images) in
/work/shared/realfmt; skipped where that folder is absent. The folder is only read: tests that
change files work on a copy in tmp_path."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest
from dataset_helpers import write_images

from vreid.core.errors import DatasetError
from vreid.data import detect_format, load_dataset
from vreid.data.attributes import AIC_COLORS, AIC_TYPES
from vreid.data.vehicleid import VehicleAttributes, read_vehicle_attributes

REALFMT = Path("/work/shared/realfmt")
pytestmark = pytest.mark.skipif(not REALFMT.is_dir(), reason=f"{REALFMT} is not on this machine")
AIC20 = REALFMT / "AIC20_ReID"
VEHICLEID = REALFMT / "VehicleID"


# ------------------------------------------------------------------------------------------
# AIC20: train_track.txt (name form) lacks one image of each track


def _id_form_tracks(root: Path) -> list[list[str]]:
    names = [n.strip() for n in (root / "name_train.txt").read_text().splitlines() if n.strip()]
    lines = (root / "train_track_id.txt").read_text().splitlines()
    return [[names[int(i) - 1] for i in line.split()] for line in lines]


def test_real_aic20_files_read_as_shipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vreid.data"):
        ds = load_dataset(AIC20)
    assert not [r for r in caplog.records if "no track" in r.getMessage()]  # id form: complete
    assert ds.format == "aic20"
    assert {s: len(r) for s, r in ds.splits.items()} == {"train": 67, "query": 8, "gallery": 51}
    first = ds["train"][0]
    assert (first.name, first.vehicle_id, first.camera) == ("000066.jpg", 319, 40)
    assert all(r.track is not None for r in ds["train"])
    assert len({r.track for r in ds["train"]}) == 13
    assert all(r.track is not None for r in ds["gallery"])
    assert len({r.track for r in ds["gallery"]}) == 3


def test_name_form_tracks_warn_once_how_many_train_images_have_no_track(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "AIC20_ReID"
    shutil.copytree(AIC20, root)
    id_form = _id_form_tracks(root)
    (root / "train_track_id.txt").unlink()
    name_lines = (root / "train_track.txt").read_text().splitlines()
    assert len(name_lines) == len(id_form) == 13
    assert sum(not line.strip() for line in name_lines) == 3  # single-image tracks: empty lines

    with caplog.at_level(logging.WARNING, logger="vreid.data"):
        ds = load_dataset(root)
        load_dataset(root)  # read again: no second warning
    warnings = [r for r in caplog.records if "have no track" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(root / "train_track.txt") in message
    assert "13 of 67 train images have no track" in message
    assert "train_track_id.txt" in message

    untracked = {r.name for r in ds["train"] if r.track is None}
    # exactly the last image of each line of the id form is missing from the name form
    assert untracked == {line[-1] for line in id_form}
    # the others keep the track (line number) the id form gives them
    for r in ds["train"]:
        if r.track is not None:
            assert r.name in id_form[r.track]
    # the test split's name form is complete: no warning for it, every gallery image tracked
    assert all(r.track is not None for r in ds["gallery"])


# ------------------------------------------------------------------------------------------
# VehicleID: attribute/ colour and model files


def test_vehicleid_real_attribute_files() -> None:
    attrs = read_vehicle_attributes(VEHICLEID)
    assert len(attrs) == 10309
    colours = Counter(a.color_name for a in attrs.values() if a.color_name is not None)
    assert colours == {
        "black": 2862,
        "white": 2507,
        "sliver": 2193,
        "gray": 1726,
        "red": 673,
        "blue": 86,
        "yellow": 39,
    }
    assert sum(a.model is not None for a in attrs.values()) == 10309
    # colour by name; VehicleID's "sliver" (silver) has no AIC colour and stays unknown
    mapped = Counter(AIC_COLORS[a.color] for a in attrs.values() if a.color is not None)
    assert mapped == {k: v for k, v in colours.items() if k != "sliver"}
    assert sum(a.color is not None for a in attrs.values()) == 10086 - 2193
    # type from the model's body; models sold in several bodies stay unknown
    types = Counter(AIC_TYPES[a.type] for a in attrs.values() if a.type is not None)
    assert types == {
        "sedan": 7066,
        "van": 837,
        "suv": 629,
        "hatchback": 482,
        "mpv": 447,
        "truck": 39,
        "estate": 2,
    }
    assert sum(a.type is None for a in attrs.values()) == 807
    assert attrs[1] == VehicleAttributes("gray", "奇瑞-E5")
    assert (attrs[1].color, attrs[1].type) == (AIC_COLORS.index("gray"), AIC_TYPES.index("sedan"))


def test_vehicleid_records_carry_colour_and_type_from_the_real_files(tmp_path: Path) -> None:
    root = tmp_path / "VehicleID"
    shutil.copytree(VEHICLEID, root)
    # train images of vehicles the real attribute files describe
    rows = [("9000001", 1), ("9000002", 1), ("9000003", 8), ("9000004", 157), ("9000005", 55)]
    rows.append(("9000006", 10))
    write_images(root / "image", [f"{i}.jpg" for i, _ in rows])
    (root / "train_test_split" / "train_list.txt").write_text(
        "".join(f"{i} {v}\n" for i, v in rows)
    )
    assert detect_format(root) == "vehicleid"
    ds = load_dataset(root)
    colour = {c: AIC_COLORS.index(c) for c in ("gray", "black", "white")}
    kind = {t: AIC_TYPES.index(t) for t in ("sedan", "van")}
    assert [(r.vehicle_id, r.color, r.type) for r in ds["train"]] == [
        (1, colour["gray"], kind["sedan"]),  # gray, 奇瑞-E5
        (1, colour["gray"], kind["sedan"]),
        (8, colour["black"], kind["sedan"]),  # black, 别克-君越2009-2013款
        (157, None, kind["van"]),  # sliver (silver: no AIC colour), 五菱荣光2008款 (microvan)
        (55, colour["white"], None),  # white, 福特-福克斯2012款 (sedan and hatchback: no type)
        (10, None, kind["sedan"]),  # no colour line, 现代-名驭
    ]
    assert ds.extra_attributes["train"]["9000004.jpg"] == {
        "color_name": "sliver",
        "model": "五菱荣光2008款",
    }
    assert ds.extra_attributes["train"]["9000006.jpg"] == {"model": "现代-名驭"}
    # the real test list: its vehicles have no attribute lines, so colour/type stay unknown
    assert len(ds["query"]) + len(ds["gallery"]) == 45
    assert all(r.color is None and r.type is None for r in ds["query"] + ds["gallery"])


def test_vehicleid_bad_attribute_lines_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "VehicleID"
    shutil.copytree(VEHICLEID, root)
    colour_file = root / "attribute" / "color_attr.txt"
    lines = colour_file.read_text().splitlines()
    colour_file.write_text("\n".join([*lines[:4], "27 9", *lines[4:]]) + "\n")
    with pytest.raises(DatasetError, match=r"color_attr\.txt, line 5: color id 9 is not in"):
        load_dataset(root)
    colour_file.write_text("\n".join([*lines[:2], "27 3 red", *lines[2:]]) + "\n")
    with pytest.raises(
        DatasetError, match=r"color_attr\.txt, line 3: expected '<vehicle id> <id>'"
    ):
        load_dataset(root)
    colour_file.write_text("\n".join([*lines, f"{lines[0].split()[0]} 6"]) + "\n")
    with pytest.raises(DatasetError, match=rf"line {len(lines) + 1}: vehicle 1 has color id 6"):
        load_dataset(root)
