"""The whole job in stages with cached artefacts: ``run_pipeline(config, run_dir, from_stage=None)``.

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

Each stage writes ``manifests/<stage>.json`` holding the hash of the config keys it depends on, the
hash of its inputs (the output digests of the stages it reads) and the digests of its outputs. A
stage whose hashes match and whose outputs are all present is skipped; otherwise it runs again, and
so does everything downstream of it (their input hashes change). A stage interrupted half-way leaves
no manifest and runs again on the next call; training resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from vreid.core.artefacts import write_json_atomic, write_npy_atomic
from vreid.core.config import Config, save_config
from vreid.core.errors import ConfigError, DatasetError, VreidError
from vreid.synth import generate_from_config
from vreid.workflows.calibration import colour_histogram_features

console = Console(stderr=True)

# metrics.json rows of the floors (the models use their names; the chain's rows:
# vreid.retrieval.chain).
COLOUR_HISTOGRAM = "colour_histogram"
UNTRAINED = "untrained"


# --------------------------------------------------------------------------------------------
# hashing and manifests


def _hash_obj(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 (first 16 hex digits) of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Stage:
    """One pipeline stage.

    ``run(ctx)`` returns the paths of its outputs (files, relative to the run directory or
    absolute inside it); ``keys(config)`` the config values it depends on; ``reads`` the stages
    whose outputs it uses.
    """

    name: str
    run: Callable[[RunContext], list[Path]]
    keys: Callable[[Config], Any]
    reads: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What stages share: the config, the run directory and small cached reads."""

    config: Config
    run_dir: Path
    progress: bool = True
    _cache: dict[str, Any] = field(default_factory=dict)

    # ---- paths
    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    # ---- data
    @property
    def roots(self) -> dict[str, Any]:
        """``{"real": path, "sim": path | None, "format": ..., "sim_format": ...}`` (data stage)."""
        if "roots" not in self._cache:
            self._cache["roots"] = json.loads(self.path("data_roots.json").read_text("utf-8"))
        return self._cache["roots"]

    def dataset(self) -> Any:
        if "dataset" not in self._cache:
            from vreid.data import load_from_config

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
    console.print(f"generating synthetic data ({sc.model_dump(mode='json')}) in {out}")
    generate_from_config(out, sc, progress=progress)
    if not _is_synth_output(out):
        raise DatasetError(f"{out}: synthetic generation did not produce real/ and simulation/")
    return out


def _synth_dir(ctx: RunContext) -> Path:
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
    ctx: RunContext, roots: dict[str, tuple[Path | str | None, str]]
) -> dict[str, Path]:
    """Crop each dataset of ``roots`` (``label → (root, format)``; ``None`` roots are skipped) with
    the ``crop`` config, once per distinct root, and return ``label → cropped root``.

    The crops go to ``RUN/crop/<settings hash>/<label>``: other settings (or other weights in the
    same file) write a new folder instead of being refused by the old one, and a rerun with the
    same settings resumes.
    """
    from vreid.inference.crop import crop_dataset

    c = ctx.config.crop
    # which sets are cropped does not change a set's crops: leave it out, so they are reused
    tag = _hash_obj({k: v for k, v in _crop_keys(ctx.config).items() if k != "sets"})[:12]
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
                detector=c.detector,
                weights=c.weights,
                margin=c.margin,
                min_score=c.min_score,
                batch_size=c.batch_size,
                device=device,
                format=fmt,
                progress=ctx.progress,
            )
            done[src] = dst
        out[label] = done[src]
    return out


def _crop_keys(config: Config) -> dict[str, Any]:
    """The crop settings a crop output depends on, including the weights file's content."""
    keys = config.crop.model_dump(mode="json")
    weights = config.crop.weights
    if config.crop.enabled and weights is not None and Path(weights).is_file():
        from vreid.models.detectors import file_sha256

        keys["weights_sha256"] = file_sha256(Path(weights))
    return keys


def stage_data(ctx: RunContext) -> list[Path]:
    cfg = ctx.config
    from vreid.data import load_from_config

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
    ctx._cache.clear()
    records = {s: [_record_dict(r) for r in ds.splits[s]] for s in ("query", "gallery")}
    return [
        write_json_atomic(ctx.path("data_roots.json"), roots),
        write_json_atomic(ctx.path("dataset_stats.json"), stats),
        write_json_atomic(ctx.path("records.json"), records),
    ]


