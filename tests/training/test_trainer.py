"""The one trainer: re-id, attribute heads and detector share AMP, the non-finite-loss check,
checkpoints, history, TensorBoard and exact resuming (tiny sizes, CPU, a few steps each).

Faults are injected through the trainer's public hook API: a hook that makes a weight NaN (the
loss follows) or that raises in the middle of an epoch (a killed process: what was saved at the
last epoch's end is all a resume has).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from vreid.core.config import load_config
from vreid.core.errors import CheckpointError, NonFiniteLossError, VreidError
from vreid.engine.attributes import train_attributes
from vreid.engine.detector import train_detector, training_dir
from vreid.engine.reid import train
from vreid.engine.trainer import HookBase
from vreid.models.checkpoint import load_checkpoint

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"
# two steps per epoch: 4 images, batches of 2, 64-pixel inputs
DETECTOR_ARGS: dict[str, Any] = {
    "detector": DETECTOR,
    "batch_size": 2,
    "max_images": 4,
    "image_size": 64,
    "held_out_splits": (),
    "device": "cpu",
    "progress": False,
}
# as tests/attributes/test_training.py (resnet18 trunk, 32×32 images), two steps per epoch
ATTRIBUTES = (
    "attributes.backbone=resnet18",
    "attributes.image_size=[32, 32]",
    "attributes.last_stride=2",
    "attributes.embed_dim=16",
    "attributes.reid_epochs=1",
    "attributes.batch_size=8",
    "attributes.holdout_fraction=0.34",
    "attributes.pretrained=null",
    "attributes.step_size=1",
    "train.p=2",
    "train.k=2",
    "train.max_iters_per_epoch=2",
    "train.num_workers=0",
    "runtime.device=cpu",
)
# what every trainer checkpoint holds, whichever the training
TRAINER_KEYS = {"model", "arch", "epoch", "optimizer", "scheduler", "rng", "history", "world_size"}


class Killed(Exception):
    """Stands for the process being killed."""


class KillAt(HookBase):
    """Raise after step ``iteration`` (1-based) of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch: int, iteration: int = 1) -> None:
        self.epoch, self.iteration = epoch, iteration

    def after_step(self) -> None:
        t = self.trainer
        if t.epoch + 1 == self.epoch and t.iter == self.iteration:
            raise Killed


class PoisonAt(HookBase):
    """From epoch ``epoch`` (1-based) on, the first trained weight is NaN: so is the loss."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def before_epoch(self) -> None:
        t = self.trainer
        if t.epoch + 1 == self.epoch:
            with torch.no_grad():
                weight = next(p for p in t.bare_model.parameters() if p.requires_grad)
                weight.fill_(float("nan"))


@dataclass
class Run:
    """One training's way to run: ``run(out, epochs, hooks=..., **extra)`` and its run folder."""

    run: Callable[..., Any]
    run_dir: Callable[[Path], Path]
    """The folder with checkpoints/last.pt, history.json, tensorboard/ for output ``out``."""
    parts: tuple[str, ...]


@pytest.fixture(scope="module")
def trainings(tiny_synth: Path, synth_real, small_config) -> dict[str, Run]:
    def reid(out: Path, epochs: int, **kw: Any) -> Any:
        sets = [f"train.epochs={epochs}", "train.max_iters_per_epoch=1", *kw.pop("sets", ())]
        return train(small_config(synth_real.root, *sets), out, dataset=synth_real, **kw)

    def attributes(out: Path, epochs: int, **kw: Any) -> Any:
        sets = [*ATTRIBUTES, f"attributes.data_root={tiny_synth / 'simulation'}"]
        sets += [f"attributes.epochs={epochs}", "attributes.reid=false", *kw.pop("sets", ())]
        return train_attributes(load_config(None, sets), out, **kw)

    def detector(out: Path, epochs: int, **kw: Any) -> Any:
        kw.pop("sets", None)
        return train_detector(
            tiny_synth / "real", out / "det.pt", epochs=epochs, **{**DETECTOR_ARGS, **kw}
        )

    return {
        "reid": Run(reid, lambda out: out, ("triplet", "ce")),
        "attributes": Run(attributes, lambda out: out / "heads", ("color", "type")),
        "detector": Run(
            detector,
            lambda out: training_dir(out / "det.pt"),
            ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"),
        ),
    }


