"""Every kind of bad input gives a DatasetError naming the file (and line) and what is wrong."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from dataset_helpers import make_aic20, write_images

from vreid.core.errors import DatasetError
from vreid.data import ImageRecord, load_dataset, write_aic


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# Each case: (edit of a valid AIC20 tree, file named in the error, pattern of the message).
CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "missing image": (
        lambda r: (r / "image_train" / "000003.jpg").unlink(),
        "name_train.txt",
        r"line 3: lists image '000003\.jpg', which is missing from .*image_train",
    ),
    "label file does not parse": (
        lambda r: _edit(r / "train_label.xml", 'cameraID="c027" />', 'cameraID="c027 />'),
        "train_label.xml",
        r"line \d+: label file does not parse as XML",
    ),
    "vehicle id not a number": (
        lambda r: _edit(r / "train_label.xml", 'vehicleID="0001"', 'vehicleID="x1"'),
        "train_label.xml",
        r"line 6: vehicleID 'x1' is not an integer",
    ),
    "camera id malformed": (
        lambda r: _edit(r / "train_label.xml", 'cameraID="c036"', 'cameraID="cam36"'),
        "train_label.xml",
        r"line 7: cameraID 'cam36'",
    ),
    "name escapes root (..)": (
        lambda r: _edit(r / "name_query.txt", "000002.jpg", "../image_train/000001.jpg"),
        "name_query.txt",
        r"line 2: image name '\.\./image_train/000001\.jpg' escapes the dataset root",
    ),
    "name is absolute": (
        lambda r: _edit(r / "name_test.txt", "000001.jpg", "/etc/passwd"),
        "name_test.txt",
        r"line 1: image name '/etc/passwd' escapes the dataset root",
    ),
    "label name escapes root": (
        lambda r: (
            _edit(r / "train_label.xml", 'imageName="000004.jpg"', 'imageName="../x.jpg"'),
            (r / "name_train.txt").unlink(),
        ),
        "train_label.xml",
        r"line 7: image name '\.\./x\.jpg' escapes",
    ),
    "duplicate name in name file": (
        lambda r: _edit(r / "name_test.txt", "000003.jpg", "000001.jpg"),
        "name_test.txt",
        r"line 3: duplicate image name '000001\.jpg' \(first listed at .*line 1\)",
    ),
    "duplicate name in label file": (
        lambda r: (
            _edit(r / "train_label.xml", 'imageName="000002.jpg"', 'imageName="000001.jpg"'),
            (r / "name_train.txt").unlink(),
        ),
        "train_label.xml",
        r"line 5: duplicate image name '000001\.jpg'",
    ),
    "name and label files disagree": (
        lambda r: _edit(r / "train_label.xml", 'imageName="000004.jpg"', 'imageName="000009.jpg"'),
        "name_train.txt",
        r"line 4: image '000004\.jpg' has no Item in .*train_label\.xml",
    ),
    "track index out of range": (
        lambda r: (r / "test_track_id.txt").write_text("3 \n1 2 4 \n"),
        "test_track_id.txt",
        r"line 2: track index 4 out of range; the split has 3 images",
    ),
    "track index zero": (
        lambda r: (r / "train_track_id.txt").write_text("0 1 \n"),
        "train_track_id.txt",
        r"line 1: track index 0 out of range",
    ),
    "track entry not a number": (
        lambda r: (r / "train_track_id.txt").write_text("1 2 \n3 x4 \n"),
        "train_track_id.txt",
        r"line 2: track entry 'x4' is not an image index",
    ),
    "image in two tracks": (
        lambda r: (r / "train_track_id.txt").write_text("1 2 \n3 2 \n"),
        "train_track_id.txt",
        r"line 2: image '000002\.jpg' is already in track 0",
    ),
    "track names an unknown image": (
        lambda r: (
            (r / "test_track_id.txt").unlink(),
            (r / "test_track.txt").write_text("000003.jpg ../000001.jpg \n"),
        ),
        "test_track.txt",
        r"line 1: track lists image '\.\./000001\.jpg', not in the split",
    ),
    "empty split": (
        lambda r: (r / "name_query.txt").write_text("\n"),
        "name_query.txt",
        r"the query split is empty",
    ),
    "label file without items": (
        lambda r: (
            (r / "train_label.xml").write_text(
                '<?xml version="1.0" encoding="gb2312"?>\n<TrainingImages>\n<Items number="0">\n'
                "</Items>\n</TrainingImages>\n"
            ),
            (r / "name_train.txt").unlink(),
        ),
        "train_label.xml",
        r"the train split is empty",
    ),
    "image folder missing": (
        lambda r: (
            [p.unlink() for p in (r / "image_query").iterdir()] and (r / "image_query").rmdir()
        ),
        "name_query.txt",
        r"lists the query images, but their folder .*image_query is missing",
    ),
    "colour id out of range": (
        lambda r: _edit(
            r / "train_label.xml", 'cameraID="c026" />', 'cameraID="c026" colorID="12" />'
        ),
        "train_label.xml",
        r"line 4: colorID 12 outside the AIC colour ids 0\.\.11",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_aic_input_names_file_and_problem(tmp_path: Path, case: str):
    make_aic20(tmp_path)
    load_dataset(tmp_path)  # valid before the edit
    edit, file_name, pattern = CASES[case]
    edit(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    message = str(err.value)
    assert str(tmp_path.resolve() / file_name) in message
    assert re.search(pattern, message), message


def test_unknown_format_lists_known_formats(tmp_path: Path):
    (tmp_path / "something").mkdir()
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "aic20, aic20-sim, aic21, aic21-sim, veri776, vehicleid, veriwild, folder" in str(
        err.value
    )
    with pytest.raises(DatasetError, match=r"unknown dataset format 'market1501'.*veri776"):
        load_dataset(tmp_path, format="market1501")


def test_missing_root_is_an_error(tmp_path: Path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "nope")


def test_veri_label_file_that_does_not_parse(tmp_path: Path):
    write_images(tmp_path / "image_train", ["0001_c001_00016450_0.jpg"])
    (tmp_path / "list_color.txt").write_text("1 yellow\n")
    (tmp_path / "train_label.xml").write_text(
        '<?xml version="1.0" encoding="gb2312"?>\n<TrainingImages>\n<Items>\n'
        '<Item imageName="0001_c001_00016450_0.jpg" vehicleID="0001" cameraID="c001"\n'
        "</Items>\n</TrainingImages>\n"
    )
    with pytest.raises(DatasetError, match=r"train_label\.xml, line 5: label file does not parse"):
        load_dataset(tmp_path)


def test_vehicleid_bad_line(tmp_path: Path):
    write_images(tmp_path / "image", ["1.jpg", "2.jpg"])
    (tmp_path / "train_test_split").mkdir()
    (tmp_path / "train_test_split" / "test_list_800.txt").write_text("1 5\n2 5 7\n")
    with pytest.raises(DatasetError, match=r"test_list_800\.txt, line 2: expected '<imgid> <vid>'"):
        load_dataset(tmp_path)


def test_vehicleid_missing_image(tmp_path: Path):
    write_images(tmp_path / "image", ["1.jpg"])
    (tmp_path / "train_test_split").mkdir()
    (tmp_path / "train_test_split" / "test_list_800.txt").write_text("1 5\n2 5\n")
    with pytest.raises(DatasetError, match=r"test_list_800\.txt, line 2: lists image '2\.jpg'"):
        load_dataset(tmp_path)


def test_folder_bad_inputs(tmp_path: Path):
    write_images(tmp_path / "train" / "7", ["a.jpg"])
    (tmp_path / "labels.csv").write_text("split,image,colour\ntrain,7/a.jpg,red\n")
    with pytest.raises(DatasetError, match=r"labels\.csv, line 1: header .*unknown: colour"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("split,image,color\ntrain,../7/a.jpg,red\n")
    with pytest.raises(
        DatasetError, match=r"labels\.csv, line 2: image name '\.\./7/a\.jpg' escapes"
    ):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("split,image,color\ntrain,7/a.jpg,mauve\n")
    with pytest.raises(DatasetError, match=r"labels\.csv, line 2: color 'mauve'"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("split,image\ntrain,7/a.jpg\ntrain,7/a.jpg\n")
    with pytest.raises(DatasetError, match=r"labels\.csv, line 3: duplicate row"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").unlink()
    write_images(tmp_path / "train" / "blue-car", ["b.jpg"])
    with pytest.raises(DatasetError, match=r"train/blue-car: folder name is not an integer"):
        load_dataset(tmp_path)
    (tmp_path / "query").mkdir()
    (tmp_path / "train" / "blue-car" / "b.jpg").unlink()
    (tmp_path / "train" / "blue-car").rmdir()
    with pytest.raises(DatasetError, match=r"query: the query split is empty"):
        load_dataset(tmp_path)


def test_writer_refuses_bad_records(tmp_path: Path):
    root = tmp_path.resolve()
    write_images(root / "image_train", ["000001.jpg"])
    good = ImageRecord(root / "image_train" / "000001.jpg", "000001.jpg", "train", 1, 1)
    missing = ImageRecord(root / "image_train" / "000002.jpg", "000002.jpg", "train", 1, 1)
    with pytest.raises(DatasetError, match=r"image_train/000002\.jpg does not exist"):
        write_aic(root, {"train": [good, missing]})
    with pytest.raises(DatasetError, match="duplicate image name"):
        write_aic(root, {"train": [good, good]})
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        write_aic(root, {"train": [ImageRecord(root / "x.jpg", "../x.jpg", "train")]})
    with pytest.raises(DatasetError, match="train split is empty"):
        write_aic(root, {"train": []})
    with pytest.raises(DatasetError, match="simulation layout has only a train split"):
        write_aic(root, {"train": [good], "query": [good]}, simulation=True)
    with pytest.raises(DatasetError, match="extra attribute 'colorID'"):
        write_aic(root, {"train": [good]}, extra_attributes={"000001.jpg": {"colorID": "3"}})
    assert not (root / "train_label.xml").exists()  # nothing half-written
