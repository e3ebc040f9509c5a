"""The paper's stages: ``run_pipeline(config, run_dir, from_stage=None)``.

Stages, in order (``vreid pipeline --from STAGE`` re-runs from one)::

    data        generate the built-in synthetic data when no dataset is configured; crop (optional);
                read the dataset; records.json, dataset_stats.json
    attributes  colour/type model (trained on labelled simulation data), features of query/gallery
    train-<m>   each embedding model: synthetic pre-training, then fine-tuning from that checkpoint
    extract     query/gallery features of every model, of an untrained model and colour histograms
    distances   the retrieval chain (vreid.retrieval.chain, as `vreid rank` and `vreid search`):
                distances/<row>.npy for every row of the table (floors, models, ensemble,
                + re-ranking, + metadata, + track averaging) and distances/rows.json
    metrics     metrics.json: one entry per row of the paper's Table 2 (needs query/gallery ids)
    submission  track2.txt from the final row
    report      report/index.html

Each stage declares the config keys it reads; the engine (:mod:`.engine`) derives its cache key
from them, skips it when up to date, and resumes an interrupted one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vreid.core.artefacts import (
    atomic_path,
    read_json,
    run_lock,
    write_json_atomic,
    write_npy_atomic,
)
from vreid.core.config import INFORMATIONAL_KEYS, Config, RetrievalConfig
from vreid.core.errors import ConfigError, DatasetError, VreidError
from vreid.data import ReidDataset, load_from_config
from vreid.data.image_datasets import holdout_query_gallery
from vreid.engine.attributes import train_attributes
from vreid.engine.reid import train
from vreid.engine.trainer import seed_rng
from vreid.inference.attributes import (
    ATTRIBUTE_CHECKPOINT,
    attribute_features,
    extract_attribute_features,
)
from vreid.inference.crop import crop_dataset, crop_settings
from vreid.inference.extract import Extractor, extract_split
from vreid.inference.features import save_features
from vreid.models.checkpoint import arch_from_config, build_from_arch, save_model_checkpoint
from vreid.models.detectors import file_sha256
from vreid.retrieval.chain import (
    RetrievalChain,
    ground_truth,
    load_attributes,
    load_pair,
    model_distance,
    score,
)
from vreid.retrieval.submission import write_submission
from vreid.synth import generate_from_config
from vreid.workflows.calibration import colour_histogram_features
from vreid.workflows.pipeline.engine import (
    RunContext,
    Stage,
    config_values,
    console,
    hash_obj,
    run_stages,
)
from vreid.workflows.report import build_report
from vreid.workflows.tune import apply_tuned, tune_retrieval

# metrics.json rows of the floors (the models use their names; the chain's rows:
# vreid.retrieval.chain).
COLOUR_HISTOGRAM = "colour_histogram"
UNTRAINED = "untrained"


@dataclass
class PipelineContext(RunContext):
    """The engine's context plus the paper's shared reads: the dataset roots the data stage chose
    and the dataset itself (read once, dropped after a stage that may change them)."""

    _cache: dict[str, Any] = field(default_factory=dict)

    def forget(self) -> None:
        self._cache.clear()

    @property
    def roots(self) -> dict[str, Any]:
        """``{"real": path, "sim": path | None, "format": ..., "sim_format": ...}`` (data stage)."""
        if "roots" not in self._cache:
            self._cache["roots"] = read_json(self.path("data_roots.json"))
        return self._cache["roots"]

    def dataset(self) -> ReidDataset:
        if "dataset" not in self._cache:
            r = self.roots
            self._cache["dataset"] = load_from_config(
                self.config.data, root=Path(r["real"]), format=r["format"]
            )
        return self._cache["dataset"]

    def trained_models(self) -> list[str]:
        return list(dict.fromkeys(self.config.pipeline.models))

    def ensemble_models(self) -> list[str]:
        return ensemble_members(self.config)


def ensemble_members(config: Config) -> list[str]:
    """``pipeline.ensemble``, checked: every member is trained (in ``pipeline.models``), none is
    listed twice, and ``retrieval.ensemble_weights`` (when set) has one weight per member."""
    pc = config.pipeline
    members = list(pc.ensemble)
    if not members:
        raise ConfigError("pipeline.ensemble is empty; list the models to ensemble")
    missing = [m for m in members if m not in pc.models]
    if missing:
        raise ConfigError(
            f"pipeline.ensemble {members} names {missing}, not among the trained pipeline.models "
            f"{pc.models}; add it there or remove it from the ensemble"
        )
    if len(set(members)) != len(members):
        raise ConfigError(f"pipeline.ensemble {members} lists a model twice")
    weights = config.retrieval.ensemble_weights
    if weights is not None and len(weights) != len(members):
        raise ConfigError(
            f"retrieval.ensemble_weights {weights} has {len(weights)} entries for the "
            f"{len(members)} models of pipeline.ensemble {members}"
        )
    return members


# --------------------------------------------------------------------------------------------
# stage: data


def _is_synth_output(path: Path) -> bool:
    return (path / "real" / "name_query.txt").is_file() and (path / "simulation").is_dir()


def ensure_synthetic_data(config: Config, out: Path, *, progress: bool = True) -> Path:
    """Generate the built-in synthetic dataset (the ``synth`` section) into ``out`` unless it is
    there; a folder made with other settings is refused, never silently reused."""
    sc = config.synth
    if _is_synth_output(out):
        info_file = out / "synth.json"
        info = json.loads(info_file.read_text("utf-8")) if info_file.is_file() else {}
        wanted = {"preset": sc.preset, "seed": sc.seed, "size": list(sc.size)}
        if sc.ids is not None:
            wanted["ids"] = sc.ids
        if sc.cameras is not None:
            wanted["cameras"] = sc.cameras
        found = {k: info.get(k) for k in wanted}
        if found != wanted:
            raise DatasetError(
                f"{out} holds synthetic data made with {found}, the config asks for {wanted}; "
                "delete the folder or set pipeline.synth_dir to another one"
            )
        return out
    settings = ", ".join(f"{k} {v}" for k, v in sc.model_dump(mode="json").items() if v is not None)
    console.print(f"generating synthetic data ({settings}) in {out}")
    generate_from_config(out, sc, progress=progress)
    if not _is_synth_output(out):
        raise DatasetError(f"{out}: synthetic generation did not produce real/ and simulation/")
    return out


def _synth_dir(ctx: PipelineContext) -> Path:
    pc = ctx.config.pipeline
    return Path(pc.synth_dir) if pc.synth_dir is not None else ctx.path("synth")


def _dataset_stats(ds: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"root": str(ds.root), "format": ds.format}
    for split, recs in ds.splits.items():
        out[split] = {
            "images": len(recs),
            "ids": len({r.vehicle_id for r in recs if r.vehicle_id is not None}),
            "cameras": len({r.camera for r in recs if r.camera is not None}),
            "tracks": len({r.track for r in recs if r.track is not None}),
        }
    return out


def _record_dict(r: Any) -> dict[str, Any]:
    return {
        "path": str(r.path),
        "name": r.name,
        "vehicle_id": r.vehicle_id,
        "camera": r.camera,
        "track": r.track,
        "color": r.color,
        "type": r.type,
    }


def crop_inputs(
    ctx: PipelineContext, roots: dict[str, tuple[Path | str | None, str]]
) -> dict[str, Path]:
    """Crop each dataset of ``roots`` (``label → (root, format)``; ``None`` roots are skipped) with
    the ``crop`` config, once per distinct root, and return ``label → cropped root``.

    The crops go to ``RUN/crop/<settings hash>/<label>``: other settings (or other weights in the
    same file) write a new folder instead of being refused by the old one, and a rerun with the
    same settings resumes.
    """

    # which sets are cropped does not change a set's crops: leave it out, so they are reused
    crop = {k: v for k, v in config_values(ctx.config, ["crop"])["crop"].items() if k != "sets"}
    tag = hash_obj({**crop, **_crop_weights(ctx.config)})[:12]
    device = ctx.config.runtime.device
    done: dict[Path, Path] = {}
    out: dict[str, Path] = {}
    for label, (root, fmt) in roots.items():
        if root is None:
            continue
        src = Path(root).resolve()
        if src not in done:
            dst = ctx.path("crop", tag, label)
            console.print(f"cropping {src} → {dst}")
            crop_dataset(
                src,
                dst,
                **crop_settings(ctx.config.crop),
                device=device,
                format=fmt,
                progress=ctx.progress,
            )
            done[src] = dst
        out[label] = done[src]
    return out


def _crop_weights(config: Config) -> dict[str, Any]:
    """The content hash of ``crop.weights`` (other weights in the same file make other crops)."""
    weights = config.crop.weights
    if config.crop.enabled and weights is not None and Path(weights).is_file():
        return {"weights_sha256": file_sha256(Path(weights))}
    return {}


def stage_data(ctx: PipelineContext) -> list[Path]:
    cfg = ctx.config

    if cfg.data.root is None:
        synth = ensure_synthetic_data(cfg, _synth_dir(ctx), progress=ctx.progress)
        real, fmt = synth / "real", "auto"
        sim: Path | None = synth / "simulation" if cfg.pipeline.pretrain else None
        sim_fmt = "auto"
    else:
        real, fmt = Path(cfg.data.root), cfg.data.format
        sim = Path(cfg.data.sim_root) if cfg.data.sim_root and cfg.pipeline.pretrain else None
        sim_fmt = "auto"
    attr_root = cfg.attributes.data_root if cfg.attributes.data_root is not None else None
    if attr_root is None:
        attr_root = (
            sim
            if sim is not None
            else (_synth_dir(ctx) / "simulation" if cfg.data.root is None else cfg.data.sim_root)
        )
    if cfg.crop.enabled:
        inputs = {
            "real": (real, fmt),
            "simulation": (sim, sim_fmt),
            "attributes": (attr_root, "auto"),
        }
        cropped = crop_inputs(ctx, {k: v for k, v in inputs.items() if k in cfg.crop.sets})
        real = cropped.get("real", real)
        sim = cropped.get("simulation", sim)
        attr_root = cropped.get("attributes", attr_root)
    ds = load_from_config(cfg.data, root=real, format=fmt)
    for split in ("train", "query", "gallery"):
        if not ds.splits.get(split):
            raise DatasetError(
                f"{real}: the '{split}' split is empty; the pipeline needs all three"
            )
    stats = {"main": _dataset_stats(ds)}
    if sim is not None:
        stats["simulation"] = _dataset_stats(load_from_config(cfg.data, root=sim, format=sim_fmt))
    roots = {
        "real": str(real),
        "format": fmt,
        "sim": str(sim) if sim is not None else None,
        "sim_format": sim_fmt,
        "attributes": str(attr_root) if attr_root is not None else None,
        "ground_truth": bool(ds.has_ground_truth),
    }
    ctx.forget()
    records = {s: [_record_dict(r) for r in ds.splits[s]] for s in ("query", "gallery")}
    return [
        write_json_atomic(ctx.path("data_roots.json"), roots),
        write_json_atomic(ctx.path("dataset_stats.json"), stats),
        write_json_atomic(ctx.path("records.json"), records),
    ]


# --------------------------------------------------------------------------------------------
# stage: attributes


def stage_attributes(ctx: PipelineContext) -> list[Path]:

    cfg = ctx.config.model_copy(deep=True)
    root = ctx.roots.get("attributes")
    if root is None:
        raise ConfigError(
            "attributes: no labelled data (set attributes.data_root or data.sim_root), "
            "or switch the stage off with pipeline.attributes=false"
        )
    cfg.attributes.data_root = Path(root)
    out = ctx.path("attributes")
    device = ctx.config.runtime.device
    if (out / "model").exists():  # a fresh run: train_attributes never reuses a folder
        shutil.rmtree(out / "model")
    result = train_attributes(cfg, out / "model", progress=ctx.progress)
    ds = ctx.dataset()
    outputs: list[Path] = [result.checkpoint]
    for split in ("query", "gallery"):
        files = extract_attribute_features(
            result.checkpoint,
            ds.splits[split],
            out / "features",
            split,
            device=device,
            batch_size=ctx.config.train.batch_size_eval,
            num_workers=ctx.config.train.num_workers,
            progress=ctx.progress,
            overwrite=True,
        )
        outputs += list(files.values())
    evaluation = {}
    for head in ("color", "type"):
        rep = (result.metrics or {}).get(head)
        if rep:
            evaluation[head] = {
                "accuracy": rep.get("accuracy"),
                "num_images": rep.get("images"),
                "classes": rep.get("classes"),
                "confusion": rep.get("confusion"),
                "majority_baseline": rep.get("majority_baseline"),
                "source": f"held-out identities of {root}",
            }
    outputs.append(write_json_atomic(out / "eval.json", evaluation))
    return outputs


# --------------------------------------------------------------------------------------------
# stage: training


def _phase_config(ctx: PipelineContext, model: str, phase: str) -> Config:
    cfg = ctx.config.model_copy(deep=True)
    cfg.model.name = model
    if phase == "pretrain":
        cfg.data.root = Path(ctx.roots["sim"])
        cfg.data.format = ctx.roots["sim_format"]
        if ctx.config.pipeline.pretrain_epochs is not None:
            cfg.train.epochs = ctx.config.pipeline.pretrain_epochs
        cfg.train.eval_every = 0
    else:
        cfg.data.root = Path(ctx.roots["real"])
        cfg.data.format = ctx.roots["format"]
        if not ctx.roots.get("ground_truth"):
            cfg.train.eval_every = 0
    return cfg


def train_model(ctx: PipelineContext, model: str) -> list[Path]:
    """Pre-train ``model`` on the simulation split (when configured), then fine-tune on the real one."""

    outputs = []
    init_from: Path | None = None
    phases = (["pretrain"] if ctx.roots.get("sim") else []) + ["finetune"]
    if not ctx.config.pipeline.finetune:
        phases = phases[:1]
    for phase in phases:
        out = ctx.path("models", model, phase)
        last = out / "checkpoints" / "last.pt"
        resume = last.is_file() and ctx.resume
        if out.exists() and not resume:
            shutil.rmtree(out)
        console.print(f"[bold]{model}[/]: {phase}" + (" (resuming)" if resume else ""))
        cfg = _phase_config(ctx, model, phase)
        result = train(
            cfg,
            out,
            resume=resume,
            init_from=None if resume or phase == "pretrain" else init_from,
            progress=ctx.progress,
        )
        init_from = result.last_checkpoint
        outputs += [result.last_checkpoint, result.inference_checkpoint]
    return outputs


def final_checkpoint(ctx: PipelineContext, model: str) -> Path:
    """The checkpoint used for retrieval, from the last phase: ``last.pt``, or ``best.pt`` with
    ``pipeline.checkpoint: best`` (chosen on validation identities, never on the test split)."""
    name = f"{ctx.config.pipeline.checkpoint}.pt"
    for phase in ("finetune", "pretrain"):
        if not ctx.path("models", model, phase, "checkpoints", "last.pt").is_file():
            continue
        p = ctx.path("models", model, phase, "checkpoints", name)
        if not p.is_file():
            raise VreidError(f"{p}: no {name} in the last training phase; run train-{model} again")
        return p
    raise VreidError(f"{ctx.path('models', model)}: no checkpoint; run the train-{model} stage")


# --------------------------------------------------------------------------------------------
# stage: extract


def _untrained_checkpoint(ctx: PipelineContext) -> Path:
    """A checkpoint of the first ensemble model with random weights (seed ``train.seed``): the
    weights training starts from (seeded the same way, by the trainer's one seeding helper)."""
    cfg = ctx.config.model_copy(deep=True)
    cfg.model.name = ctx.ensemble_models()[0]
    n_ids = len({r.vehicle_id for r in ctx.dataset().splits["train"]})
    arch = arch_from_config(cfg.model, n_ids)
    seed_rng(cfg.train.seed)
    model = build_from_arch(arch)
    return save_model_checkpoint(ctx.path("models", UNTRAINED, "untrained.pt"), model, arch, cfg)


def stage_extract(ctx: PipelineContext) -> list[Path]:

    ds = ctx.dataset()
    pc = ctx.config.pipeline
    checkpoints = {m: final_checkpoint(ctx, m) for m in ctx.trained_models()}
    if pc.untrained_baseline:
        checkpoints[UNTRAINED] = _untrained_checkpoint(ctx)
    outputs = []
    for name, ckpt in checkpoints.items():
        extractor = Extractor(
            ckpt,
            device=ctx.config.runtime.device,
            batch_size=ctx.config.train.batch_size_eval,
            flip=ctx.config.train.eval_flip,
            num_workers=ctx.config.train.num_workers,
            progress=ctx.progress,
        )
        for split in ("query", "gallery"):
            console.print(f"features: {name} / {split} ({len(ds.splits[split])} images)")
            outputs.append(
                extract_split(extractor, ds.splits[split], ctx.path("features", name, split))
            )
    if pc.colour_histogram_baseline:
        for split in ("query", "gallery"):
            recs = ds.splits[split]
            outputs.append(
                save_features(
                    ctx.path("features", COLOUR_HISTOGRAM, split),
                    colour_histogram_features([r.path for r in recs]),
                    [r.name for r in recs],
                )
            )
    return outputs


# --------------------------------------------------------------------------------------------
# stages: distances (the retrieval chain), metrics, submission, report


def _save_distances(ctx: PipelineContext, row: str, distmat: np.ndarray) -> Path:
    return write_npy_atomic(
        ctx.path("distances", f"{row}.npy"), np.asarray(distmat, dtype=np.float32)
    )


def _load_distances(ctx: PipelineContext, row: str) -> np.ndarray:
    return np.load(ctx.path("distances", f"{row}.npy"), allow_pickle=False)


def _names(ctx: PipelineContext, split: str) -> list[str]:
    return [r.name for r in ctx.dataset().splits[split]]


def _metadata_enabled(ctx: PipelineContext) -> bool:
    r = ctx.config.retrieval
    return ctx.config.pipeline.attributes and (r.gamma_type > 0 or r.gamma_colour > 0)


_NAMES = {
    "glamor": "GLAMOR",
    "counter_glamor": "Counter GLAMOR",
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "resnext50_32x4d": "ResNeXt50 32×4d",
    "resnext101_32x8d": "ResNeXt101 32×8d",
}


def model_label(name: str, config: Config) -> str:
    """What was built, in words: ``GLAMOR (ResNet-18 trunk)``, ``ResNet-18 (plain trunk, same
    head as GLAMOR)`` — a baseline row is labelled by the trunk it really has."""
    trunk = config.model.backbone_for(name)
    pretty = _NAMES.get(name, name)
    if name in ("glamor", "counter_glamor"):
        return f"{pretty} ({_NAMES.get(trunk or 'resnet50', trunk)} trunk)"
    built = _NAMES.get(trunk or name, trunk or name)
    return f"{built} (plain trunk, same head as GLAMOR)"


def row_labels(config: Config, rows: list[str], members: list[str]) -> dict[str, str]:
    """Display names of a run's rows: models by what was built, the ensemble by its members."""
    weights = config.retrieval.ensemble_weights or [1] * len(members)
    ratio = ":".join(f"{w:g}" for w in weights)
    labels = {}
    for row in rows:
        if row == COLOUR_HISTOGRAM:
            labels[row] = "Colour-histogram baseline (floor)"
        elif row == UNTRAINED:
            built = model_label(members[0], config)  # "GLAMOR (ResNet-18 trunk)"
            labels[row] = f"Untrained {built[:-1]}, random weights)"
        elif row in config.pipeline.models:
            labels[row] = model_label(row, config)
        elif row == "ensemble":
            names = " + ".join(_NAMES.get(m, m) for m in members)
            labels[row] = f"Ensemble ({names}, {ratio})" if len(members) > 1 else names
    return labels


def retrieval_settings(ctx: PipelineContext) -> RetrievalConfig:
    """``retrieval`` as the chain runs it: with the ``tune`` stage's chosen values when
    ``tune.enabled``."""
    if not ctx.config.tune.enabled:
        return ctx.config.retrieval
    return apply_tuned(ctx.config.retrieval, read_json(ctx.path("tune", "tune.json"))["chosen"])


def stage_tune(ctx: PipelineContext) -> list[Path]:
    """``tune/tune.json``: the retrieval settings chosen on the identities held out of the real
    training split (``val_ids.txt`` of the fine-tuning run), with the validation curve. Reads the
    training split only: the query/gallery (test) split is never used here."""
    cfg = ctx.config
    members = ctx.ensemble_models()
    run = final_checkpoint(ctx, members[0]).parents[1]
    ids_file = run / "val_ids.txt"
    if not ids_file.is_file():
        raise VreidError(f"{ids_file}: no validation identities; tune needs train.val_fraction > 0")
    held = {int(x) for x in ids_file.read_text(encoding="utf-8").split()}
    train = ctx.dataset().splits["train"]
    query, gallery = holdout_query_gallery([r for r in train if r.vehicle_id in held])
    truth = ground_truth(query, gallery)
    if truth is None or not query or not gallery:
        raise VreidError(f"{ids_file}: the held-out identities give no validation query/gallery")
    device = cfg.runtime.device
    features = {}
    for m in members:
        extractor = Extractor(
            final_checkpoint(ctx, m),
            device=device,
            batch_size=cfg.train.batch_size_eval,
            flip=cfg.train.eval_flip,
            num_workers=cfg.train.num_workers,
            progress=ctx.progress,
        )
        features[m] = tuple(extractor([r.path for r in recs]).numpy() for recs in (query, gallery))
    attributes = None
    if cfg.pipeline.attributes:
        ckpt = ctx.path("attributes", "model", ATTRIBUTE_CHECKPOINT)
        q_attr, g_attr = (
            attribute_features(
                ckpt,
                recs,
                device=device,
                batch_size=cfg.train.batch_size_eval,
                num_workers=cfg.train.num_workers,
                progress=ctx.progress,
            )
            for recs in (query, gallery)
        )
        attributes = {head: (q_attr[head], g_attr[head]) for head in ("type", "color")}
    console.print(
        f"tuning on {len(held)} validation identities ({len(query)} queries, "
        f"{len(gallery)} gallery images)"
    )
    result = tune_retrieval(
        cfg.retrieval,
        cfg.tune,
        features,
        truth,
        attributes=attributes,
        gallery_tracks=[r.track for r in gallery],
        device=device,
    )
    console.print(
        f"tuned: {result.chosen} ({result.metric} {result.default_score:.3f} → "
        f"{result.best_score:.3f} on validation identities)"
    )
    info = {
        **result.to_dict(),
        "validation": {"ids": len(held), "queries": len(query), "gallery": len(gallery)},
    }
    return [write_json_atomic(ctx.path("tune", "tune.json"), info)]


def stage_distances(ctx: PipelineContext) -> list[Path]:
    """``distances/<row>.npy`` for every row of the table: the floors and the trained models
    outside the ensemble (each its plain distance), then every row of the retrieval chain on the
    ensemble members; ``distances/rows.json`` lists them in table order with the final row."""

    cfg = ctx.config
    pc = cfg.pipeline
    qnames, gnames = _names(ctx, "query"), _names(ctx, "gallery")
    members = ctx.ensemble_models()
    device = cfg.runtime.device
    outputs = []
    floors = [COLOUR_HISTOGRAM] * pc.colour_histogram_baseline + [UNTRAINED] * pc.untrained_baseline
    for name in [*floors, *ctx.trained_models()]:
        if name not in members:
            q, g = load_pair(ctx.path("features", name), qnames, gnames)
            outputs.append(_save_distances(ctx, name, model_distance(q, g, device=device)))
    attributes = None
    if _metadata_enabled(ctx):
        attributes = load_attributes(
            ctx.path("attributes", "features"), cfg.retrieval, qnames, gnames
        )
    settings = retrieval_settings(ctx)
    chain = RetrievalChain(
        settings,
        {m: load_pair(ctx.path("features", m), qnames, gnames) for m in members},
        attributes=attributes,
        gallery_tracks=[r.track for r in ctx.dataset().splits["gallery"]],
        device=device,
        progress=ctx.progress,
    )
    for row, dist in chain:
        console.print(f"distances: {row}")
        outputs.append(_save_distances(ctx, row, dist))
    rows = [*floors, *ctx.trained_models(), *(r for r in chain.rows if r not in members)]
    for p in ctx.path("distances").glob("*.npy"):  # rows of an earlier configuration
        if p.stem not in rows:
            p.unlink()
    info = {
        "rows": rows,
        "labels": row_labels(cfg, rows, members),
        "final": chain.final,
        "steps": chain.steps,
        "tuned": cfg.tune.enabled,
        "retrieval": settings.model_dump(mode="json"),
    }
    outputs.append(write_json_atomic(ctx.path("distances", "rows.json"), info))
    return outputs


def _rows(ctx: PipelineContext) -> dict[str, Any]:
    """``distances/rows.json``: ``{"rows": [table order], "final": row, "steps": {...}}``."""
    return json.loads(ctx.path("distances", "rows.json").read_text("utf-8"))


def stage_metrics(ctx: PipelineContext) -> list[Path]:

    ds = ctx.dataset()
    truth = ground_truth(ds.splits["query"], ds.splits["gallery"])
    if truth is None:
        console.print("metrics: the query/gallery split has no vehicle ids; no metrics.json")
        return []
    rc = ctx.config.retrieval
    metrics = {row: score(_load_distances(ctx, row), truth, rc) for row in _rows(ctx)["rows"]}
    return [write_json_atomic(ctx.path("metrics.json"), metrics)]


def stage_submission(ctx: PipelineContext) -> list[Path]:

    d = _load_distances(ctx, _rows(ctx)["final"])
    return [write_submission(d, ctx.path("track2.txt"), top=ctx.config.retrieval.top)]


def stage_report(ctx: PipelineContext) -> list[Path]:
    if not ctx.path("metrics.json").is_file():
        return []

    index = build_report(ctx.run_dir, num_rank_lists=ctx.config.report.num_rank_lists)
    return [index, *sorted(index.parent.glob("*.png"))]


# --------------------------------------------------------------------------------------------
# the stage table


def build_stages(config: Config) -> list[Stage[PipelineContext]]:
    """The stages ``config`` asks for, in order, each with the config keys it reads."""
    pc = config.pipeline
    if pc.checkpoint == "best" and (config.train.val_fraction == 0 or config.train.eval_every == 0):
        raise ConfigError(
            "pipeline.checkpoint=best needs train.val_fraction > 0 and train.eval_every > 0: "
            "best.pt must be chosen on held-out training identities, not on the test split "
            f"(now val_fraction={config.train.val_fraction}, eval_every={config.train.eval_every})"
        )
    ensemble_members(config)
    if config.tune.enabled and config.train.val_fraction == 0:
        raise ConfigError(
            "tune.enabled needs train.val_fraction > 0: the settings are tuned on training "
            "identities held out of training, never on the test split"
        )
    stages: list[Stage[PipelineContext]] = [
        Stage(
            "data",
            stage_data,
            (
                "data",
                "synth",
                "crop",
                "attributes.data_root",
                "pipeline.pretrain",
                "pipeline.synth_dir",
            ),
            extra_key=_crop_weights,
        )
    ]
    attr = ["attributes"] if pc.attributes else []
    if pc.attributes:
        # step 1 (re-id) takes its other settings from ``train``; features use train's eval keys
        keys = (
            ("attributes", "data", "train")
            if config.attributes.reid
            else (
                "attributes",
                "data",
                "train.num_workers",
                "train.batch_size_eval",
            )
        )
        stages.append(Stage("attributes", stage_attributes, keys, ["data"]))
    train_keys = ("model", "train", "data", "pipeline.pretrain_epochs", "pipeline.finetune")
    for m in dict.fromkeys(pc.models):
        stages.append(Stage(f"train-{m}", partial(train_model, model=m), train_keys, ["data"]))
    train_names = [s.name for s in stages if s.name.startswith("train-")]
    tune = ["tune"] if config.tune.enabled else []
    if config.tune.enabled:
        stages.append(
            Stage(
                "tune",
                stage_tune,
                (
                    "tune",
                    "retrieval",
                    "pipeline.ensemble",
                    "pipeline.attributes",
                    "pipeline.checkpoint",
                    "train.eval_flip",
                    "train.batch_size_eval",
                    "train.num_workers",
                ),
                ["data", *train_names, *attr],
            )
        )
    stages += [
        Stage(
            "extract",
            stage_extract,
            (
                "model",  # the untrained baseline's architecture
                "train.seed",  # … and its initialisation
                "train.eval_flip",
                "train.batch_size_eval",
                "train.num_workers",
                "pipeline.ensemble",  # the untrained baseline is the first member
                "pipeline.untrained_baseline",
                "pipeline.colour_histogram_baseline",
                "pipeline.checkpoint",
            ),
            ["data", *train_names],
        ),
        Stage(
            "distances",
            stage_distances,
            (
                "retrieval",
                "pipeline.models",
                "pipeline.ensemble",
                "pipeline.attributes",
                "pipeline.untrained_baseline",
                "pipeline.colour_histogram_baseline",
                "tune.enabled",
            ),
            ["data", "extract", *attr, *tune],
        ),
        Stage("metrics", stage_metrics, ("retrieval",), ["data", "distances"]),
        Stage("submission", stage_submission, ("retrieval",), ["distances"]),
        Stage(
            "report",
            stage_report,
            ("report",),
            ["data", "distances", "metrics", *attr, *tune, *train_names],
        ),
    ]
    return stages


def results_key(config: Config) -> str:
    """What made a run's results: the hash of its config without the informational keys."""
    tree = config.model_dump(mode="json")
    for dotted in INFORMATIONAL_KEYS:
        section, name = dotted.split(".")
        tree[section].pop(name, None)
    return hash_obj(tree)


def keep_results(run_dir: Path, config: Config) -> Path | None:
    """Copy the run's ``metrics.json``, ``track2.txt``, ``config.yaml`` and ``rows.json`` into
    ``results/<results_key>/``: a later run with other settings replaces the files at the top of
    the run directory, never these, and the report shows every kept configuration side by side."""
    if not (run_dir / "metrics.json").is_file() and not (run_dir / "track2.txt").is_file():
        return None
    dst = run_dir / "results" / results_key(config)
    for name in ("metrics.json", "track2.txt", "config.yaml", "distances/rows.json"):
        src = run_dir / name
        if src.is_file():
            with atomic_path(dst / Path(name).name) as tmp:
                shutil.copyfile(src, tmp)
    return dst


def run_pipeline(
    config: Config,
    run_dir: str | Path,
    *,
    from_stage: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage of ``config`` in ``run_dir``, skipping those whose artefacts are up to date.

    ``from_stage`` forces that stage and all later ones to run again. The run directory is held
    (:func:`~vreid.core.artefacts.run_lock`) for the whole run: a second run on it is refused.
    Returns ``{"run_dir", "ran": [...], "skipped": [...], "metrics": dict | None}``.
    """
    # Absolute from here on: stages return absolute artefact paths and the manifests record them
    # relative to this directory, which only works if both spell it the same way.
    run_dir = Path(run_dir).resolve()
    stages = build_stages(config)
    with run_lock(run_dir):
        ctx = PipelineContext(config, run_dir, progress=progress)
        ran, skipped = run_stages(stages, ctx, from_stage=from_stage)
        keep_results(run_dir, config)
    metrics_file = run_dir / "metrics.json"
    metrics = read_json(metrics_file) if metrics_file.is_file() else None
    return {"run_dir": run_dir, "ran": ran, "skipped": skipped, "metrics": metrics}