# --------------------------------------------------------------------------------------------
# stage: attributes


def stage_attributes(ctx: RunContext) -> list[Path]:
    from vreid.engine.attributes import train_attributes
    from vreid.inference.attributes import extract_attribute_features

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


def _phase_config(ctx: RunContext, model: str, phase: str) -> Config:
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


def train_model(ctx: RunContext, model: str) -> list[Path]:
    """Pre-train ``model`` on the simulation split (when configured), then fine-tune on the real one."""
    from vreid.engine.reid import train

    outputs = []
    init_from: Path | None = None
    phases = (["pretrain"] if ctx.roots.get("sim") else []) + ["finetune"]
    if not ctx.config.pipeline.finetune:
        phases = phases[:1]
    for phase in phases:
        out = ctx.path("models", model, phase)
        last = out / "checkpoints" / "last.pt"
        stage_key = f"train-{model}"
        resume = last.is_file() and _started_with_same_key(ctx, stage_key)
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
        outputs.append(result.last_checkpoint)
    return outputs


def final_checkpoint(ctx: RunContext, model: str) -> Path:
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


def _untrained_checkpoint(ctx: RunContext) -> Path:
    """A checkpoint of the first ensemble model with random weights (seed ``train.seed``)."""
    import torch

    from vreid.models.checkpoint import arch_from_config, build_from_arch, save_checkpoint

    cfg = ctx.config.model_copy(deep=True)
    cfg.model.name = ctx.ensemble_models()[0]
    n_ids = len({r.vehicle_id for r in ctx.dataset().splits["train"]})
    arch = arch_from_config(cfg.model, n_ids)
    torch.manual_seed(cfg.train.seed)
    model = build_from_arch(arch)
    return save_checkpoint(
        ctx.path("models", UNTRAINED, "untrained.pt"),
        {
            "model": model.state_dict(),
            "arch": arch,
            "config": cfg.model_dump(mode="json"),
            "epoch": 0,
        },
    )


def stage_extract(ctx: RunContext) -> list[Path]:
    from vreid.inference.extract import Extractor, extract_split
    from vreid.inference.features import save_features

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


def _save_distances(ctx: RunContext, row: str, distmat: np.ndarray) -> Path:
    return write_npy_atomic(
        ctx.path("distances", f"{row}.npy"), np.asarray(distmat, dtype=np.float32)
    )


def _load_distances(ctx: RunContext, row: str) -> np.ndarray:
    return np.load(ctx.path("distances", f"{row}.npy"), allow_pickle=False)


def _names(ctx: RunContext, split: str) -> list[str]:
    return [r.name for r in ctx.dataset().splits[split]]


def _metadata_enabled(ctx: RunContext) -> bool:
    r = ctx.config.retrieval
    return ctx.config.pipeline.attributes and (r.gamma_type > 0 or r.gamma_colour > 0)


