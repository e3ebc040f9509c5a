"""Pre-trained weights the way torchvision users get them: the torch hub cache, a download with
torch.hub's hash check on first use, a one-line error offline, never random weights by accident.

This machine has no network: the download attempts below fail for real (no mock of urllib or
torch.hub). The cache files are written by the tests under torch.hub's naming rule: the file name
``<name>-<first 8 hex digits of its SHA-256>.pth`` is what torch.hub checks after a download and
what vreid checks before reading a cached file.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import ResNet18_Weights, Weights, WeightsEnum

from vreid.core.config import load_config
from vreid.core.errors import ConfigError, WeightsError
from vreid.core.weights import OFFLINE_ENV, TIMEOUT_ENV, cache_path, fetch_state_dict
from vreid.models import TRUNKS, build_model, imagenet_weights, list_models
from vreid.models.attributes import AttributeModel

R18_FILE = "resnet18-f37072fd.pth"
R18_URL = "https://download.pytorch.org/models/" + R18_FILE


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty torch hub cache in tmp_path (for this process and for children: TORCH_HOME)."""
    previous = torch.hub.get_dir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    yield tmp_path / "torch" / "hub"
    torch.hub.set_dir(previous)


def _network_reachable() -> bool:
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
    except OSError:
        return False
    return True


def _nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def _write_hub_file(folder: Path, stem: str, state: dict[str, torch.Tensor]) -> Path:
    """Save ``state`` as ``folder/<stem>-<sha256[:8]>.pth``, torch.hub's naming rule."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "unnamed.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return tmp.rename(folder / f"{stem}-{digest[:8]}.pth")


# ------------------------------------------------------------------------------------------
# what "imagenet" means


def test_imagenet_names_torchvision_v1_file_and_cache_path(hub: Path) -> None:
    assert imagenet_weights("resnet18") is ResNet18_Weights.IMAGENET1K_V1
    assert imagenet_weights("resnet50").url.endswith("/resnet50-0676ba61.pth")
    assert imagenet_weights("resnet50", "IMAGENET1K_V2").url.endswith("/resnet50-11ad3fa6.pth")
    assert imagenet_weights("resnext101_32x8d", "ResNeXt101_32X8D_Weights.IMAGENET1K_V1").url == (
        "https://download.pytorch.org/models/resnext101_32x8d-8ba56ff5.pth"
    )
    for trunk in TRUNKS:  # every trunk has ImageNet weights in torchvision
        assert imagenet_weights(trunk).url.startswith("https://download.pytorch.org/models/")
    with pytest.raises(WeightsError, match="another architecture"):
        imagenet_weights("resnet18", "ResNet50_Weights.IMAGENET1K_V1")
    with pytest.raises(WeightsError, match=r"no such resnet18 weights.*IMAGENET1K_V1"):
        imagenet_weights("resnet18", "IMAGENET1K_V9")
    assert cache_path(R18_URL) == hub / "checkpoints" / R18_FILE


# ------------------------------------------------------------------------------------------
# offline: one line, within seconds, naming the cache file and the URL


def test_offline_env_error_names_the_cache_file_and_url(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OFFLINE_ENV, "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        build_model("resnet18", 3, pretrained="imagenet")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "\n" not in message
    assert str(hub / "checkpoints" / R18_FILE) in message
    assert R18_URL in message
    assert f"{OFFLINE_ENV}=1" in message
    assert "ResNet18_Weights.IMAGENET1K_V1" in message
    assert _nothing_in(hub / "checkpoints")


@pytest.mark.skipif(_network_reachable(), reason="this test needs a machine without network")
def test_download_attempt_without_network_fails_at_once(hub: Path) -> None:
    """No VREID_OFFLINE: vreid really tries torch.hub's download, which cannot resolve the host."""
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        build_model("glamor", 3, backbone="resnet18", pretrained="imagenet")
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "\n" not in message
    assert "cannot be downloaded" in message
    assert OFFLINE_ENV not in message  # the reason is the failed attempt, not the variable
    assert str(hub / "checkpoints" / R18_FILE) in message
    assert R18_URL in message
    # nothing half-written is left in the cache (torch.hub downloads to a .partial file)
    assert _nothing_in(hub / "checkpoints")


