"""Re-id models: shapes, parameter counts, GLAMOR's channel mixing, gradients, registry, weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vreid.core.errors import ConfigError, WeightsError
from vreid.models import (
    CBAM,
    Glamor,
    GlobalAttentionModule,
    ReidOutput,
    build_model,
    list_models,
    mix_channels,
)

H, W = 128, 256


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------
# shapes and parameter counts


@pytest.mark.parametrize("name", ["glamor", "counter_glamor", "resnet50"])
def test_resnet50_models_shapes_for_128x256(name: str) -> None:
    model = build_model(name, 7)
    x = torch.randn(2, 3, H, W)
    model.train()
    out = model(x)
    assert isinstance(out, ReidOutput)
    assert out.features.shape == (2, 2048)
    assert out.logits.shape == (2, 7)
    model.eval()
    with torch.no_grad():
        feats = model(x)
    assert isinstance(feats, torch.Tensor)
    assert feats.shape == (2, 2048)
    assert model.feature_dim == 2048
    assert model.num_classes == 7


def test_parameter_counts() -> None:
    model = build_model("glamor", 5)
    assert n_params(model.trunk) == 23_508_032
    assert n_params(model.gam) == 73_728
    assert n_params(model.cbam) == 8_564
    assert n_params(GlobalAttentionModule(64)) == 73_728
    assert n_params(CBAM(256)) == 8_564
    # neck: BN scale + (frozen) shift; classifier without bias
    assert n_params(model.head) == 2 * 2048 + 2048 * 5
    assert n_params(model) == 23_508_032 + 73_728 + 8_564 + 2 * 2048 + 2048 * 5
    assert not model.head.neck.bias.requires_grad
    assert model.head.classifier.bias is None
    baseline = build_model("resnet50", 5)
    assert n_params(baseline) == 23_508_032 + 2 * 2048 + 2048 * 5


def test_resnext101_baseline_shape_and_trunk_size() -> None:
    model = build_model("resnext101_32x8d", 3).eval()
    # torchvision's resnext101_32x8d has 88,791,336 parameters, 2,049,000 of them in fc
    assert n_params(model.trunk) == 88_791_336 - 2_049_000
    with torch.no_grad():
        assert model(torch.randn(1, 3, H, W)).shape == (1, 2048)


@pytest.mark.parametrize(("last_stride", "size"), [(1, (8, 16)), (2, (4, 8))])
def test_last_stride_sets_final_map_size(last_stride: int, size: tuple[int, int]) -> None:
    model = build_model("glamor", 3, backbone="resnet18", last_stride=last_stride).eval()
    with torch.no_grad():
        maps = model.feature_maps(torch.randn(1, 3, H, W))
    assert maps.shape == (1, 512, *size)


def test_small_backbone_adapts_attention_modules() -> None:
    model = build_model("counter_glamor", 4, backbone="resnet18")
    assert model.feature_dim == 512
    assert model.cbam.channel_gate.mlp[0].in_features == 64  # resnet18 stage 1 has 64 channels
    assert n_params(model.cbam) == 64 * 4 + 4 + 4 * 64 + 64 + 98 + 2
    out = model.train()(torch.randn(3, 3, 64, 128))
    assert out.features.shape == (3, 512)
    assert out.logits.shape == (3, 4)


def test_eval_features_neck_vs_pre_neck() -> None:
    neck = build_model("resnet18", 3).eval()
    pre = build_model("resnet18", 3, eval_features="pre_neck").eval()
    pre.load_state_dict(neck.state_dict())
    with torch.no_grad():
        neck.head.neck.running_mean.uniform_(-1, 1)
        neck.head.neck.running_var.uniform_(0.5, 2)
        neck.head.neck.weight.uniform_(0.5, 2)
        pre.load_state_dict(neck.state_dict())
        x = torch.randn(2, 3, 64, 128)
        f_pre = pre(x)
        bn = neck.head.neck
        expected = (f_pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
        torch.testing.assert_close(neck(x), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# attention modules follow their definitions


def test_gam_matches_its_formula() -> None:
    gam = GlobalAttentionModule(8)
    x = torch.randn(2, 8, 5, 6)
    a = torch.sigmoid(
        F.conv2d(
            F.leaky_relu(F.conv2d(x, gam.conv1.weight, padding=1), 0.01),
            gam.conv2.weight,
            padding=1,
        )
    )
    torch.testing.assert_close(gam(x), x * a)


def test_cbam_matches_official_formula() -> None:
    cbam = CBAM(32).train()
    with torch.no_grad():
        cbam.spatial_gate.bn.weight.fill_(1.3)
        cbam.spatial_gate.bn.bias.fill_(-0.2)
    assert cbam.channel_gate.mlp[0].out_features == 2
    x = torch.randn(3, 32, 6, 7)
    l1, l2 = cbam.channel_gate.mlp[0], cbam.channel_gate.mlp[2]

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return F.linear(F.relu(F.linear(v, l1.weight, l1.bias)), l2.weight, l2.bias)

    scale = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    xc = x * scale[:, :, None, None]
    pooled = torch.stack([xc.max(1).values, xc.mean(1)], 1)
    conv = F.conv2d(pooled, cbam.spatial_gate.conv.weight, padding=3)
    mean, var = (
        conv.mean((0, 2, 3), keepdim=True),
        conv.var((0, 2, 3), unbiased=False, keepdim=True),
    )
    bn = (conv - mean) / torch.sqrt(var + 1e-5) * 1.3 - 0.2
    torch.testing.assert_close(cbam(x), xc * torch.sigmoid(bn), rtol=1e-4, atol=1e-5)


def test_cbam_spatial_gate_starts_at_one_half() -> None:
    gate = CBAM(16).spatial_gate
    assert torch.all(gate.bn.weight == 0)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(gate(x), 0.5 * x)


# ------------------------------------------------------------------------------------------
# GLAMOR vs Counter GLAMOR: which half comes from CBAM


def _mixing_tensors(model: Glamor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.trunk.layer1[0].register_forward_hook(lambda m, i, o: seen.__setitem__("F_G", o)),
        model.cbam.register_forward_hook(lambda m, i, o: seen.__setitem__("F_L", o)),
        model.trunk.layer1[1].register_forward_pre_hook(lambda m, i: seen.__setitem__("F", i[0])),
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_glamor_and_counter_glamor_differ_exactly_in_the_cbam_half() -> None:
    glamor = build_model("glamor", 3).eval()
    counter = build_model("counter_glamor", 3).eval()
    counter.load_state_dict(glamor.state_dict())  # same weights: only the masks differ
    x = torch.randn(1, 3, H, W)
    g, c = _mixing_tensors(glamor, x), _mixing_tensors(counter, x)
    torch.testing.assert_close(g["F_G"], c["F_G"], rtol=0, atol=0)
    torch.testing.assert_close(g["F_L"], c["F_L"], rtol=0, atol=0)
    half = 128  # C = 256 after the first bottleneck of stage 1
    assert g["F"].shape[1] == 256
    # eq. 1: M_G = 0 on [0, C/2) → those channels are CBAM's
    assert torch.equal(g["F"][:, :half], g["F_L"][:, :half])
    assert torch.equal(g["F"][:, half:], g["F_G"][:, half:])
    # eq. 2: the masks swapped
    assert torch.equal(c["F"][:, :half], c["F_G"][:, :half])
    assert torch.equal(c["F"][:, half:], c["F_L"][:, half:])
    # CBAM changes the features, so the two models really differ
    assert not torch.allclose(g["F_L"], g["F_G"])
    assert not torch.allclose(g["F"], c["F"])


def test_mix_channels_with_odd_channel_count_uses_floor_half() -> None:
    fg, fl = torch.zeros(1, 5, 1, 1), torch.ones(1, 5, 1, 1)
    assert mix_channels(fg, fl, counter=False).flatten().tolist() == [1, 1, 0, 0, 0]
    assert mix_channels(fg, fl, counter=True).flatten().tolist() == [0, 0, 1, 1, 1]


# ------------------------------------------------------------------------------------------
# gradients


def test_gradients_reach_gam_and_cbam() -> None:
    model = build_model("glamor", 4, backbone="resnet18").train()
    x = torch.randn(4, 3, 32, 64)
    labels = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        out = model(x)
        (F.cross_entropy(out.logits, labels) + out.features.pow(2).mean()).backward()
        for name, p in [*model.gam.named_parameters(), *model.cbam.named_parameters()]:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
        opt.step()
    # after one step the spatial BN weight left 0, so every GAM/CBAM tensor gets a gradient
    for name, p in [*model.gam.named_parameters(), *model.cbam.named_parameters()]:
        assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------
# registry and classifier


def test_registry_lists_known_names_on_unknown_model() -> None:
    assert {"glamor", "counter_glamor", "resnet50", "resnext101_32x8d"} <= set(list_models())
    with pytest.raises(ConfigError, match=r"unknown model 'glamour'.*counter_glamor.*glamor"):
        build_model("glamour", 3)
    with pytest.raises(ConfigError, match=r"unknown option.*colour.*allowed.*backbone"):
        build_model("glamor", 3, colour=True)
    with pytest.raises(ConfigError, match="unknown trunk 'vgg16'"):
        build_model("glamor", 3, backbone="vgg16")


def test_arch_records_how_to_rebuild_and_reset_classifier() -> None:
    model = build_model("counter_glamor", 6, backbone="resnet18", last_stride=2, pretrained=None)
    assert model.arch == {
        "name": "counter_glamor",
        "num_classes": 6,
        "backbone": "resnet18",
        "last_stride": 2,
    }
    rebuilt = build_model(**model.arch)
    rebuilt.load_state_dict(model.state_dict())
    trunk_weight = model.trunk.conv1.weight.clone()
    model.reset_classifier(11)
    assert model.num_classes == 11
    assert model.arch["num_classes"] == 11
    assert model.train()(torch.randn(2, 3, 64, 128)).logits.shape == (2, 11)
    assert torch.equal(model.trunk.conv1.weight, trunk_weight)


# ------------------------------------------------------------------------------------------
# trunk weights


def test_trunk_weights_from_file(tmp_path) -> None:
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("glamor", 3, backbone="resnet18", pretrained=str(path))
    assert str(path) in model.weights_message
    assert torch.equal(model.trunk.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(model.trunk.bn1.running_var, reference.bn1.running_var)


def test_wrong_weights_file_names_it(tmp_path) -> None:
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"r34\.pth: not weights of a resnet18 trunk"):
        build_model("glamor", 3, backbone="resnet18", pretrained=str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"garbage\.pth: cannot read"):
        build_model("resnet18", 3, pretrained=str(garbage))
    with pytest.raises(WeightsError, match=r"missing\.pth: weights file not found"):
        build_model("resnet18", 3, pretrained=str(tmp_path / "missing.pth"))


# ------------------------------------------------------------------------------------------
# model + losses together


def test_glamor_fits_a_fixed_batch_with_reid_loss() -> None:
    from vreid.engine.losses import ReidLoss

    model = build_model("glamor", 4, backbone="resnet18").train()
    x = torch.randn(8, 3, 32, 64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    x = x + labels[:, None, None, None].float()  # identities are separable
    loss_fn = ReidLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        out = model(x)
        total, _ = loss_fn(out.features, out.logits, labels)
        total.backward()
        opt.step()
        losses.append(total.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_channels_last_and_bf16_autocast() -> None:
    from vreid.engine.losses import ReidLoss

    model = build_model("counter_glamor", 4, backbone="resnet18").eval()
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        contiguous = model(x)
        model = model.to(memory_format=torch.channels_last)
        channels_last = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-4)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 32, 64))
    assert out.features.dtype == torch.bfloat16
    total, _ = ReidLoss()(out.features, out.logits, torch.tensor([0, 0, 1, 1]))
    assert total.dtype == torch.float32
    total.backward()
    assert torch.isfinite(model.gam.conv1.weight.grad).all()
    assert model.cbam.channel_gate.mlp[0].weight.grad.abs().sum() > 0