def stage_distances(ctx: RunContext) -> list[Path]:
    """``distances/<row>.npy`` for every row of the table: the floors and the trained models
    outside the ensemble (each its plain distance), then every row of the retrieval chain on the
    ensemble members; ``distances/rows.json`` lists them in table order with the final row."""
    from vreid.retrieval.chain import RetrievalChain, load_attributes, load_pair, model_distance

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
    chain = RetrievalChain(
        cfg.retrieval,
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
    info = {"rows": rows, "final": chain.final, "steps": chain.steps}
    outputs.append(write_json_atomic(ctx.path("distances", "rows.json"), info))
    return outputs


def _rows(ctx: RunContext) -> dict[str, Any]:
    """``distances/rows.json``: ``{"rows": [table order], "final": row, "steps": {...}}``."""
    return json.loads(ctx.path("distances", "rows.json").read_text("utf-8"))


def stage_metrics(ctx: RunContext) -> list[Path]:
    from vreid.retrieval.chain import ground_truth, score

    ds = ctx.dataset()
    truth = ground_truth(ds.splits["query"], ds.splits["gallery"])
    if truth is None:
        console.print("metrics: the query/gallery split has no vehicle ids; no metrics.json")
        return []
    rc = ctx.config.retrieval
    metrics = {row: score(_load_distances(ctx, row), truth, rc) for row in _rows(ctx)["rows"]}
    return [write_json_atomic(ctx.path("metrics.json"), metrics)]


def stage_submission(ctx: RunContext) -> list[Path]:
    from vreid.retrieval.submission import write_submission

    d = _load_distances(ctx, _rows(ctx)["final"])
    return [write_submission(d, ctx.path("track2.txt"), top=ctx.config.retrieval.top)]


def stage_report(ctx: RunContext) -> list[Path]:
    if not ctx.path("metrics.json").is_file():
        return []
    from vreid.workflows.report import build_report

    index = build_report(ctx.run_dir, num_rank_lists=ctx.config.report.num_rank_lists)
    return [index, *sorted(index.parent.glob("*.png"))]


# --------------------------------------------------------------------------------------------
# the stage table


def _section(*names: str) -> Callable[[Config], Any]:
    def keys(cfg: Config) -> Any:
        tree = cfg.model_dump(mode="json")
        out = {}
        for n in names:
            node: Any = tree
            for part in n.split("."):
                node = node[part]
            out[n] = node
        return out

    return keys


def _data_keys(config: Config) -> Any:
    keys = _section(
        "data", "synth", "attributes.data_root", "pipeline.pretrain", "pipeline.synth_dir"
    )(config)
    keys["crop"] = _crop_keys(config)
    return keys


def build_stages(config: Config) -> list[Stage]:
    """The stages ``config`` asks for, in order."""
    pc = config.pipeline
    if pc.checkpoint == "best" and (config.train.val_fraction == 0 or config.train.eval_every == 0):
        raise ConfigError(
            "pipeline.checkpoint=best needs train.val_fraction > 0 and train.eval_every > 0: "
            "best.pt must be chosen on held-out training identities, not on the test split "
            f"(now val_fraction={config.train.val_fraction}, eval_every={config.train.eval_every})"
        )
    ensemble_members(config)
    stages = [
        Stage(
            "data",
            stage_data,
            _data_keys,
        )
    ]
    if pc.attributes:
        attr_keys = ["attributes", "train.num_workers", "train.batch_size_eval"]
        if config.attributes.reid:  # step 1 takes its other settings from ``train``
            attr_keys.append("train")
        stages.append(Stage("attributes", stage_attributes, _section(*attr_keys), ["data"]))
    train_keys = _section("model", "train", "pipeline.pretrain_epochs", "pipeline.finetune")
    for m in dict.fromkeys(pc.models):
        stages.append(
            Stage(f"train-{m}", lambda ctx, m=m: train_model(ctx, m), train_keys, ["data"])
        )
    train_names = [s.name for s in stages if s.name.startswith("train-")]
    stages += [
        Stage(
            "extract",
            stage_extract,
            _section(
                "pipeline.untrained_baseline",
                "pipeline.colour_histogram_baseline",
                "pipeline.checkpoint",
                "train.eval_flip",
                "model",
            ),
            ["data", *train_names],
        ),
    ]
    attr = ["attributes"] if pc.attributes else []
    retrieval_keys = _section(
        "retrieval",
        "pipeline.models",
        "pipeline.ensemble",
        "pipeline.attributes",
        "pipeline.untrained_baseline",
        "pipeline.colour_histogram_baseline",
    )
    stages += [
        Stage("distances", stage_distances, retrieval_keys, ["data", "extract", *attr]),
        Stage("metrics", stage_metrics, _section("retrieval"), ["data", "distances"]),
        Stage("submission", stage_submission, _section("retrieval"), ["distances"]),
        Stage(
            "report",
            stage_report,
            lambda cfg: cfg.model_dump(mode="json"),  # the page shows the whole config
            ["data", "distances", "metrics", *attr, *train_names],
        ),
    ]
    return stages


# --------------------------------------------------------------------------------------------
# manifests


def _manifest_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "manifests" / f"{stage}.json"


def _read_manifest(run_dir: Path, stage: str) -> dict[str, Any] | None:
    p = _manifest_path(run_dir, stage)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text("utf-8"))
    except json.JSONDecodeError:
        return None


def _started_with_same_key(ctx: RunContext, stage: str) -> bool:
    """True when ``stage`` was interrupted earlier with the same config and inputs (resume it)."""
    return bool(ctx._cache.get("resume", {}).get(stage))


