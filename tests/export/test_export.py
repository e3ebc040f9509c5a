"""`vreid export`: a tiny random-weights checkpoint to ONNX, verified with onnxruntime; the
Extractor runs the .onnx like the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vreid.core.config import load_config
from vreid.core.errors import CheckpointError, VreidError
from vreid.inference.extract import Extractor
from vreid.workflows.export import export_onnx, file_sha256, report_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_checkpoint, out, batch=6)


def test_export_is_verified_and_reports_its_numbers(exported, tiny_checkpoint):
    assert exported.onnx.is_file()
    assert exported.image_size == (32, 64)
    assert exported.batch_checked == 6
    assert exported.opset == 20
    assert 0 <= exported.max_abs_diff <= 1e-4 * max(1.0, exported.max_abs_feature)
    assert exported.max_abs_diff_normalized <= 1e-4
    assert exported.max_abs_feature > 0.1  # real features, not zeros
    report = json.loads(report_path(exported.onnx).read_text())
    assert report["checkpoint_sha256"] == file_sha256(tiny_checkpoint)
    assert report["image_size"] == [32, 64]
    assert report["opset"] == 20
    assert report["max_abs_diff"] == exported.max_abs_diff
    text = exported.summary()
    assert "max abs diff" in text
    assert "32×64" in text


def test_onnx_metadata_and_dynamic_batch(exported):
    import onnx

    proto = onnx.load(str(exported.onnx))
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["vreid.image_size"] == [32, 64]
    assert meta["vreid.arch"]["name"] == "glamor"
    assert meta["vreid.checkpoint_sha256"] == exported.checkpoint_sha256
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [3, 32, 64]


@pytest.mark.parametrize("flip", [False, True])
def test_extractor_runs_the_onnx_file_like_the_checkpoint(exported, tiny_checkpoint, images, flip):
    from_pt = Extractor(tiny_checkpoint, device="cpu", batch_size=2, flip=flip)
    from_onnx = Extractor(exported.onnx, device="cpu", batch_size=3, flip=flip)
    assert from_onnx.image_size == from_pt.image_size == (32, 64)
    assert from_onnx.feature_dim == from_pt.feature_dim
    a, b = from_pt(images), from_onnx(images)
    assert b.shape == (5, from_pt.feature_dim)
    assert b.dtype == torch.float32
    assert float((a - b).abs().max()) <= 1e-4
    raw_pt = Extractor(tiny_checkpoint, device="cpu", normalize=False)(images)
    raw_onnx = Extractor(exported.onnx, device="cpu", normalize=False)(images)
    assert float((raw_pt - raw_onnx).abs().max()) <= 1e-4 * float(raw_pt.abs().max())


def test_export_refuses_to_overwrite(exported, tiny_checkpoint):
    before = exported.onnx.read_bytes()
    with pytest.raises(VreidError, match="already exists; pass --overwrite"):
        export_onnx(tiny_checkpoint, exported.onnx)
    assert exported.onnx.read_bytes() == before


def test_cli_export_bad_checkpoint_is_one_line(vreid_cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("nonsense")
    res = vreid_cli("export", bad, "--out", tmp_path / "m.onnx", timeout=120)
    assert res.returncode == 2
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, res.stdout + res.stderr
    assert "bad.pt" in lines[0]
    assert "not a readable vreid checkpoint" in lines[0]
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_prints_the_verification_and_overwrites_on_request(
    vreid_cli, tiny_checkpoint, tmp_path
):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    refused = vreid_cli("export", tiny_checkpoint, "--out", out)
    assert refused.returncode == 2
    assert "--overwrite" in refused.stdout + refused.stderr
    assert out.read_bytes() == b"old"
    res = vreid_cli("export", tiny_checkpoint, "--out", out, "--overwrite", "--batch", "4")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified with onnxruntime on 4 images of 32×64" in res.stdout
    assert "max abs diff" in res.stdout
    assert "[torch.onnx]" not in res.stdout
    assert json.loads(report_path(out).read_text())["batch_checked"] == 4
    assert not list(tmp_path.glob(".*tmp*"))  # no temporaries left


def test_extractor_refuses_a_foreign_onnx_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(CheckpointError, match="without vreid metadata"):
        Extractor(path, device="cpu")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("nonsense")
    with pytest.raises(CheckpointError, match=r"garbage\.onnx: not a readable ONNX model"):
        Extractor(garbage, device="cpu")


def test_search_takes_the_onnx_file(exported, tiny_checkpoint, tiny_synth, tmp_path):
    from vreid.workflows.search import search_images

    query, gallery = tmp_path / "query", tmp_path / "gallery"
    for folder, source, n in ((query, "image_query", 3), (gallery, "image_test", 12)):
        folder.mkdir()
        for p in sorted((tiny_synth / "real" / source).iterdir())[:n]:
            (folder / p.name).write_bytes(p.read_bytes())
    cfg = load_config(None, ["runtime.device=cpu", "retrieval.rerank=false", "retrieval.top=5"])
    runs = [
        search_images([model], query, gallery, tmp_path / name, config=cfg, progress=False)
        for name, model in (("pt", tiny_checkpoint), ("onnx", exported.onnx))
    ]
    np.testing.assert_allclose(runs[0].distances, runs[1].distances, atol=1e-4)
    assert json.loads((runs[1].out_dir / "search.json").read_text())["checkpoints"] == [
        str(exported.onnx.resolve())
    ]


def test_cli_extract_takes_the_onnx_file(exported, tiny_checkpoint, tiny_synth, tmp_path):
    from typer.testing import CliRunner

    from vreid.inference.features import load_features
    from vreid.workflows.cli import app

    runner = CliRunner()
    feats = {}
    for name, model in (("pt", tiny_checkpoint), ("onnx", exported.onnx)):
        out = tmp_path / name
        args = ["extract", str(model), str(tiny_synth / "real"), "--out", str(out)]
        res = runner.invoke(app, [*args, "--splits", "query", "--quiet", "--device", "cpu"])
        assert res.exit_code == 0, res.output
        feats[name], _ = load_features(out / "query")
    np.testing.assert_allclose(feats["pt"], feats["onnx"], atol=1e-4)
