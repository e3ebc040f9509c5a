"""The small inference file (checkpoints/model.pt) training writes beside last.pt, and what a
checkpoint says about the data its model was trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vreid.core.config import load_config
from vreid.inference.extract import Extractor
from vreid.models.checkpoint import load_checkpoint, save_checkpoint
from vreid.retrieval.index_store import GalleryIndex
from vreid.workflows.export import export_onnx
from vreid.workflows.index import build_index


def _gallery(synth_real):
    return [r.path for r in synth_real["gallery"]]


def test_inference_file_is_small_and_gives_identical_features(trained_run, synth_real):
    last, small = trained_run.last_checkpoint, trained_run.inference_checkpoint
    assert small == last.with_name("model.pt")
    # Adam keeps two moments per weight: last.pt is about three times the weights-only file
    assert small.stat().st_size < 0.4 * last.stat().st_size
    state = load_checkpoint(small)  # weights_only=True
    assert {"optimizer", "scheduler", "rng", "sampler", "history"}.isdisjoint(state)
    assert state["epoch"] == 1
    assert state["vehicle_ids"] == load_checkpoint(last)["vehicle_ids"]
    images = _gallery(synth_real)
    a = Extractor(last, device="cpu")(images)
    b = Extractor(small, device="cpu")(images)
    assert a.shape[0] == len(images)
    assert torch.equal(a, b)


@pytest.mark.slow
def test_export_and_index_take_the_inference_file(trained_run, synth_real, tmp_path):
    small = trained_run.inference_checkpoint
    exported = export_onnx(small, tmp_path / "model.onnx")
    onnx = Extractor(exported.onnx, device="cpu")
    assert onnx.trained_on == Extractor(small, device="cpu").trained_on
    folder = synth_real.root / "image_test"
    build_index(
        folder,
        tmp_path / "ix",
        [small],
        config=load_config(None, ["runtime.device=cpu"]),
        progress=False,
    )
    ix = GalleryIndex(tmp_path / "ix")
    paths = ix.items().paths
    expected = Extractor(trained_run.last_checkpoint, device="cpu")(paths).numpy()
    np.testing.assert_allclose(ix.features(ix.models[0]), expected, atol=1e-6)


def test_checkpoints_say_what_they_were_trained_on(trained_run, synth_real):
    n_ids = len({r.vehicle_id for r in synth_real["train"]})
    n_images = len(synth_real["train"])
    for ckpt in (trained_run.last_checkpoint, trained_run.inference_checkpoint):
        extract = Extractor(ckpt, device="cpu")
        assert extract.trained_on == {
            "dataset": str(synth_real.root),
            "format": "aic20",
            "identities": n_ids,
            "images": n_images,
            "image_size": [32, 64],
            "epochs": 1,
        }
        assert extract.training_note == (
            f"trained on {synth_real.root} (aic20): {n_ids} identities, {n_images} images, "
            "input 32×64 (h×w), 1 epoch"
        )


def test_an_older_checkpoint_says_unknown(trained_run, tmp_path):
    state = load_checkpoint(trained_run.inference_checkpoint)
    del state["trained_on"]
    old = save_checkpoint(tmp_path / "old.pt", state)
    extract = Extractor(old, device="cpu")
    n_ids = state["arch"]["num_classes"]
    assert extract.trained_on["dataset"] is None
    assert extract.training_note == (
        f"trained on unknown: {n_ids} identities, unknown images, input 32×64 (h×w), 1 epoch"
    )
