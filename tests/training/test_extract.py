"""Feature extraction: the Extractor on every input kind, feature files, and `vreid extract`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from typer.testing import CliRunner

from vreid.core.errors import CheckpointError
from vreid.inference.extract import Extractor, extract_split
from vreid.inference.features import load_features
from vreid.workflows.cli import app


@pytest.fixture(scope="module")
def extractor(trained_run) -> Extractor:
    return Extractor(trained_run.last_checkpoint, device="cpu", batch_size=4)


def test_paths_pil_images_and_arrays_give_the_same_features(extractor, synth_real):
    paths = [r.path for r in synth_real["gallery"][:5]]
    from_paths = extractor(paths)
    pils = [Image.open(p).convert("RGB") for p in paths]
    from_pil = extractor(pils)
    from_arrays = extractor([np.asarray(im) for im in pils])
    assert from_paths.shape == (5, extractor.feature_dim)
    assert from_paths.dtype == torch.float32
    assert torch.allclose(from_paths, from_pil, atol=1e-6)
    assert torch.allclose(from_paths, from_arrays, atol=1e-6)
    assert torch.allclose(from_paths.norm(dim=1), torch.ones(5), atol=1e-5)  # normalize=True
    # a single image gives one row, and batching does not change the numbers
    single = extractor(str(paths[2]))
    assert single.shape == (1, extractor.feature_dim)
    assert torch.allclose(single[0], from_paths[2], atol=1e-5)


def test_flip_averaging_makes_features_mirror_invariant(trained_run, synth_real):
    image = Image.open(synth_real["query"][0].path).convert("RGB")
    mirrored = ImageOps.mirror(image)
    plain = Extractor(trained_run.last_checkpoint, device="cpu")
    flipped = Extractor(trained_run.last_checkpoint, device="cpu", flip=True)
    assert not torch.allclose(plain([image]), plain([mirrored]), atol=1e-4)
    assert torch.allclose(flipped([image]), flipped([mirrored]), atol=1e-5)


def test_unnormalised_features(trained_run, synth_real):
    raw = Extractor(trained_run.last_checkpoint, device="cpu", normalize=False)
    feats = raw([r.path for r in synth_real["query"][:3]])
    assert not torch.allclose(feats.norm(dim=1), torch.ones(3), atol=1e-2)


def test_extract_split_writes_a_feature_file_with_names(extractor, synth_real, tmp_path):
    records = synth_real["gallery"][:7]
    npy = extract_split(extractor, records, tmp_path / "feats" / "gallery")
    assert npy == tmp_path / "feats" / "gallery.npy"
    feats, _names = load_features(tmp_path / "feats" / "gallery", [r.name for r in records])
    assert feats.shape == (7, extractor.feature_dim)
    assert np.allclose(feats, extractor([r.path for r in records]).numpy(), atol=1e-6)


def test_a_bad_checkpoint_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("nonsense")
    with pytest.raises(CheckpointError, match=r"bad\.pt"):
        Extractor(bad)


def test_cli_extract_dataset_splits_and_plain_folder(trained_run, synth_real, tmp_path):
    runner = CliRunner()
    out = tmp_path / "features"
    args = ["extract", str(trained_run.last_checkpoint), str(synth_real.root), "--out", str(out)]
    res = runner.invoke(app, [*args, "--workers", "0", "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for split in ("query", "gallery"):
        feats, names = load_features(out / split, [r.name for r in synth_real[split]])
        assert feats.shape[0] == len(synth_real[split])

    folder = tmp_path / "my_photos"
    (folder / "sub").mkdir(parents=True)
    for i, r in enumerate(synth_real["query"][:3]):
        shutil.copy(r.path, folder / ("sub" if i == 2 else "") / f"car{i}{r.path.suffix}")
    res = runner.invoke(
        app,
        [
            "extract",
            str(trained_run.last_checkpoint),
            str(folder),
            "--out",
            str(out),
            "--workers",
            "0",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    feats, names = load_features(out / "images")
    suffix = synth_real["query"][0].path.suffix
    assert names == [f"car0{suffix}", f"car1{suffix}", f"sub/car2{suffix}"]
    assert feats.shape == (3, feats.shape[1])


def test_cli_refuses_to_overwrite_features(trained_run, synth_real, tmp_path, vreid_cli):
    out = tmp_path / "features"
    out.mkdir()
    (out / "query.npy").write_bytes(b"previous run")
    done = vreid_cli(
        "extract", trained_run.last_checkpoint, synth_real.root, "--out", out, "--device", "cpu",
        "--quiet",
    )  # fmt: skip
    assert done.returncode == 2
    assert "query.npy already exists" in done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "query.npy").read_bytes() == b"previous run"
