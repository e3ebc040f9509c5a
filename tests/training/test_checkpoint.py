"""Checkpoints: safe loading, rebuilding the model, RNG state, and clear errors for bad files."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch
from PIL import Image

from vreid.core.errors import CheckpointError, DatasetError
from vreid.data.image_datasets import ReidImageDataset, label_map
from vreid.data.transforms import build_transforms
from vreid.models.checkpoint import (
    check_arch,
    load_checkpoint,
    load_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_checkpoint_holds_what_resume_needs(trained_run):
    ckpt = load_checkpoint(trained_run.last_checkpoint)
    assert ckpt["arch"]["name"] == "glamor"
    assert ckpt["arch"]["backbone"] == "resnet18"
    assert ckpt["epoch"] == 1
    assert ckpt["config"]["model"]["image_size"] == [32, 64]
    for key in ("optimizer", "scheduler", "sampler", "rng", "vehicle_ids"):
        assert ckpt[key] is not None, key
    assert len(ckpt["rng"]) == 1
    assert ckpt["arch"]["num_classes"] == len(ckpt["vehicle_ids"])
    assert (trained_run.out_dir / "config.yaml").is_file()


def test_load_model_rebuilds_the_trained_network(trained_run, synth_real):
    model = load_model(trained_run.last_checkpoint, "cpu")
    assert not model.training
    state = load_checkpoint(trained_run.last_checkpoint)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        feats = model(x)
    assert feats.shape == (2, model.feature_dim)
    # the same weights give the same features after a save/load round trip
    again = load_model(trained_run.last_checkpoint, "cpu")
    with torch.no_grad():
        assert torch.equal(again(x), feats)


def test_load_model_checks_the_number_of_ids(trained_run):
    n = load_checkpoint(trained_run.last_checkpoint)["arch"]["num_classes"]
    with pytest.raises(CheckpointError, match=rf"trained on {n} identities, {n + 3} were expected"):
        load_model(trained_run.last_checkpoint, num_classes=n + 3)


def test_weights_of_another_architecture_are_refused(trained_run, tmp_path):
    state = load_checkpoint(trained_run.last_checkpoint)
    state["arch"] = dict(state["arch"], name="resnet50", backbone="resnet34")
    bad = save_checkpoint(tmp_path / "relabelled.pt", state)
    with pytest.raises(CheckpointError, match=r"relabelled\.pt: weights do not fit"):
        load_model(bad)


def test_check_arch_says_what_to_set():
    found = {"name": "resnet50", "num_classes": 10, "backbone": None, "last_stride": 1}
    wanted = {"name": "glamor", "num_classes": 10, "backbone": None, "last_stride": 1}
    with pytest.raises(
        CheckpointError, match=r"x\.pt: .*'resnet50'.*'glamor'.*model\.name=resnet50"
    ):
        check_arch(found, wanted, "x.pt")
    with pytest.raises(CheckpointError, match=r"trained on 10 identities, this dataset has 12"):
        check_arch(found, dict(found, num_classes=12), "x.pt")
    check_arch(found, dict(found, num_classes=12), "x.pt", check_classes=False)


def test_unreadable_and_unsafe_files_are_checkpoint_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: not a readable vreid checkpoint"):
        load_checkpoint(garbage)

    unsafe = tmp_path / "unsafe.pt"  # arbitrary objects are refused by weights_only loading
    torch.save(
        {"model": {}, "arch": {"name": "x", "num_classes": 1}, "obj": argparse.Namespace(x=1)},
        unsafe,
    )
    with pytest.raises(CheckpointError, match=r"unsafe\.pt: not a readable"):
        load_checkpoint(unsafe)

    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match=r"plain\.pt: not a vreid checkpoint"):
        load_checkpoint(plain)

    with pytest.raises(CheckpointError, match=r"missing\.pt: checkpoint file not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002
    random.seed(3)
    saved = rng_state()
    first = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])  # noqa: NPY002
    torch.rand(10)
    set_rng_state(saved)
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])  # noqa: NPY002
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_save_is_atomic_and_loads_with_weights_only(tmp_path):
    path = save_checkpoint(
        tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "arch": {"name": "g", "num_classes": 2}}
    )
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    state = torch.load(path, weights_only=True)
    assert state["format"] == "vreid-checkpoint"
    assert torch.equal(state["model"]["w"], torch.ones(2))


def test_dataset_labels_and_unreadable_image(synth_real, tmp_path):
    records = synth_real["train"]
    mapping = label_map(records)
    assert sorted(mapping.values()) == list(range(len(mapping)))
    assert list(mapping) == sorted(mapping)  # labels follow the ids in increasing order
    ds = ReidImageDataset(records, build_transforms((32, 64), train=False))
    image, label, index = ds[5]
    assert image.shape == (3, 32, 64)
    assert label == mapping[records[5].vehicle_id]
    assert index == 5

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    bad = [type(records[0])(path=broken, name="broken.jpg", split="train", vehicle_id=1)]
    with pytest.raises(DatasetError, match=r"broken\.jpg: cannot read the image"):
        ReidImageDataset(bad, build_transforms((32, 64), train=False))[0]
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    unlabelled = [type(records[0])(path=tmp_path / "ok.png", name="ok.png", split="train")]
    with pytest.raises(DatasetError, match=r"have no vehicle id.*ok\.png"):
        label_map(unlabelled)