def _inputs_hash(run_dir: Path, stage: Stage) -> str:
    digests = {}
    for up in stage.reads:
        m = _read_manifest(run_dir, up)
        digests[up] = m.get("output_digest") if m else None
    return _hash_obj(digests)


def _up_to_date(run_dir: Path, stage: Stage, config_hash: str, inputs_hash: str) -> bool:
    m = _read_manifest(run_dir, stage.name)
    if m is None or m.get("config_hash") != config_hash or m.get("inputs_hash") != inputs_hash:
        return False
    for rel, info in m.get("outputs", {}).items():
        p = run_dir / rel
        if not p.is_file() or p.stat().st_size != info["size"]:
            return False
    return True


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("vreid", "torch", "torchvision", "numpy", "scipy", "pillow", "pydantic"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        import torch

        out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        out["torch threads"] = str(torch.get_num_threads())
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    return out


def resolve_from_stage(stages: Sequence[Stage], from_stage: str) -> int:
    """Index of the first stage called ``from_stage`` (``train`` = the first ``train-<model>``)."""
    for i, s in enumerate(stages):
        if s.name == from_stage or (from_stage == "train" and s.name.startswith("train-")):
            return i
    names = ", ".join(
        dict.fromkeys(["train" if s.name.startswith("train-") else s.name for s in stages])
    )
    raise ConfigError(f"--from {from_stage!r}: unknown stage; stages of this config: {names}")


def run_pipeline(
    config: Config,
    run_dir: str | Path,
    *,
    from_stage: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage of ``config`` in ``run_dir``, skipping those whose artefacts are up to date.

    ``from_stage`` forces that stage and all later ones to run again. Returns
    ``{"run_dir", "ran": [...], "skipped": [...], "metrics": dict | None}``.
    """
    # Absolute from here on: stages return absolute artefact paths and the manifests record them
    # relative to this directory, which only works if both spell it the same way.
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    write_json_atomic(run_dir / "versions.json", _versions())
    stages = build_stages(config)
    write_json_atomic(run_dir / "stages.json", [s.name for s in stages])
    start_at = resolve_from_stage(stages, from_stage) if from_stage else len(stages)
    ctx = RunContext(config, run_dir, progress=progress)
    ran, skipped = [], []
    for order, stage in enumerate(stages):
        config_hash = _hash_obj(stage.keys(config))
        inputs_hash = _inputs_hash(run_dir, stage)
        key = _hash_obj([config_hash, inputs_hash])
        if order < start_at and _up_to_date(run_dir, stage, config_hash, inputs_hash):
            console.print(f"[dim]stage {stage.name}: up to date[/]")
            skipped.append(stage.name)
            continue
        console.rule(f"stage {stage.name}")
        started = _manifest_path(run_dir, f"{stage.name}.started")
        previous = {}
        if started.is_file():
            previous = json.loads(started.read_text("utf-8"))
        ctx._cache["resume"] = {stage.name: previous.get("key") == key}
        if previous.get("key") != key:
            write_json_atomic(started, {"key": key})
        t0 = time.perf_counter()
        outputs = stage.run(ctx)
        seconds = time.perf_counter() - t0
        files = {}
        for p in outputs:
            p = Path(p)
            rel = p.relative_to(run_dir) if p.is_absolute() and p.is_relative_to(run_dir) else p
            full = run_dir / rel
            files[str(rel)] = {"size": full.stat().st_size, "sha256": file_digest(full)}
        manifest = {
            "stage": stage.name,
            "order": order,
            "config_hash": config_hash,
            "inputs_hash": inputs_hash,
            "outputs": files,
            "output_digest": _hash_obj(files),
            "seconds": round(seconds, 2),
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_json_atomic(_manifest_path(run_dir, stage.name), manifest)
        started.unlink(missing_ok=True)
        console.print(f"stage {stage.name}: done in {seconds:.1f} s")
        ran.append(stage.name)
        if stage.name in ("data",):
            ctx._cache.pop("roots", None)
            ctx._cache.pop("dataset", None)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text("utf-8")) if metrics_file.is_file() else None
    return {"run_dir": run_dir, "ran": ran, "skipped": skipped, "metrics": metrics}
