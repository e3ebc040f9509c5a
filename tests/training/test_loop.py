"""The training loop: it learns, resumes exactly, runs under DDP, and refuses bad input clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from vreid.errors import CheckpointError, ConfigError, DatasetError
from vreid.models import build_model
from vreid.training.checkpoint import load_checkpoint
from vreid.training.evaluation import evaluate_model
from vreid.training.loop import train


def _map_of(model, dataset, image_size) -> float:
    result = evaluate_model(
        model,
        dataset["query"],
        dataset["gallery"],
        image_size=image_size,
        device=torch.device("cpu"),
        protocol="all",
    )
    return float(result["mAP"])


@pytest.mark.slow
def test_training_lowers_the_loss_and_raises_map(tmp_path, synth_real, small_config):
    cfg = small_config(
        synth_real.root,
        "model.image_size=[64,128]",
        "train.epochs=4",
        "train.max_iters_per_epoch=6",
        "train.lr=1e-3",
        "train.eval_every=4",
        "retrieval.protocol=all",
    )
    torch.manual_seed(cfg.train.seed)  # the initial weights train() starts from
    n_ids = len({r.vehicle_id for r in synth_real["train"]})
    untrained = build_model("glamor", n_ids, backbone="resnet18")
    map_before = _map_of(untrained, synth_real, (64, 128))

    result = train(cfg, tmp_path / "run", dataset=synth_real, progress=False)

    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    map_after = result.history[-1]["mAP"]
    assert map_after > map_before + 0.05, (map_before, map_after)
    assert result.best_map == pytest.approx(map_after)
    assert result.best_checkpoint is not None
    assert result.best_checkpoint.is_file()
    # the recorded mAP is what the saved best checkpoint gives
    from vreid.training.checkpoint import load_model

    assert _map_of(load_model(result.best_checkpoint), synth_real, (64, 128)) == pytest.approx(
        map_after, abs=1e-6
    )
    history = json.loads((result.out_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert list((result.out_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path, synth_real, small_config):
    common = ("train.step_size=1", "train.checkpoint_every=1")
    whole = train(
        small_config(synth_real.root, "train.epochs=2", *common),
        tmp_path / "whole",
        dataset=synth_real,
        progress=False,
    )
    first = train(
        small_config(synth_real.root, "train.epochs=1", *common),
        tmp_path / "split",
        dataset=synth_real,
        progress=False,
    )
    resumed = train(
        small_config(synth_real.root, "train.epochs=2", *common),
        first.out_dir,
        resume=True,
        dataset=synth_real,
        progress=False,
    )
    assert resumed.out_dir == first.out_dir
    a = load_checkpoint(whole.last_checkpoint)
    b = load_checkpoint(resumed.last_checkpoint)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 2
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    # the lr decayed once per epoch (step_size=1, gamma=0.2)
    assert b["history"][1]["lr"] == pytest.approx(a["config"]["train"]["lr"] * 0.2)
    assert (first.out_dir / "checkpoints" / "epoch_002.pt").is_file()


def test_a_run_directory_is_never_overwritten(tmp_path, trained_run, synth_real, small_config):
    before = trained_run.last_checkpoint.read_bytes()
    again = train(
        small_config(synth_real.root), trained_run.out_dir, dataset=synth_real, progress=False
    )
    assert again.out_dir == trained_run.out_dir.with_name(trained_run.out_dir.name + "-2")
    assert trained_run.last_checkpoint.read_bytes() == before


def test_init_from_keeps_the_trunk_and_starts_a_fresh_classifier(
    tmp_path, trained_run, synth_real, small_config
):
    train_ids = sorted({r.vehicle_id for r in synth_real["train"]})
    subset = [r for r in synth_real["train"] if r.vehicle_id in train_ids[:6]]
    smaller = replace(synth_real, splits={**synth_real.splits, "train": subset})
    result = train(
        small_config(smaller.root, "train.lr=1e-12", "train.max_iters_per_epoch=1"),
        tmp_path / "finetune",
        init_from=trained_run.last_checkpoint,
        dataset=smaller,
        progress=False,
    )
    source = load_checkpoint(trained_run.last_checkpoint)
    tuned = load_checkpoint(result.last_checkpoint)
    assert tuned["arch"]["num_classes"] == 6
    assert tuned["model"]["head.classifier.weight"].shape[0] == 6
    conv = "trunk.conv1.weight"
    assert torch.allclose(tuned["model"][conv], source["model"][conv], atol=1e-6)
    assert tuned["epoch"] == 1  # a new run: its own epoch count and optimiser


def test_init_from_a_checkpoint_of_another_architecture(
    tmp_path, trained_run, synth_real, small_config
):
    with pytest.raises(CheckpointError, match=r"'glamor'.*'resnet50'.*set model\.name=glamor"):
        train(
            small_config(synth_real.root, "model.name=resnet50"),
            tmp_path / "other",
            init_from=trained_run.last_checkpoint,
            dataset=synth_real,
            progress=False,
        )


def test_resume_on_a_dataset_with_another_number_of_ids(tmp_path, synth_real, small_config):
    first = train(small_config(synth_real.root), tmp_path / "r", dataset=synth_real, progress=False)
    train_ids = sorted({r.vehicle_id for r in synth_real["train"]})
    subset = [r for r in synth_real["train"] if r.vehicle_id in train_ids[:5]]
    other = replace(synth_real, splits={**synth_real.splits, "train": subset})
    with pytest.raises(CheckpointError, match=r"identities, this dataset has 5.*--init-from"):
        train(
            small_config(other.root, "train.epochs=2"),
            first.out_dir,
            resume=True,
            dataset=other,
            progress=False,
        )


def test_resume_without_a_run(tmp_path, synth_real, small_config):
    with pytest.raises(CheckpointError, match=r"last\.pt: nothing to resume"):
        train(small_config(), tmp_path / "none", resume=True, dataset=synth_real, progress=False)


def test_too_few_ids_for_a_pk_batch(tmp_path, synth_real, small_config):
    n_ids = len({r.vehicle_id for r in synth_real["train"]})
    with pytest.raises(DatasetError, match=rf"has {n_ids} identities.*train\.p to at most {n_ids}"):
        train(
            small_config(synth_real.root, f"train.p={n_ids + 1}"),
            tmp_path / "pk",
            dataset=synth_real,
            progress=False,
        )
    assert not (tmp_path / "pk" / "checkpoints").exists()


def test_missing_data_root(tmp_path, small_config):
    with pytest.raises(ConfigError, match=r"data\.root is not set"):
        train(small_config(), tmp_path / "x", progress=False)


@pytest.mark.ddp
def test_ddp_on_cpu_with_two_processes(tmp_path, tiny_synth, small_overrides):
    out = tmp_path / "ddp"
    sets = [*small_overrides, f"data.root={tiny_synth / 'real'}", "train.epochs=2"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "vreid.cli",
        "train",
        "--out",
        str(out),
        "--quiet",
        *[arg for kv in sets for arg in ("--set", kv)],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 epochs") == 1  # only rank 0 reports
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2
    assert ckpt["epoch"] == 2
    # each rank keeps its own random streams (augmentation differs per rank)
    assert len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    history = ckpt["history"]
    assert all(h["loss"] == h["loss"] and h["loss"] > 0 for h in history)  # finite, positive
    assert [h["iterations"] for h in history] == [2, 2]  # steps per rank (max_iters_per_epoch)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