def test_a_stalled_server_is_given_up_after_the_timeout(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real local server that accepts the connection and never answers: with
    VREID_DOWNLOAD_TIMEOUT=1 the attempt ends after about a second instead of hanging."""
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/models/resnet18-00000000.pth"
        start = time.perf_counter()
        with pytest.raises(WeightsError) as err:
            fetch_state_dict(url, what="test weights")
        elapsed = time.perf_counter() - start
    assert 0.9 < elapsed < 8
    message = str(err.value)
    assert "resnet18-00000000.pth is not in the torch hub cache and cannot be downloaded" in message
    assert "timed out" in message
    assert str(hub / "checkpoints" / "resnet18-00000000.pth") in message
    assert _nothing_in(hub / "checkpoints")  # torch.hub removed its .partial file
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(WeightsError, match="VREID_DOWNLOAD_TIMEOUT='soon'"):
        fetch_state_dict(url, what="test weights")


def test_cli_offline_error_is_one_line(
    hub: Path, monkeypatch: pytest.MonkeyPatch, tiny_synth: Path, vreid_cli, small_overrides
) -> None:
    monkeypatch.setenv(OFFLINE_ENV, "1")  # inherited by the child, as TORCH_HOME is
    sets = [*small_overrides, f"data.root={tiny_synth / 'real'}", "model.pretrained=imagenet"]
    proc = vreid_cli("train", "--out", hub.parent / "run", *[a for s in sets for a in ("--set", s)])
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    assert str(hub / "checkpoints" / R18_FILE) in lines[0]
    assert R18_URL in lines[0]


# ------------------------------------------------------------------------------------------
# the cache: read from it (no network needed), its hash checked


def test_weights_from_a_cache_file_named_by_its_own_hash(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OFFLINE_ENV, "1")  # proves the cache is read without any network
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = _write_hub_file(hub / "checkpoints", "resnet18", reference.state_dict())
    url = f"https://download.pytorch.org/models/{path.name}"

    # a URL, as a config value
    model = build_model("resnet18", 3, pretrained=url)
    assert str(path) in model.weights_message
    assert torch.equal(model.trunk.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(model.trunk.bn1.running_var, reference.bn1.running_var)

    # a torchvision WeightsEnum member (what torchvision's own builders take)
    local = WeightsEnum("LocalWeights", {"R18": Weights(url=url, transforms=None, meta={})})
    glamor = build_model("glamor", 3, backbone="resnet18", pretrained=local.R18)
    assert torch.equal(glamor.trunk.conv1.weight, reference.conv1.weight)
    attributes = AttributeModel("resnet18", 3, pretrained=local.R18)
    assert torch.equal(attributes.trunk.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
    assert "LocalWeights.R18" in attributes.weights_message


def test_cached_file_whose_content_does_not_match_its_name_is_refused(hub: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    # torchvision's exact file name, other content: the file imagenet asks for, but not intact
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(state, hub / "checkpoints" / R18_FILE)
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth: SHA-256 .* f37072fd"):
        build_model("resnet18", 3, pretrained="imagenet")
    # a renamed copy of a good file
    good = _write_hub_file(hub / "checkpoints", "mine", state)
    bad = good.with_name("mine-0123abcd.pth")
    bad.write_bytes(good.read_bytes())
    with pytest.raises(WeightsError, match="does not start with 0123abcd"):
        build_model("resnet18", 3, pretrained=f"https://example.org/{bad.name}")


def test_cached_weights_of_another_trunk_are_named(hub: Path) -> None:
    path = _write_hub_file(
        hub / "checkpoints", "resnet34", torchvision.models.resnet34(weights=None).state_dict()
    )
    with pytest.raises(WeightsError, match=rf"{path.name}: not weights of a resnet18 trunk"):
        build_model("resnet18", 3, pretrained=f"https://download.pytorch.org/models/{path.name}")


# ------------------------------------------------------------------------------------------
# random weights only when asked


@pytest.mark.parametrize("name", sorted(set(list_models())))
def test_imagenet_never_falls_back_to_random_weights(
    name: str, hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every registered model, asked for ImageNet weights that are not there, raises."""
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth"):
        build_model(name, 3, backbone="resnet18", pretrained="imagenet")
    with pytest.raises(ConfigError, match="no longer accepted"):
        build_model(name, 3, backbone="resnet18", pretrained="auto")
    model = build_model(name, 3, backbone="resnet18", pretrained=None)
    assert "random initialisation" in model.weights_message


def test_config_pretrained_values_and_presets() -> None:
    default = load_config(None)
    assert default.model.pretrained is None  # GLAMOR from scratch, as the paper
    assert default.attributes.pretrained == "imagenet"  # the paper's attribute model
    for key in (
        "model.pretrained=auto",
        "attributes.pretrained=auto",
        "model.pretrained={a: auto}",
    ):
        with pytest.raises(ConfigError, match="no longer accepted"):
            load_config(None, [key])

    for offline in ("demo", "tiny"):  # train from scratch: nothing to download
        cfg = load_config(offline)
        assert all(cfg.model.pretrained_for(m) is None for m in cfg.pipeline.models), offline
        assert cfg.attributes.pretrained is None
        assert not cfg.crop.enabled

    for paper in ("aic20", "veri776"):
        cfg = load_config(paper)
        assert cfg.model.backbone is None  # each model's own trunk
        assert cfg.attributes.pretrained == "imagenet"
        for model in cfg.pipeline.models:
            want = "imagenet" if model in TRUNKS else None  # the baselines
            assert cfg.model.pretrained_for(model) == want, (paper, model)
    aic20 = load_config("aic20")
    assert aic20.crop.enabled
    assert aic20.crop.weights is None  # torchvision COCO weights
    assert {"resnet50", "resnext101_32x8d"} <= set(aic20.pipeline.models)
