from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from vreid.core.errors import ConfigError, WeightsError
from vreid.core.figures import plot_confusion
from vreid.data.attributes import COLOR_CLASSES, IGNORE_INDEX, TYPE_CLASSES
from vreid.data.image_datasets import split_holdout
from vreid.engine.attributes import classification_report
from vreid.models import build_model, list_models
from vreid.models.attributes import AttributeModel


def test_registered_and_shapes_of_every_output():
    assert "attributes" in list_models()
    torch.manual_seed(0)
    model = build_model("attributes", 7, backbone="resnet18", embed_dim=32)
    assert isinstance(model, AttributeModel)
    assert model.arch == {
        "name": "attributes",
        "num_classes": 7,
        "backbone": "resnet18",
        "embed_dim": 32,
    }
    x = torch.randn(3, 3, 64, 64)
    out = model.train()(x)
    assert out.features.shape == (3, 512)
    assert out.logits.shape == (3, 7)
    model.eval()
    assert model(x).shape == (3, 512)
    att = model.attributes(x)
    assert att.color_features.shape == (3, 32)
    assert att.type_features.shape == (3, 32)
    assert att.color_logits.shape == (3, len(COLOR_CLASSES))
    assert att.type_logits.shape == (3, len(TYPE_CLASSES))
    # penultimate features come after ReLU: never negative
    assert float(att.color_features.detach().min()) >= 0.0
    model.reset_classifier(4)
    assert model.num_classes == 4


def test_weights_file_is_loaded_and_bad_files_are_named(tmp_path: Path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    good = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), good)
    model = AttributeModel("resnet18", 3, pretrained=good)
    assert str(good) in model.weights_message
    assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)
    with pytest.raises(WeightsError, match=r"missing\.pth"):
        AttributeModel("resnet18", 3, pretrained=tmp_path / "missing.pth")
    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"resnet34\.pth"):
        AttributeModel("resnet18", 3, pretrained=wrong)


def test_auto_weights_are_refused_and_null_says_random():
    """``auto`` used to fall back silently to random weights; it is refused now."""
    with pytest.raises(ConfigError, match=r"auto.*no longer accepted.*imagenet.*null"):
        AttributeModel("resnet18", 3, pretrained="auto")
    model = AttributeModel("resnet18", 3, pretrained=None)
    assert "random initialisation" in model.weights_message


def test_classification_report_matches_hand_count(tmp_path: Path):
    classes = ("a", "b", "c")
    # true:  a a a b b c, ignored one; predicted: a a b b c c
    targets = np.array([0, 0, 0, 1, 1, 2, IGNORE_INDEX])
    pred = np.array([0, 0, 1, 1, 2, 2, 0])
    probs = np.eye(3)[pred]
    rep = classification_report(probs, targets, classes)
    assert rep["images"] == 6
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert rep["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert rep["majority_baseline"] == pytest.approx(3 / 6)
    assert rep["balanced_chance"] == pytest.approx(1 / 3)
    constant = classification_report(np.eye(3)[np.zeros(7, dtype=int)], targets, classes)
    assert constant["balanced_accuracy"] == pytest.approx(constant["balanced_chance"])
    assert rep["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    png = plot_confusion(rep["confusion"], rep["classes"], tmp_path / "c.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="does not match 2 classes"):
        plot_confusion(rep["confusion"], ["a", "b"], tmp_path / "bad.png")


def test_holdout_is_by_identity_and_seeded():
    from vreid.data import ImageRecord

    recs = [
        ImageRecord(Path(f"/x/{i}.jpg"), f"{i}.jpg", "train", vehicle_id=i % 10, camera=1)
        for i in range(50)
    ]
    train, held, ids = split_holdout(recs, 0.2, seed=3)
    assert len(ids) == 2
    assert {r.vehicle_id for r in held} == set(ids)
    assert not {r.vehicle_id for r in train} & set(ids)
    assert len(train) + len(held) == 50
    assert split_holdout(recs, 0.2, seed=3)[2] == ids
    assert split_holdout(recs, 0.0)[2] == []