KINDS = ["reid", "attributes", "detector"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_non_finite_loss_is_one_error_and_keeps_the_last_good_checkpoint(
    kind: str, trainings: dict[str, Run], tmp_path: Path
) -> None:
    t = trainings[kind]
    with pytest.raises(NonFiniteLossError, match=r"the loss became nan at epoch 2, iteration 1; "):
        t.run(tmp_path, 2, hooks=[PoisonAt(2)], progress=False)
    run_dir = t.run_dir(tmp_path)
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 1  # epoch 1's checkpoint, not overwritten by the failing epoch
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    assert issubclass(NonFiniteLossError, VreidError)  # the CLI prints it on one line


@pytest.mark.parametrize("kind", KINDS)
def test_same_run_folder_and_bf16_autocast_in_every_training(
    kind: str, trainings: dict[str, Run], tmp_path: Path
) -> None:
    """Each training leaves checkpoints/last.pt, history.json and tensorboard/ with the same
    contents; train.amp (re-id, attribute heads) / amp= (detector) runs the forward in bfloat16
    on the CPU: the loss moves a little from the float32 one, the weights stay float32."""
    t = trainings[kind]
    t.run(tmp_path / "fp32", 1, progress=False)
    run_dir = t.run_dir(tmp_path / "fp32")
    full = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert set(full) >= TRAINER_KEYS
    assert full["epoch"] == 1
    assert full["world_size"] == 1
    assert full["scheduler"]["last_epoch"] >= 1
    assert len(full["rng"]) == 1  # one process
    (record,) = json.loads((run_dir / "history.json").read_text())
    assert record == full["history"][0]
    assert {"epoch", "loss", "lr", "images_per_s", "iterations", *t.parts} <= set(record)
    assert record["iterations"] in (1, 2)
    # the loss is the sum of its parts (re-id: the triplet weighs 10 by default)
    weights = {"triplet": 10.0} if kind == "reid" else {}
    parts = sum(weights.get(p, 1.0) * record[p] for p in t.parts)
    assert record["loss"] == pytest.approx(parts, rel=1e-5)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    amp = {"sets": ["train.amp=bf16"]} if kind != "detector" else {"amp": "bf16"}
    t.run(tmp_path / "bf16", 1, progress=False, **amp)
    half = load_checkpoint(t.run_dir(tmp_path / "bf16") / "checkpoints" / "last.pt")
    l32, l16 = full["history"][0]["loss"], half["history"][0]["loss"]
    assert l16 != l32
    assert l16 == pytest.approx(l32, rel=0.1)
    assert all(v.dtype == full["model"][k].dtype for k, v in half["model"].items())
    assert half["model"][next(iter(full["model"]))].dtype == torch.float32


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_run_resumes_bit_identical(
    kind: str, trainings: dict[str, Run], tmp_path: Path
) -> None:
    """Two epochs in one go, and two epochs killed during the second then resumed, end with the
    same weights, optimizer state, RNG state and losses. The attribute model runs both steps:
    the resumed run finds step 1 done and continues step 2."""
    t = trainings[kind]
    sets = ["attributes.reid=true"] if kind == "attributes" else []
    whole = tmp_path / "whole"
    t.run(whole, 2, progress=False, sets=sets)
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        t.run(killed, 2, hooks=[KillAt(epoch=2, iteration=1)], progress=False, sets=sets)
    assert load_checkpoint(t.run_dir(killed) / "checkpoints" / "last.pt")["epoch"] == 1
    t.run(killed, 2, resume=True, progress=False, sets=sets)

    a = load_checkpoint(t.run_dir(whole) / "checkpoints" / "last.pt")
    b = load_checkpoint(t.run_dir(killed) / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for x, y in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        for name in x:
            assert torch.equal(torch.as_tensor(x[name]), torch.as_tensor(y[name])), name
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    losses = [[h[k] for k in ("loss", *t.parts)] for h in a["history"]]
    assert losses == [[h[k] for k in ("loss", *t.parts)] for h in b["history"]]
    assert losses[1] != losses[0]  # the second epoch trained on

    # and the final artefacts agree
    if kind == "reid":
        return
    if kind == "attributes":
        fa = load_checkpoint(whole / "checkpoints" / "attributes.pt")["model"]
        fb = load_checkpoint(killed / "checkpoints" / "attributes.pt")["model"]
    else:
        fa = torch.load(whole / "det.pt", weights_only=True)["model"]
        fb = torch.load(killed / "det.pt", weights_only=True)["model"]
    assert all(torch.equal(v, fb[k]) for k, v in fa.items())


def test_detector_progress_time_budget_and_resume_of_a_finished_run(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    """The detector shows the shared progress bar and epoch lines; a time budget stops it after
    the step that crosses it (that epoch is saved); resuming a finished run trains nothing."""
    out = tmp_path / "det.pt"
    result = train_detector(
        tiny_synth / "real", out, epochs=3, max_minutes=1e-9, **{**DETECTOR_ARGS, "progress": True}
    )
    assert result.epochs == 1  # stopped by the budget after its first step
    err = capsys.readouterr().err
    assert "detector epoch 1/3: loss" in err
    last = load_checkpoint(training_dir(out) / "checkpoints" / "last.pt")
    assert last["epoch"] == 1
    assert [h["iterations"] for h in last["history"]] == [1]
    assert torch.load(out, weights_only=True)["history"] == [last["history"][0]["loss"]]

    one = tmp_path / "one.pt"
    first = train_detector(tiny_synth / "real", one, epochs=1, **DETECTOR_ARGS)
    before = torch.load(one, weights_only=True)["model"]
    with caplog.at_level(logging.INFO, logger="vreid.engine"):
        again = train_detector(tiny_synth / "real", one, epochs=1, resume=True, **DETECTOR_ARGS)
    assert "nothing to do: 1 epoch done; raise --epochs to train further" in caplog.text
    assert again.epochs == first.epochs == 1
    assert again.history == first.history
    after = torch.load(one, weights_only=True)["model"]
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_detector_refuses_to_mix_runs(tiny_synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "det.pt"
    with pytest.raises(CheckpointError, match=r"nothing to resume"):
        train_detector(tiny_synth / "real", out, epochs=1, resume=True, **DETECTOR_ARGS)
    with pytest.raises(Killed):
        train_detector(
            tiny_synth / "real", out, epochs=2, hooks=[KillAt(2)], **DETECTOR_ARGS
        )  # epoch 1 saved, no det.pt yet
    assert not out.exists()
    with pytest.raises(VreidError, match=r"unfinished training of .*--resume.*--overwrite"):
        train_detector(tiny_synth / "real", out, epochs=2, **DETECTOR_ARGS)
    with pytest.raises(CheckpointError, match=r"same --detector and --image-size"):
        train_detector(
            tiny_synth / "real", out, epochs=2, resume=True, **{**DETECTOR_ARGS, "image_size": 96}
        )
    # --overwrite starts again from scratch
    fresh = train_detector(tiny_synth / "real", out, epochs=1, overwrite=True, **DETECTOR_ARGS)
    assert fresh.epochs == 1
    assert load_checkpoint(training_dir(out) / "checkpoints" / "last.pt")["epoch"] == 1
