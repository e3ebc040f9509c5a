"""AIC readers on hand-written label files (as DATASETS.md shows them) and the writer round trip."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from dataset_helpers import GB2312_HEADER, aic_names, make_aic20, write_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vreid.data import ImageRecord, detect_format, load_dataset, write_aic


def test_aic20_real_hand_written(tmp_path: Path):
    make_aic20(tmp_path, crlf=True)
    assert detect_format(tmp_path) == "aic20"
    ds = load_dataset(tmp_path)
    root = tmp_path.resolve()
    assert ds.format == "aic20"
    assert ds.root == root
    train = ds["train"]
    assert [r.name for r in train] == aic_names(4)
    assert [r.vehicle_id for r in train] == [269, 269, 1, 1]
    assert [r.camera for r in train] == [26, 27, 1, 36]
    assert [r.track for r in train] == [0, 0, 1, 1]
    assert train[0].path == root / "image_train" / "000001.jpg"
    assert all(r.color is None and r.type is None for r in train)
    # No labels are published for query and test.
    assert [r.vehicle_id for r in ds["query"]] == [None, None]
    assert [r.camera for r in ds["query"]] == [None, None]
    assert [r.track for r in ds["query"]] == [None, None]
    assert [r.track for r in ds["gallery"]] == [1, 1, 0]
    assert {r.split for r in ds["gallery"]} == {"gallery"}
    assert not ds.has_ground_truth


def test_aic20_name_form_tracks_give_the_same_records(tmp_path: Path):
    make_aic20(tmp_path)
    by_index = load_dataset(tmp_path).splits
    (tmp_path / "train_track_id.txt").unlink()
    (tmp_path / "test_track_id.txt").unlink()
    assert load_dataset(tmp_path).splits == by_index


def test_gb2312_encoded_label_file_with_non_ascii_comment(tmp_path: Path):
    make_aic20(tmp_path)
    text = (tmp_path / "train_label.xml").read_text()
    text = text.replace("<Items", "<!-- 车辆标签 -->\n<Items", 1)
    (tmp_path / "train_label.xml").write_bytes(text.encode("gb2312"))
    ds = load_dataset(tmp_path)
    assert [r.vehicle_id for r in ds["train"]] == [269, 269, 1, 1]


def test_aic21_label_files_and_name_form_tracks(tmp_path: Path):
    write_images(tmp_path / "image_train", aic_names(3))
    write_images(tmp_path / "image_query", aic_names(2))
    write_images(tmp_path / "image_test", aic_names(2))
    (tmp_path / "train_label.xml").write_text(
        f'{GB2312_HEADER}\n<TrainingImages Version="1.0">\n<Items number="3">\n'
        '<Item imageName="000003.jpg" vehicleID="0440" cameraID="c040" />\n'
        '<Item imageName="000001.jpg" vehicleID="0002" cameraID="c001" />\n'
        '<Item imageName="000002.jpg" vehicleID="0002" cameraID="c002" />\n'
        "</Items>\n</TrainingImages>\n"
    )
    (tmp_path / "query_label.xml").write_text(
        f'{GB2312_HEADER}\n<QueryImages>\n<Items number="2">\n'
        '<Item imageName="000001.jpg" cameraID="c041" />\n'
        '<Item imageName="000002.jpg" cameraID="c042" />\n'
        "</Items>\n</QueryImages>\n"
    )
    (tmp_path / "test_label.xml").write_text(
        f'{GB2312_HEADER}\n<TestImages>\n<Items number="2">\n'
        '<Item imageName="000001.jpg" cameraID="c041" />\n'
        '<Item imageName="000002.jpg" cameraID="c046" />\n'
        "</Items>\n</TestImages>\n"
    )
    (tmp_path / "train_track.txt").write_text("000002.jpg 000001.jpg \n000003.jpg \n")
    (tmp_path / "test_track.txt").write_text("000002.jpg 000001.jpg \n")
    assert detect_format(tmp_path) == "aic21"
    ds = load_dataset(tmp_path)
    # Without name files the label file gives the order.
    assert [r.name for r in ds["train"]] == ["000003.jpg", "000001.jpg", "000002.jpg"]
    assert [r.vehicle_id for r in ds["train"]] == [440, 2, 2]
    assert [r.track for r in ds["train"]] == [1, 0, 0]
    assert [r.camera for r in ds["query"]] == [41, 42]
    assert [r.vehicle_id for r in ds["query"]] == [None, None]
    assert [r.camera for r in ds["gallery"]] == [41, 46]
    assert [r.track for r in ds["gallery"]] == [0, 0]


def test_aic20_simulation_hand_written(tmp_path: Path):
    names = ["00001_c006_1.jpg", "00001_c007_2.jpg", "00002_c006_1.jpg"]
    write_images(tmp_path / "image_train", names)
    (tmp_path / "train_label.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<TrainingImages Version="1.0">\n'
        '<Items number="3">\n'
        # Ids come from the XML, not from the file names.
        '<Item imageName="00001_c006_1.jpg" vehicleID="0101" cameraID="c006" colorID="9" '
        'typeID="1" orientation="37.5" lightInt="0.8" lightDir="120" camHei="10.2" camDis="30" />\n'
        '<Item imageName="00001_c007_2.jpg" vehicleID="0101" cameraID="c007" colorID="9" '
        'typeID="1" orientation="210.0" />\n'
        '<Item imageName="00002_c006_1.jpg" vehicleID="0555" cameraID="c006" colorID="11" '
        'typeID="10" orientation="0" />\n'
        "</Items>\n</TrainingImages>\n"
    )
    assert detect_format(tmp_path) == "aic20-sim"
    ds = load_dataset(tmp_path)
    assert list(ds.splits) == ["train"]
    train = ds["train"]
    assert [r.vehicle_id for r in train] == [101, 101, 555]
    assert [(r.color, r.type) for r in train] == [(9, 1), (9, 1), (11, 10)]
    assert ds.extra_attributes["train"]["00001_c006_1.jpg"] == {
        "orientation": "37.5",
        "lightInt": "0.8",
        "lightDir": "120",
        "camHei": "10.2",
        "camDis": "30",
    }
    assert ds.extra_attributes["train"]["00002_c006_1.jpg"] == {"orientation": "0"}


def test_aic21_simulation_uses_sys_image_train(tmp_path: Path):
    write_images(tmp_path / "sys_image_train", ["a.jpg", "b.jpg"])
    (tmp_path / "train_label.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<TrainingImages>\n<Items number="2">\n'
        '<Item imageName="a.jpg" vehicleID="7" cameraID="c001" colorID="0" typeID="0" />\n'
        '<Item imageName="b.jpg" vehicleID="8" cameraID="c002" colorID="1" typeID="2" />\n'
        "</Items>\n</TrainingImages>\n"
    )
    assert detect_format(tmp_path) == "aic21-sim"
    ds = load_dataset(tmp_path)
    assert [r.path for r in ds["train"]] == [
        tmp_path.resolve() / "sys_image_train" / n for n in ("a.jpg", "b.jpg")
    ]
    assert [r.vehicle_id for r in ds["train"]] == [7, 8]


def test_writer_output_matches_the_documented_layout(tmp_path: Path):
    root = tmp_path.resolve()
    write_images(root / "image_train", aic_names(3))
    write_images(root / "image_query", aic_names(1))
    write_images(root / "image_test", aic_names(2))
    splits = {
        "train": [
            ImageRecord(root / "image_train" / n, n, "train", 269, 26, track=t)
            for n, t in zip(aic_names(3), (1, 0, 1), strict=True)
        ],
        "query": [ImageRecord(root / "image_query" / "000001.jpg", "000001.jpg", "query", 5, 3)],
        "gallery": [
            ImageRecord(root / "image_test" / n, n, "gallery", 5, 4, track=0) for n in aic_names(2)
        ],
    }
    write_aic(root, splits)
    label = (root / "train_label.xml").read_bytes()
    assert label.startswith(b'<?xml version="1.0" encoding="gb2312"?>\n<TrainingImages')
    assert label.isascii()
    assert b'<Items number="3">' in label
    assert b'<Item imageName="000001.jpg" vehicleID="0269" cameraID="c026" />' in label
    assert (root / "name_train.txt").read_text() == "000001.jpg\n000002.jpg\n000003.jpg\n"
    assert (root / "train_track_id.txt").read_text() == "2 \n1 3 \n"
    assert (root / "train_track.txt").read_text() == "000002.jpg \n000001.jpg 000003.jpg \n"
    assert (root / "test_track_id.txt").read_text() == "1 2 \n"
    query_label = (root / "query_label.xml").read_text()
    assert '<Item imageName="000001.jpg" vehicleID="0005" cameraID="c003" />' in query_label
    assert not (root / "query_track_id.txt").exists()
    ds = load_dataset(root)
    assert ds.splits == splits
    assert ds.has_ground_truth


def test_simulation_round_trip_with_extra_attributes(tmp_path: Path):
    root = tmp_path.resolve()
    names = ["00001_c006_1.jpg", "00002_c006_1.jpg"]
    write_images(root / "image_train", names)
    records = [
        ImageRecord(root / "image_train" / names[0], names[0], "train", 1, 6, None, 3, 4),
        ImageRecord(root / "image_train" / names[1], names[1], "train", 2, 6, None, 11, 10),
    ]
    extras = {names[0]: {"orientation": "90.0", "lightInt": "0.5", "camHei": 'a<b&"c"'}}
    write_aic(root, {"train": records}, simulation=True, extra_attributes=extras)
    text = (root / "train_label.xml").read_text()
    assert 'colorID="3" typeID="4" orientation="90.0"' in text
    assert not (root / "name_train.txt").exists()
    ds = load_dataset(root)
    assert ds.format == "aic20-sim"
    assert ds["train"] == records
    assert ds.extra_attributes == {"train": extras}


split_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 4)),  # track
        st.one_of(st.none(), st.integers(0, 999)),  # vehicle id
        st.one_of(st.none(), st.integers(0, 40)),  # camera
        st.one_of(st.none(), st.integers(0, 11)),  # colour
        st.one_of(st.none(), st.integers(0, 10)),  # type
    ),
    min_size=1,
    max_size=9,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    train=split_strategy,
    query=split_strategy,
    gallery=split_strategy,
    order=st.randoms(use_true_random=False),
)
def test_write_then_read_round_trips_exactly(train, query, gallery, order):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        splits = {}
        for split, folder, rows in (
            ("train", "image_train", train),
            ("query", "image_query", query),
            ("gallery", "image_test", gallery),
        ):
            names = aic_names(len(rows))
            order.shuffle(names)  # file order need not be sorted
            write_images(root / folder, names)
            splits[split] = [
                ImageRecord(root / folder / n, n, split, *row[1:3], row[0], *row[3:])
                for n, row in zip(names, rows, strict=True)
            ]
        write_aic(root, splits)
        ds = load_dataset(root)
        assert ds.splits == splits
        # Both track-file forms describe the same tracks.
        for stem in ("train", "test"):
            (root / f"{stem}_track_id.txt").unlink(missing_ok=True)
        assert load_dataset(root).splits == splits


def test_items_number_disagreeing_with_the_items_warns_with_the_file(tmp_path: Path):
    root = make_aic20(tmp_path / "aic")
    label = root / "train_label.xml"
    label.write_bytes(label.read_bytes().replace(b'number="4"', b'number="5"'))
    with pytest.warns(UserWarning, match=r"train_label\.xml, line 3: Items number=5 but .* 4 Item"):
        ds = load_dataset(root)
    assert len(ds["train"]) == 4
