"""Training a detector on the synthetic true boxes, and reading those boxes.

The training test runs the real loop for a few steps only (a detector that crops well needs minutes
of training; ``benchmarks/crop_quality.py`` measures that): it checks that the weights move from
their random start with finite losses, and that the checkpoint is one ``vreid crop --weights``
accepts with the input size it was trained at.
"""

import math
import shutil

import pytest
import torch

from vreid.core.errors import ConfigError, DatasetError, VreidError, WeightsError
from vreid.engine.detector import read_true_boxes, train_detector
from vreid.inference.crop import crop_folder
from vreid.models.detectors import build_detector, load_detector

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


def test_read_true_boxes(tiny_synth):
    root = tiny_synth / "real"
    train = read_true_boxes(root, ["train"])
    everything = read_true_boxes(root)
    assert {b.split for b in everything} == {"train", "query", "gallery"}
    assert len(train) == sum(b.split == "train" for b in everything) > 10
    first = train[0]
    assert first.path == (root / "image_train" / first.name).resolve()
    x1, y1, x2, y2 = first.box
    assert x2 > x1
    assert y2 > y1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("train,000001.jpg,1,2,3\n", r"vehicle_boxes\.csv:2: expected 6 fields"),
        ("train,000001.jpg,1,2,x,4\n", r"vehicle_boxes\.csv:2: box coordinates"),
        ("train,000001.jpg,10,2,5,40\n", r"vehicle_boxes\.csv:2: empty box"),
        ("train,../../etc/passwd,1,2,3,4\n", "outside"),
        ("train,999999.jpg,1,2,3,4\n", "not found"),
    ],
)
def test_bad_box_files(tiny_synth, tmp_path, line, message):
    root = tmp_path / "data"
    (root / "image_train").mkdir(parents=True)
    shutil.copyfile(
        tiny_synth / "real" / "image_train" / "000001.jpg", root / "image_train" / "000001.jpg"
    )
    (root / "vehicle_boxes.csv").write_text("split,image_name,x1,y1,x2,y2\n" + line)
    with pytest.raises(DatasetError, match=message):
        read_true_boxes(root)


def test_missing_box_file(tmp_path):
    with pytest.raises(DatasetError, match="vreid synth"):
        read_true_boxes(tmp_path)


def test_train_a_few_steps_then_crop_with_it(tiny_synth, tmp_path):
    out = tmp_path / "det.pt"
    result = train_detector(
        tiny_synth / "real", out, detector=ARCH, epochs=2, batch_size=2, max_images=4,
        image_size=96, lr=1e-3, held_out_splits=(), device="cpu", progress=False,
    )  # fmt: skip
    assert result.epochs == 2
    assert result.held_out_iou is None
    assert all(math.isfinite(loss) for loss in result.history)

    ckpt = torch.load(out, weights_only=True)
    torch.manual_seed(0)  # train_detector's default seed: the same random start
    start = build_detector(ARCH, num_classes=2, min_size=96, max_size=192).state_dict()
    changed = [
        k
        for k, v in start.items()
        if v.is_floating_point() and not torch.equal(v, ckpt["model"][k])
    ]
    assert len(changed) > 0.9 * sum(v.is_floating_point() for v in start.values())
    assert ckpt["kind"] == "vreid-detector"
    assert ckpt["arch"]["name"] == ARCH
    assert ckpt["arch"]["options"] == {"min_size": 96, "max_size": 192}
    assert ckpt["config"]["train_images"] == 4
    loaded = load_detector(None, out)
    assert loaded.name == ARCH
    assert loaded.model.transform.min_size == (96,)

    src = tmp_path / "few"
    src.mkdir()
    for path in sorted((tiny_synth / "real" / "image_query").glob("*.jpg"))[:3]:
        shutil.copyfile(path, src / path.name)
    report = crop_folder(src, tmp_path / "cropped", weights=out, device="cpu", progress=False)
    assert report.images == 3
    assert report.cropped + len(report.uncropped) == report.images

    with pytest.raises(VreidError, match="already exists"):
        train_detector(tiny_synth / "real", out, epochs=1, device="cpu", progress=False)

    # train on from it: same input size, starts from its weights
    more = train_detector(
        tiny_synth / "real", tmp_path / "more.pt", detector=ARCH, epochs=1, batch_size=2,
        max_images=2, lr=1e-9, init_from=out, held_out_splits=(), device="cpu", progress=False,
    )  # fmt: skip
    again = torch.load(more.checkpoint, weights_only=True)
    assert again["arch"]["options"] == {"min_size": 96, "max_size": 192}
    assert again["config"]["init_from"] == str(out)
    conv = "backbone.body.0.0.weight"
    assert torch.allclose(again["model"][conv], ckpt["model"][conv], atol=1e-6)
    with pytest.raises(WeightsError, match="trained for detector"):
        train_detector(
            tiny_synth / "real", tmp_path / "x.pt", detector="fasterrcnn_mobilenet_v3_large_fpn",
            init_from=out, device="cpu", progress=False,
        )  # fmt: skip


def test_train_detector_bad_arguments(tiny_synth, tmp_path):
    with pytest.raises(ConfigError, match="known detectors"):
        train_detector(tiny_synth / "real", tmp_path / "a.pt", detector="nope")
    with pytest.raises(DatasetError, match="no boxes of split"):
        train_detector(tiny_synth / "real", tmp_path / "a.pt", train_splits=["nope"])


def test_training_shows_the_shared_progress_bar(tiny_synth, tmp_path, capsys):
    """progress=True: the trainer's shared bar per epoch (steps done of the epoch's total) on
    stderr, then the epoch's line; nothing on stdout."""
    train_detector(
        tiny_synth / "real", tmp_path / "det.pt", detector=ARCH, epochs=1, batch_size=2,
        max_images=4, image_size=96, held_out_splits=(), device="cpu", progress=True,
    )  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    err = " ".join(captured.err.split())
    assert "detector epoch 1/1" in err
    assert "detector epoch 1/1 ━" in err  # the bar: description, bar, done/total, loss
    assert "2/2 loss" in err  # 4 images, batches of 2
    assert "img/s" in err
