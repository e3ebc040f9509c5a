"""The training loop: it learns, resumes exactly, runs under DDP, and refuses bad input clearly."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from vreid.core.errors import CheckpointError, ConfigError, DatasetError
from vreid.data.image_datasets import holdout_query_gallery
from vreid.engine.evaluation import evaluate_model
from vreid.engine.reid import train
from vreid.models import build_model
from vreid.models.checkpoint import load_checkpoint, load_model


def _map_of(model, query, gallery, image_size) -> float:
    """mAP with the VeRi protocol: a query's own camera is removed from its gallery."""
    result = evaluate_model(
        model, query, gallery, image_size=image_size, device=torch.device("cpu"), protocol="veri"
    )
    return float(result["mAP"])


@pytest.mark.slow
def test_training_lowers_the_loss_and_raises_map(tmp_path, synth_real, small_config, caplog):
    """24 steps from scratch: the loss falls and cross-camera retrieval of the training
    identities improves (query = one image per vehicle and camera, its own camera excluded from
    the gallery). The tiny preset's 8 training ids are too few for retrieval of unseen ids to
    improve measurably in a test's budget; docs/readme/training.md quotes a demo-preset run."""
    query, gallery = holdout_query_gallery(synth_real["train"])
    seen_ids = replace(
        synth_real, splits={"train": synth_real["train"], "query": query, "gallery": gallery}
    )
    cfg = small_config(
        synth_real.root,
        "train.epochs=8",
        "train.max_iters_per_epoch=3",
        "train.lr=1e-3",
        "train.eval_every=4",
        "retrieval.protocol=veri",
    )
    size = tuple(cfg.model.image_size)
    torch.manual_seed(cfg.train.seed)  # the initial weights train() starts from
    n_ids = len({r.vehicle_id for r in synth_real["train"]})
    untrained = build_model("glamor", n_ids, backbone="resnet18")
    seen_before = _map_of(untrained, query, gallery, size)

    with caplog.at_level(logging.INFO, logger="vreid.engine"):
        result = train(cfg, tmp_path / "run", dataset=seen_ids, progress=False)
    assert "best.pt use the query/gallery (test) split" in caplog.text

    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    seen_after = result.history[-1]["mAP"]
    assert seen_after > seen_before + 0.1, (seen_before, seen_after)
    assert [h["epoch"] for h in result.history if "mAP" in h] == [4, 8]
    assert result.best_map == pytest.approx(max(h["mAP"] for h in result.history if "mAP" in h))
    trained = load_model(result.last_checkpoint)
    assert _map_of(trained, query, gallery, size) == pytest.approx(seen_after, abs=1e-6)
    history = json.loads((result.out_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert list((result.out_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert result.best_checkpoint == result.out_dir / "checkpoints" / "best.pt"


def test_validation_identities_evaluate_and_choose_best_pt_without_test_data(
    tmp_path, synth_real, small_config, caplog
):
    """With train.val_fraction, held-out training identities are the evaluation set: a dataset
    without query/gallery is evaluated, the held-out ids never reach the classifier, and the
    recorded mAP is that of their images (first image per id and camera as the query)."""
    train_only = replace(synth_real, splits={"train": synth_real["train"]})
    all_ids = {r.vehicle_id for r in synth_real["train"]}
    cfg = small_config(
        synth_real.root, "train.epochs=2", "train.eval_every=1", "train.val_fraction=0.25"
    )
    with caplog.at_level(logging.INFO, logger="vreid.engine"):
        result = train(cfg, tmp_path / "run", dataset=train_only, progress=False)
    assert "evaluation and best.pt use them, not query/gallery" in caplog.text
    assert "(test) split" not in caplog.text

    val_ids = {int(x) for x in (result.out_dir / "val_ids.txt").read_text().split()}
    assert len(val_ids) == round(0.25 * len(all_ids))
    assert val_ids <= all_ids
    state = load_checkpoint(result.last_checkpoint)
    assert sorted(state["vehicle_ids"]) == sorted(all_ids - val_ids)
    assert state["arch"]["num_classes"] == len(all_ids) - len(val_ids)
    evaluated = [h for h in result.history if "mAP" in h]
    assert [h["epoch"] for h in evaluated] == [1, 2]
    assert {h["eval_split"] for h in evaluated} == {"validation"}
    assert result.best_checkpoint == result.out_dir / "checkpoints" / "best.pt"

    query, gallery = holdout_query_gallery(
        [r for r in synth_real["train"] if r.vehicle_id in val_ids]
    )
    size = tuple(cfg.model.image_size)
    assert _map_of(load_model(result.last_checkpoint), query, gallery, size) == pytest.approx(
        evaluated[-1]["mAP"], abs=1e-6
    )

    # the same dataset without validation has nothing to evaluate on
    plain = train(
        small_config(synth_real.root, "train.eval_every=1"),
        tmp_path / "plain",
        dataset=train_only,
        progress=False,
    )
    assert not any("mAP" in h for h in plain.history)
    assert plain.best_checkpoint is None


def test_too_large_a_validation_share_is_refused(tmp_path, synth_real, small_config):
    cfg = small_config(synth_real.root, "train.val_fraction=0.9")
    with pytest.raises(ConfigError, match=r"holds out 7 of 8 training identities, leaving 1,"):
        train(cfg, tmp_path / "run", dataset=synth_real, progress=False)


def test_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path, synth_real, small_config):
    common = ("train.step_size=1", "train.checkpoint_every=1", "train.max_iters_per_epoch=1")
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
        small_config(synth_real.root, "train.max_iters_per_epoch=1"),
        trained_run.out_dir,
        dataset=synth_real,
        progress=False,
    )
    assert again.out_dir == trained_run.out_dir.with_name(trained_run.out_dir.name + "-2")
    assert trained_run.last_checkpoint.read_bytes() == before


def test_bf16_autocast_on_cpu(tmp_path, synth_real, small_config):
    cfg = small_config(synth_real.root, "train.amp=bf16", "train.max_iters_per_epoch=1")
    result = train(cfg, tmp_path / "bf16", dataset=synth_real, progress=False)
    loss = result.history[0]["loss"]
    assert math.isfinite(loss)
    assert loss > 0
    weights = load_checkpoint(result.last_checkpoint)["model"]
    assert weights["trunk.conv1.weight"].dtype == torch.float32  # autocast keeps fp32 masters


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


def test_resume_on_a_dataset_with_another_number_of_ids(trained_run, synth_real, small_config):
    before = trained_run.last_checkpoint.read_bytes()
    train_ids = sorted({r.vehicle_id for r in synth_real["train"]})
    subset = [r for r in synth_real["train"] if r.vehicle_id in train_ids[:5]]
    other = replace(synth_real, splits={**synth_real.splits, "train": subset})
    with pytest.raises(CheckpointError, match=r"identities, this dataset has 5.*--init-from"):
        train(
            small_config(other.root, "train.epochs=2"),
            trained_run.out_dir,
            resume=True,
            dataset=other,
            progress=False,
        )
    assert trained_run.last_checkpoint.read_bytes() == before


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
    assert not (tmp_path / "pk").exists()  # checked before the run directory is made


def test_an_unreadable_training_image_is_named(tmp_path, synth_real, small_config):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    records = [replace(r, path=broken) for r in synth_real["train"]]
    bad = replace(synth_real, splits={**synth_real.splits, "train": records})
    cfg = small_config(bad.root, "train.num_workers=1")  # the error comes from a worker process
    with pytest.raises(DatasetError) as info:
        train(cfg, tmp_path / "run", dataset=bad, progress=False)
    assert str(info.value).startswith(f"{broken}: cannot read the image")
    assert "Traceback" not in str(info.value)


def test_missing_data_root(tmp_path, small_config):
    with pytest.raises(ConfigError, match=r"data\.root is not set"):
        train(small_config(), tmp_path / "x", progress=False)


@pytest.mark.ddp
def test_ddp_on_cpu_with_two_processes(tmp_path, tiny_synth, small_overrides):
    out = tmp_path / "ddp"
    sets = [*small_overrides, f"data.root={tiny_synth / 'real'}", "train.epochs=2"]
    sets += ["train.eval_every=1"]  # rank 0 evaluates while the other waits
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "vreid.workflows.cli",
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
    # each rank ran its share of the PK batches, at most max_iters_per_epoch=2
    assert all(1 <= h["iterations"] <= 2 for h in history), history
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert all(0 <= h["mAP"] <= 1 for h in history)
    assert (out / "checkpoints" / "best.pt").is_file()


def test_resume_refuses_settings_it_would_not_use(trained_run, synth_real, small_config):
    """A resume goes on with the run's own settings: a changed learning rate (recorded but never
    used, before) or fewer epochs than done are refused, and nothing of the run is touched."""
    ckpt = trained_run.last_checkpoint.read_bytes()
    saved = (trained_run.out_dir / "config.yaml").read_bytes()
    done = trained_run.epochs
    with pytest.raises(ConfigError, match=r"these differ: train\.lr: 0\.\d+ → 0\.05"):
        train(
            small_config(synth_real.root, f"train.epochs={done + 1}", "train.lr=0.05"),
            trained_run.out_dir,
            resume=True,
            dataset=synth_real,
            progress=False,
        )
    if done > 1:
        with pytest.raises(ConfigError, match=r"more than train\.epochs=1"):
            train(
                small_config(synth_real.root, "train.epochs=1"),
                trained_run.out_dir,
                resume=True,
                dataset=synth_real,
                progress=False,
            )
    assert trained_run.last_checkpoint.read_bytes() == ckpt
    assert (trained_run.out_dir / "config.yaml").read_bytes() == saved


def test_a_run_directory_in_use_is_refused(trained_run, synth_real, small_config):
    """Two runs on one folder: while another process holds it, a resume is refused naming the
    holder, and the run is not touched."""
    import subprocess
    import sys

    from vreid.core.errors import VreidError

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from vreid.core.artefacts import run_lock\n"
            f"with run_lock({str(trained_run.out_dir)!r}):\n    print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(VreidError, match=rf"in use by pid {holder.pid} "):
            train(
                small_config(synth_real.root, f"train.epochs={trained_run.epochs + 1}"),
                trained_run.out_dir,
                resume=True,
                dataset=synth_real,
                progress=False,
            )
    finally:
        holder.kill()
        holder.wait()


def test_a_batch_larger_than_the_split_is_refused_before_allocating(
    tmp_path, synth_real, small_config
):
    with pytest.raises(ConfigError, match=r"train\.p × train\.k = \d+×5000 = \d+ images per batch"):
        train(
            small_config(synth_real.root, "train.k=5000"),
            tmp_path / "run",
            dataset=synth_real,
            progress=False,
        )
