"""The promise under bad input and faults: one line naming the file, never a silent wrong number,
never lost work. One test (or a few) per class of fault; small inputs made here, real components."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vreid.core.config import load_config
from vreid.core.errors import CheckpointError, DatasetError, VreidError, WeightsError
from vreid.data import load_dataset, load_from_config
from vreid.data.image_datasets import ReidImageDataset, load_image, worker_errors
from vreid.data.images import MAX_PIXELS, SOURCE_SIZE, ImageReadError, open_image
from vreid.data.inspect import check_images
from vreid.data.records import ImageRecord
from vreid.data.transforms import build_transforms
from vreid.inference.features import load_features, save_features
from vreid.models import build_model
from vreid.models.checkpoint import load_checkpoint, load_model, save_checkpoint

# --------------------------------------------------------------------------------------------
# helpers


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A PNG of a few bytes whose header declares ``width`` × ``height`` pixels."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _noise(path: Path, size=(48, 32), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _reid_checkpoint(path: Path, name: str = "glamor") -> Path:
    torch.manual_seed(0)
    model = build_model(name, 4, backbone="resnet18", pretrained=None)
    cfg = load_config(None, ["model.backbone=resnet18", "model.image_size=[32,32]"])
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "arch": model.arch,
            "config": cfg.model_dump(mode="json"),
            "epoch": 0,
            "vehicle_ids": [1, 2, 3, 4],
            "heads_trained": True,
        },
    )
    return path


# --------------------------------------------------------------------------------------------
# 1. images that lie


def test_decompression_bomb_is_one_line_naming_the_file(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageReadError, match=r"bomb\.png: image declares 900 megapixels"):
        open_image(bomb)
    # just over our own limit (under Pillow's hard one): refused by size, not decoded
    with pytest.raises(DatasetError, match=r"10000×10000 \(100 megapixels\), over the limit"):
        open_image(bomb_png(tmp_path / "b2.png", 10000, 10000), max_pixels=50_000_000)
    assert MAX_PIXELS > 100_000_000  # a 144-megapixel photo is read (reduced), not refused
    bad = check_images([ImageRecord(bomb, "bomb.png", "query")], workers=1, progress=False)
    assert len(bad) == 1
    assert "megapixels" in bad[0].reason


def test_bomb_in_a_dataloader_worker_is_one_line(tmp_path):
    records = [
        ImageRecord(_noise(tmp_path / "a.png"), "a.png", "train", 1),
        ImageRecord(bomb_png(tmp_path / "b.png"), "b.png", "train", 2),
    ]
    ds = ReidImageDataset(records, build_transforms((32, 32), train=False))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    with pytest.raises(DatasetError) as err, worker_errors():
        list(loader)
    text = str(err.value)
    assert "Traceback" not in text
    assert "\n" not in text
    assert text.startswith(f"{tmp_path / 'b.png'}: image declares 900 megapixels")


def test_large_images_are_reduced_on_read_to_what_the_caller_needs(tmp_path):
    Image.new("RGB", (4000, 3000), (200, 10, 10)).save(tmp_path / "big.jpg", quality=80)
    Image.new("RGB", (4000, 3000), (10, 200, 10)).save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        img = open_image(tmp_path / name, target=(256, 128))
        assert img.mode == "RGB"
        assert img.info[SOURCE_SIZE] == (4000, 3000)
        assert img.width >= 256
        assert img.height >= 128
        assert img.width <= 1000  # but reduced well below the file's size
        assert (
            np.abs(
                np.asarray(img, dtype=int)[10, 10]
                - np.asarray(Image.open(tmp_path / name).convert("RGB"), dtype=int)[10, 10]
            ).max()
            < 8
        )
    # the Datasets reduce to their transform's size (the largest Resize of the pipeline)
    ds = ReidImageDataset(
        [ImageRecord(tmp_path / "big.png", "big.png", "train", 1)],
        build_transforms((64, 32), train=False),
    )
    assert ds.target == (32, 64)
    image, _label, _index = ds[0]
    assert tuple(image.shape) == (3, 64, 32)
    # full resolution when nobody asks for less
    assert load_image(tmp_path / "big.png").size == (4000, 3000)


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    good = _noise(tmp_path / "g.png")
    (tmp_path / "t.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "x.jpg").write_text("not an image")
    for name in ("t.png", "x.jpg", "missing.jpg"):
        with pytest.raises(DatasetError, match=rf"{name}: "):
            open_image(tmp_path / name)
    with pytest.raises(DatasetError, match="is a folder"):
        open_image(tmp_path)


# --------------------------------------------------------------------------------------------
# 2. file names that are not valid UTF-8


NASTY = [
    "plain.jpg",
    "bad\udcff\udcfename.jpg",
    "new\nline.jpg",
    "back\\slash.jpg",
    "cr\r.jpg",
    "ünï cødé.jpg",
    "sub/dir.jpg",
    "trail\\",
]


def test_any_file_name_round_trips_through_the_name_index(tmp_path):
    feats = np.eye(len(NASTY), 4, dtype=np.float32)
    save_features(tmp_path / "gallery", feats, NASTY)
    back, names = load_features(tmp_path / "gallery", expected_names=NASTY)
    assert names == NASTY
    np.testing.assert_array_equal(back, feats)
    # the bytes of an undecodable name are written as they are on disk
    assert b"bad\xff\xfename.jpg\n" in (tmp_path / "gallery.names.txt").read_bytes()


def test_a_failed_write_never_leaves_one_file_of_the_pair(tmp_path):
    (tmp_path / "gallery.names.txt").mkdir()  # the index cannot be written there
    with pytest.raises(IsADirectoryError):
        save_features(tmp_path / "gallery", np.zeros((1, 2), np.float32), ["a.jpg"])
    assert not (tmp_path / "gallery.npy").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.names.txt"]


def test_search_with_undecodable_file_names(tmp_path, vreid_cli):
    ckpt = _reid_checkpoint(tmp_path / "m.pt")
    query, gallery = tmp_path / "q", tmp_path / "g"
    query.mkdir()
    gallery.mkdir()
    _noise(query / "q.png", seed=1)
    names = [os.fsdecode(b"bad\xff.png"), "new\nline.png", "plain.png"]
    for i, name in enumerate(names):
        _noise(gallery / name, seed=2 + i)
    proc = vreid_cli(
        "search",
        ckpt,
        "-q",
        query,
        "-g",
        gallery,
        "-o",
        tmp_path / "s",
        "--set",
        "runtime.device=cpu",
        "--set",
        "model.image_size=[32,32]",
        "--no-rerank",
    )
    assert proc.returncode == 0, proc.stderr
    from vreid.core.artefacts import read_names

    assert sorted(read_names(tmp_path / "s" / "gallery.txt")) == sorted(names)
    assert b"bad\xff.png" in (tmp_path / "s" / "ranking.csv").read_bytes()
    proc = vreid_cli("extract", ckpt, gallery, "-o", tmp_path / "f", "-q")
    assert proc.returncode == 0, proc.stderr
    _, got = load_features(tmp_path / "f" / "images")
    assert sorted(got) == sorted(names)


# --------------------------------------------------------------------------------------------
# 3. weights files that are empty or garbage, and PyTorch's weights_only advice


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "empty (0 bytes)"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "a JPEG image"),
        (bytes(range(7, 200)), "neither a zip archive nor a pickle"),
    ],
)
def test_unreadable_weights_are_one_line(tmp_path, content, says):
    from vreid.models.detectors import load_detector

    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=rf"w\.pt: .*{re.escape(says)}"):
        load_detector(None, path)
    with pytest.raises(CheckpointError, match=rf"w\.pt: .*{re.escape(says)}"):
        load_checkpoint(path)
    with pytest.raises(WeightsError, match=rf"w\.pt: .*{re.escape(says)}"):
        build_model("glamor", 3, backbone="resnet18", pretrained=str(path))


def test_never_advise_weights_only_false(tmp_path):
    tmp_path = tmp_path / "d"  # the test's own name holds "weights_only"
    tmp_path.mkdir()
    path = tmp_path / "pickled.pt"
    torch.save({"model": {}, "arch": {"name": "x"}, "extra": Path("/x")}, path)
    for load, error in ((load_checkpoint, CheckpointError),):
        with pytest.raises(error) as err:
            load(path)
        assert "weights_only" not in str(err.value).replace(str(tmp_path), "")
        assert "runs code from the file" in str(err.value)
    with open(tmp_path / "p.pkl", "wb") as fh:
        pickle.dump({"a": 1}, fh)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "p.pkl")
    assert "weights_only" not in str(err.value).replace(str(tmp_path), "")


# --------------------------------------------------------------------------------------------
# 4. symbolic links that leave the dataset root


def _folder_dataset(root: Path) -> Path:
    for split, vid in (("train", 1), ("train", 2), ("query", 1), ("gallery", 2)):
        (root / split / f"{vid:04d}").mkdir(parents=True, exist_ok=True)
        for k in range(2):
            _noise(root / split / f"{vid:04d}" / f"{split}{k}.png", seed=vid * 10 + k)
    return root


def test_links_leaving_the_root_are_refused_unless_opted_in(tmp_path, tiny_synth):
    outside = tmp_path / "outside"
    outside.mkdir()
    # folder layout: an identity folder linked outside
    root = _folder_dataset(tmp_path / "folder")
    shutil.move(root / "train" / "0002", outside / "0002")
    (root / "train" / "0002").symlink_to(outside / "0002")
    with pytest.raises(DatasetError, match=r"train/0002: a symbolic link to .*outside.*--follow"):
        load_dataset(root)
    assert len(load_dataset(root, follow_links=True)["train"]) == 4
    # links that stay inside the root are fine
    (root / "train" / "0002").unlink()
    shutil.copytree(outside / "0002", root / "elsewhere")
    (root / "train" / "0002").symlink_to(root / "elsewhere")
    assert len(load_dataset(root)["train"]) == 4

    # AIC: one image linked outside, then a split folder linked outside
    aic = tmp_path / "aic"
    shutil.copytree(tiny_synth / "real", aic)
    image = sorted((aic / "image_query").iterdir())[0]
    shutil.move(image, outside / "q.jpg")
    image.symlink_to(outside / "q.jpg")
    with pytest.raises(DatasetError, match=rf"{image.name}: a symbolic link to {outside}/q\.jpg"):
        load_dataset(aic)
    image.unlink()
    shutil.move(outside / "q.jpg", image)
    shutil.move(aic / "image_test", outside / "test")
    (aic / "image_test").symlink_to(outside / "test")
    with pytest.raises(DatasetError, match=r"image_test: a symbolic link"):
        load_dataset(aic)
    # the opt-in is a config key (so a run's config.yaml records it), honoured by the loader
    cfg = load_config(None, [f"data.root={aic}"])
    with pytest.raises(DatasetError):
        load_from_config(cfg.data)
    cfg = load_config(None, [f"data.root={aic}", "data.follow_links=true"])
    assert len(load_from_config(cfg.data)["gallery"]) == len(
        load_dataset(tiny_synth / "real")["gallery"]
    )


def test_data_check_refuses_links_and_takes_the_flag(tmp_path, vreid_cli):
    root = _folder_dataset(tmp_path / "ds")
    target = tmp_path / "x.png"
    shutil.move(root / "query" / "0001" / "query0.png", target)
    (root / "query" / "0001" / "query0.png").symlink_to(target)
    proc = vreid_cli("data", "check", root)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "symbolic link" in proc.stderr
    proc = vreid_cli("data", "check", root, "--follow-links")
    assert proc.returncode == 0, proc.stderr
    assert "all 8 images are readable" in proc.stdout


# --------------------------------------------------------------------------------------------
# 5. a corrupt file inside a finished crop output


def test_crop_resume_verifies_what_its_journal_finished(random_detector, tmp_path):
    from vreid.inference.crop import crop_folder

    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        _noise(src / f"{i:02d}.png", size=(64, 48), seed=i)
    dst = tmp_path / "dst"
    kwargs = dict(
        weights=random_detector, min_score=0.3, device="cpu", batch_size=4, progress=False
    )
    first = crop_folder(src, dst, **kwargs)
    assert first.processed == 4
    good = (dst / "02.png").read_bytes()
    (dst / "02.png").write_bytes(b"")  # emptied after the run finished
    (dst / "03.png").write_bytes(good)  # replaced by another (valid) image
    again = crop_folder(src, dst, **kwargs)
    assert again.skipped == 2
    assert again.processed == 2
    assert (dst / "02.png").read_bytes() == good
    with Image.open(dst / "03.png") as im:
        im.load()
    assert (dst / "03.png").read_bytes() != good or (src / "03.png").read_bytes() == good
    # a third run trusts the (verified) journal: nothing to do
    assert crop_folder(src, dst, **kwargs).processed == 0


def test_crop_resume_ignores_a_file_placed_in_dst_by_hand(random_detector, tmp_path):
    from vreid.inference.crop import crop_folder

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        _noise(src / f"{i:02d}.png", size=(64, 48), seed=i)
    (src / "02.png").write_bytes(b"broken")
    dst = tmp_path / "dst"
    kwargs = dict(
        weights=random_detector, min_score=0.3, device="cpu", batch_size=1, progress=False
    )
    with pytest.raises(DatasetError, match=r"02\.png"):
        crop_folder(src, dst, **kwargs)
    (dst / "02.png").write_bytes(b"")  # a zero-byte image put where the crop would go
    _noise(src / "02.png", size=(64, 48), seed=2)  # the user fixes the source
    report = crop_folder(src, dst, **kwargs)
    assert report.processed == 1
    assert report.skipped == 2
    assert (dst / "02.png").stat().st_size > 0


# --------------------------------------------------------------------------------------------
# 6. wrong checkpoint kind


def test_attribute_checkpoint_is_refused_as_a_reid_model(tmp_path):
    from vreid.inference.extract import Extractor

    attr = _reid_checkpoint(tmp_path / "attributes.pt", name="attributes")
    with pytest.raises(
        CheckpointError, match=r"attributes\.pt: an attribute-model checkpoint.*--attributes"
    ):
        load_model(attr)
    with pytest.raises(CheckpointError, match="--attributes"):
        Extractor(attr, device="cpu")
    reid = _reid_checkpoint(tmp_path / "reid.pt")
    assert load_model(reid).training is False


def test_search_refuses_the_attribute_model_as_an_ensemble_member(tmp_path, vreid_cli):
    attr = _reid_checkpoint(tmp_path / "attributes.pt", name="attributes")
    (tmp_path / "q").mkdir()
    _noise(tmp_path / "q" / "a.png")
    proc = vreid_cli(
        "search",
        attr,
        "-q",
        tmp_path / "q",
        "-g",
        tmp_path / "q",
        "-o",
        tmp_path / "s",
        "--set",
        "runtime.device=cpu",
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "attribute-model checkpoint" in proc.stderr
    assert "--attributes" in proc.stderr


def test_errors_are_vreid_errors():
    assert issubclass(ImageReadError, VreidError)


# --------------------------------------------------------------------------------------------
# 7. fixes of the hostile pass (docs/readme/reliability.md)


def test_a_config_key_given_twice_is_refused(tmp_path):
    from vreid.core.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr: 1.0e-3\n  lr: 5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 3.*'lr' given twice"):
        load_config(cfg)


def test_features_with_nan_rows_are_never_written(tmp_path):
    from vreid.core.errors import FeatureFileError

    feats = np.ones((3, 4), np.float32)
    feats[1, 2] = np.nan
    with pytest.raises(FeatureFileError, match=r"1 of 3 feature rows are NaN or inf.*'b\.jpg'"):
        save_features(tmp_path / "q", feats, ["a.jpg", "b.jpg", "c.jpg"])
    assert list(tmp_path.iterdir()) == []


def test_a_label_file_replaced_by_a_folder_is_not_read_as_absent(tmp_path, tiny_synth):
    root = tmp_path / "aic"
    shutil.copytree(tiny_synth / "real", root)
    (root / "train_label.xml").unlink()
    (root / "train_label.xml").mkdir()
    with pytest.raises(DatasetError, match=r"train_label\.xml: not a file"):
        load_dataset(root)
    (root / "train_label.xml").rmdir()
    (root / "train_label.xml").symlink_to(tmp_path / "gone.xml")
    with pytest.raises(DatasetError, match=r"train_label\.xml: a broken link"):
        load_dataset(root)


def test_control_characters_in_an_image_name(tmp_path, tiny_synth):
    root = tmp_path / "aic"
    shutil.copytree(tiny_synth / "real", root)
    (root / "name_query.txt").write_bytes(b"\x00\x01.jpg\n")
    with pytest.raises(DatasetError, match=r"name_query\.txt, line 1: .*control character"):
        load_dataset(root)


def test_the_same_ensemble_member_given_twice_is_refused(tmp_path, vreid_cli):
    from vreid.core.errors import ConfigError
    from vreid.retrieval.chain import member_names

    (tmp_path / "a").mkdir()
    with pytest.raises(ConfigError, match="given twice as a feature directory"):
        member_names([tmp_path / "a", tmp_path / "b" / ".." / "a"], what="a feature directory")
    assert member_names([tmp_path / "x" / "f", tmp_path / "y" / "f"], what="d") == [
        str(tmp_path / "x" / "f"),
        str(tmp_path / "y" / "f"),
    ]
    ckpt = _reid_checkpoint(tmp_path / "m.pt")
    (tmp_path / "q").mkdir()
    _noise(tmp_path / "q" / "a.png")
    proc = vreid_cli("search", ckpt, ckpt, "-q", tmp_path / "q", "-g", tmp_path / "q")
    assert proc.returncode == 2
    assert "given twice as a checkpoint" in proc.stderr


def test_a_failed_write_names_the_file_it_was_making(tmp_path):
    from vreid.core.artefacts import atomic_path

    target = tmp_path / "out" / "metrics.json"

    def write_on_a_full_disk() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise OSError(28, "No space left on device")  # what a full disk gives a write

    with pytest.raises(OSError, match="No space left") as err:
        write_on_a_full_disk()
    assert err.value.filename == str(target)
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its temporary
