"""Detectors by name and where their weights come from (cache, file, our checkpoint), with the errors.

No real COCO weights exist on this machine; "torchvision-style" files here are state dicts of
randomly initialised torchvision models saved the way torchvision's COCO files are (frozen batch
norm: no ``num_batches_tracked``), which exercises the same loading code.
"""

import hashlib

import pytest
import torch

from vreid.core.errors import ConfigError, WeightsError
from vreid.engine.detector import save_detector_checkpoint
from vreid.models.detectors import build_detector, coco_cache_path, detector_names, load_detector

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"
COCO_FILE = "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, offline (VREID_OFFLINE=1): a missing file is never downloaded."""
    monkeypatch.setenv("VREID_OFFLINE", "1")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture(scope="module")
def coco_like_state():
    torch.manual_seed(1)
    model = build_detector(ARCH, num_classes=91).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    return model, state


def test_unknown_detector_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        build_detector("yolo_v8")
    message = str(err.value)
    assert "yolo_v8" in message
    for name in (
        "maskrcnn_resnet50_fpn_v2",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "retinanet_resnet50_fpn_v2",
    ):
        assert name in message
    with pytest.raises(ConfigError, match="yolo_v8"):
        load_detector("yolo_v8")


def test_registry_names_and_cache_file_names():
    assert {
        "maskrcnn_resnet50_fpn_v2",
        "fasterrcnn_resnet50_fpn_v2",
        "fasterrcnn_mobilenet_v3_large_fpn",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "retinanet_resnet50_fpn_v2",
    } <= set(detector_names())
    assert coco_cache_path(ARCH).name == COCO_FILE
    assert coco_cache_path(ARCH).parent == coco_cache_path("maskrcnn_resnet50_fpn_v2").parent


def test_missing_weights_says_which_file_to_place_where(empty_hub):
    with pytest.raises(WeightsError) as err:
        load_detector(ARCH)
    message = str(err.value)
    assert str(empty_hub / "checkpoints" / COCO_FILE) in message
    assert "https://download.pytorch.org/models/" + COCO_FILE in message
    assert "vreid train-detector" in message
    assert "--weights" in message
    assert "VREID_OFFLINE=1" in message
    assert "\n" not in message


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_detector(ARCH, tmp_path / "nope.pt")


def test_corrupt_cache_file_is_refused(empty_hub, coco_like_state):
    _, state = coco_like_state
    path = empty_hub / "checkpoints" / COCO_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path)  # right name, wrong content: its SHA-256 does not start with 907ea3f9
    with pytest.raises(WeightsError, match="SHA-256"):
        load_detector(ARCH)


def test_torchvision_style_file_loads_and_gives_the_same_outputs(tmp_path, coco_like_state):
    model, state = coco_like_state
    plain = tmp_path / "coco.pth"
    torch.save(state, plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    named = tmp_path / f"{ARCH}-{digest[:8]}.pth"  # torchvision's naming: hash prefix in the name
    plain.rename(named)

    loaded = load_detector(ARCH, named)
    assert loaded.name == ARCH
    assert [loaded.categories[i] for i in loaded.vehicle_labels] == ["car", "bus", "truck"]
    assert str(named) in loaded.source
    loaded_state = loaded.model.state_dict()
    assert all(torch.equal(v, loaded_state[k]) for k, v in model.state_dict().items())
    assert not loaded.model.training

    tampered = tmp_path / f"{ARCH}-00000000.pth"
    tampered.write_bytes(named.read_bytes())
    with pytest.raises(WeightsError, match="SHA-256"):
        load_detector(ARCH, tampered)


def test_plain_state_dict_needs_the_detector_name(tmp_path, coco_like_state):
    _, state = coco_like_state
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="--detector"):
        load_detector(None, path)
    assert load_detector(ARCH, path).name == ARCH


def test_our_checkpoint_carries_its_architecture(tmp_path):
    torch.manual_seed(0)
    model = build_detector(ARCH, num_classes=2)
    path = save_detector_checkpoint(model, ARCH, tmp_path / "det.pt", epoch=3)
    loaded = load_detector(None, path)
    assert loaded.name == ARCH
    assert loaded.categories == ("__background__", "vehicle")
    assert loaded.vehicle_labels == (1,)
    assert "epoch 3" in loaded.source
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            model.state_dict().values(), loaded.model.state_dict().values(), strict=True
        )
    )

    with pytest.raises(WeightsError, match="trained for detector"):
        load_detector("fasterrcnn_resnet50_fpn_v2", path)
    # its 2-class weights do not fit the 91-class COCO head
    torch.save(torch.load(path, weights_only=True)["model"], tmp_path / "sd.pth")
    with pytest.raises(WeightsError, match="do not fit"):
        load_detector(ARCH, tmp_path / "sd.pth")


def test_unreadable_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="cannot read"):
        load_detector(ARCH, junk)
    reid = tmp_path / "reid.pt"
    torch.save({"model": {}, "arch": {"name": "glamor"}, "epoch": 1}, reid)
    with pytest.raises(WeightsError, match="not a detector"):
        load_detector(None, reid)
