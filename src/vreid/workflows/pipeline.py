"""The whole job in stages with cached artefacts: ``run_pipeline(config, run_dir, from_stage=None)``.

Stages, in order (``vreid pipeline --from STAGE`` re-runs from one)::

    data        generate the built-in synthetic data when no dataset is configured; crop (optional);
                read the dataset; records.json, dataset_stats.json
    attributes  colour/type model (trained on labelled simulation data), features of query/gallery
    train-<m>   each embedding model: synthetic pre-training, then fine-tuning from that checkpoint
    extract     query/gallery features of every model, of an untrained model and colour histograms
    distances   one (q, g) distance matrix per model and baseline, and the plain ensemble
    metadata    the colour/type feature files used as re-ranking metadata, with their weights
    rerank      k-reciprocal re-ranking per model, without and with metadata; ensembles
    tracks      track-level averaging of the final ensemble
    metrics     metrics.json: one entry per row of the paper's Table 2 (needs query/gallery ids)
    submission  track2.txt from the final distance matrix
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
from vreid.workflows.calibration import colour_histogram_features

console = Console(stderr=True)

# metrics.json row keys of the post-processing chain (the single-model rows use the model names).
ENSEMBLE = "ensemble"
RERANK = "ensemble+rerank"
METADATA = "ensemble+rerank+metadata"
TRACKS = "ensemble+rerank+metadata+tracks"
COLOUR_HISTOGRAM = "colour_histogram"
UNTRAINED = "untrained"


# --------------------------------------------------------------------------------------------
# presets


def list_presets() -> dict[str, Path]:
    """The built-in presets shipped in the package: ``{name: path}``."""
    folder = Path(__file__).parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the built-in preset of that name (``demo``, ``tiny``, ``aic20`` …)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    presets = list_presets()
    if str(name_or_path) in presets:
        return presets[str(name_or_path)]
    raise ConfigError(
        f"{name_or_path}: no such config file or preset; presets: {', '.join(presets)}"
    )


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
            from vreid.data import load_dataset

            r = self.roots
            self._cache["dataset"] = load_dataset(Path(r["real"]), r["format"])
        return self._cache["dataset"]

    def trained_models(self) -> list[str]:
        return list(dict.fromkeys(self.config.pipeline.models))

    def ensemble_models(self) -> list[str]:
        chosen = [m for m in self.config.pipeline.ensemble if m in self.trained_models()]
        if not chosen:
            raise ConfigError(
                f"pipeline.ensemble {self.config.pipeline.ensemble} names none of the trained "
                f"pipeline.models {self.config.pipeline.models}; list at least one of them"
            )
        return chosen


# --------------------------------------------------------------------------------------------
# stage: data


def _is_synth_output(path: Path) -> bool:
    return (path / "real" / "name_query.txt").is_file() and (path / "simulation").is_dir()


def ensure_synthetic_data(config: Config, out: Path, *, progress: bool = True) -> Path:
    """Generate the built-in synthetic dataset (``config.synth``) into ``out`` unless it is there."""
    if _is_synth_output(out):
        info_file = out / "synth.json"
        info = json.loads(info_file.read_text("utf-8")) if info_file.is_file() else {}
        wanted = {"preset": config.synth.preset, "seed": config.synth.seed}
        found = {k: info.get(k) for k in wanted}
        if found != wanted:
            raise DatasetError(
                f"{out} holds synthetic data made with {found}, the config asks for {wanted}; "
                "delete the folder or set pipeline.synth_dir to another one"
            )
        return out
    from vreid.synth import generate

    console.print(
        f"generating synthetic data (preset {config.synth.preset!r}, seed {config.synth.seed}) in {out}"
    )
    generate(out, preset=config.synth.preset, seed=config.synth.seed, progress=progress)
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
    from vreid.data import load_dataset

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
    ds = load_dataset(real, fmt)
    for split in ("train", "query", "gallery"):
        if not ds.splits.get(split):
            raise DatasetError(
                f"{real}: the '{split}' split is empty; the pipeline needs all three"
            )
    stats = {"main": _dataset_stats(ds)}
    if sim is not None:
        stats["simulation"] = _dataset_stats(load_dataset(sim, sim_fmt))
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
    """A checkpoint of the first ensemble model with random weights (seed ``train.seed``): the
    weights training starts from (seeded the same way, by the trainer's one seeding helper)."""
    from vreid.engine.trainer import seed_rng
    from vreid.models.checkpoint import arch_from_config, build_from_arch, save_checkpoint

    cfg = ctx.config.model_copy(deep=True)
    cfg.model.name = ctx.ensemble_models()[0]
    n_ids = len({r.vehicle_id for r in ctx.dataset().splits["train"]})
    arch = arch_from_config(cfg.model, n_ids)
    seed_rng(cfg.train.seed)
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
# stages: distances, metadata, rerank, tracks


def _features(ctx: RunContext, name: str, split: str) -> np.ndarray:
    from vreid.inference.features import load_features

    names = [r.name for r in ctx.dataset().splits[split]]
    feats, _ = load_features(ctx.path("features", name, split), expected_names=names)
    return feats


def _save_distances(ctx: RunContext, row: str, distmat: np.ndarray) -> Path:
    return write_npy_atomic(
        ctx.path("distances", f"{row}.npy"), np.asarray(distmat, dtype=np.float32)
    )


def _load_distances(ctx: RunContext, row: str) -> np.ndarray:
    return np.load(ctx.path("distances", f"{row}.npy"), allow_pickle=False)


def _feature_rows(ctx: RunContext) -> list[str]:
    rows = list(ctx.trained_models())
    if ctx.config.pipeline.untrained_baseline:
        rows.append(UNTRAINED)
    if ctx.config.pipeline.colour_histogram_baseline:
        rows.append(COLOUR_HISTOGRAM)
    return rows


def stage_distances(ctx: RunContext) -> list[Path]:
    from vreid.retrieval.distance import ensemble, pairwise_distances

    outputs = []
    for name in _feature_rows(ctx):
        d = pairwise_distances(_features(ctx, name, "query"), _features(ctx, name, "gallery"))
        outputs.append(_save_distances(ctx, name, _np(d)))
    members = ctx.ensemble_models()
    ens = ensemble([_load_distances(ctx, m) for m in members], ctx.config.pipeline.ensemble_weights)
    outputs.append(_save_distances(ctx, ENSEMBLE, _np(ens)))
    return outputs


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _metadata_enabled(ctx: RunContext) -> bool:
    r = ctx.config.retrieval
    return ctx.config.pipeline.attributes and (r.gamma_type > 0 or r.gamma_colour > 0)


def stage_metadata(ctx: RunContext) -> list[Path]:
    from vreid.inference.features import load_features

    r = ctx.config.retrieval
    entries = []
    for head, weight in (("type", r.gamma_type), ("color", r.gamma_colour)):
        if weight <= 0:
            continue
        for split in ("query", "gallery"):
            names = [x.name for x in ctx.dataset().splits[split]]
            load_features(ctx.path("attributes", "features", head, split), expected_names=names)
        entries.append({"head": head, "weight": weight})
    return [write_json_atomic(ctx.path("metadata.json"), entries)]


def _metadata_triples(ctx: RunContext) -> list[tuple[np.ndarray, np.ndarray, float]]:
    from vreid.inference.features import load_features

    entries = json.loads(ctx.path("metadata.json").read_text("utf-8"))
    out = []
    for e in entries:
        q, _ = load_features(ctx.path("attributes", "features", e["head"], "query"))
        g, _ = load_features(ctx.path("attributes", "features", e["head"], "gallery"))
        out.append((q, g, float(e["weight"])))
    return out


def stage_rerank(ctx: RunContext) -> list[Path]:
    from vreid.retrieval.distance import ensemble
    from vreid.retrieval.reranking import rerank

    r = ctx.config.retrieval
    pc = ctx.config.pipeline
    variants = [("rerank", ())]
    if _metadata_enabled(ctx):
        variants.append(("rerank+metadata", _metadata_triples(ctx)))
    outputs = []
    for suffix, metadata in variants:
        per_model = []
        for m in ctx.ensemble_models():
            console.print(f"re-ranking: {m} ({suffix})")
            d = rerank(
                _features(ctx, m, "query"),
                _features(ctx, m, "gallery"),
                k1=r.k1,
                k2=r.k2,
                lambda_value=r.lambda_value,
                metadata=metadata,
            )
            outputs.append(_save_distances(ctx, f"{m}+{suffix}", _np(d)))
            per_model.append(_np(d))
        ens = ensemble(per_model, pc.ensemble_weights)
        outputs.append(_save_distances(ctx, f"{ENSEMBLE}+{suffix}", _np(ens)))
    return outputs


def _chain_rows(ctx: RunContext) -> list[str]:
    """The ensemble rows in order, ending with the one the submission uses."""
    rows = [ENSEMBLE]
    if ctx.config.retrieval.rerank:
        rows.append(RERANK)
        if _metadata_enabled(ctx):
            rows.append(METADATA)
    if ctx.config.retrieval.track_average and _gallery_tracks(ctx) is not None:
        rows.append(rows[-1] + "+tracks")
    return rows


def _gallery_tracks(ctx: RunContext) -> np.ndarray | None:
    tracks = [r.track for r in ctx.dataset().splits["gallery"]]
    if any(t is None for t in tracks):
        return None
    return np.asarray(tracks, dtype=np.int64)


def stage_tracks(ctx: RunContext) -> list[Path]:
    from vreid.retrieval.tracks import average_by_track

    rows = _chain_rows(ctx)
    if not rows[-1].endswith("+tracks"):
        return []
    base = rows[-2]
    d = average_by_track(_load_distances(ctx, base), _gallery_tracks(ctx))
    return [_save_distances(ctx, rows[-1], _np(d))]


# --------------------------------------------------------------------------------------------
# stages: metrics, submission, report


def table_rows(ctx: RunContext) -> list[str]:
    """Rows of metrics.json in the order of the paper's Table 2, the floors first."""
    rows = []
    if ctx.config.pipeline.colour_histogram_baseline:
        rows.append(COLOUR_HISTOGRAM)
    if ctx.config.pipeline.untrained_baseline:
        rows.append(UNTRAINED)
    rows += ctx.trained_models()
    rows += _chain_rows(ctx)
    return rows


def stage_metrics(ctx: RunContext) -> list[Path]:
    from vreid.retrieval.metrics import evaluate

    ds = ctx.dataset()
    if not ds.has_ground_truth:
        console.print("metrics: the query/gallery split has no vehicle ids; no metrics.json")
        return []
    q, g = ds.splits["query"], ds.splits["gallery"]
    qids = np.array([r.vehicle_id for r in q])
    gids = np.array([r.vehicle_id for r in g])
    qcams = np.array([-1 if r.camera is None else r.camera for r in q])
    gcams = np.array([-1 if r.camera is None else r.camera for r in g])
    protocol = ctx.config.retrieval.protocol
    full_protocol = "veri" if protocol == "veri" else "all"
    metrics: dict[str, Any] = {}
    for row in table_rows(ctx):
        d = _load_distances(ctx, row)
        res = dict(evaluate(d, qids, gids, qcams, gcams, protocol=protocol, max_rank=100))
        full = evaluate(d, qids, gids, qcams, gcams, protocol=full_protocol, max_rank=d.shape[1])
        res["full"] = {k: full[k] for k in ("mAP", "mINP", "num_valid_queries") if k in full}
        res["protocol"] = protocol
        metrics[row] = _jsonable(res)
    return [write_json_atomic(ctx.path("metrics.json"), metrics)]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def stage_submission(ctx: RunContext) -> list[Path]:
    from vreid.retrieval.submission import write_submission

    d = _load_distances(ctx, _chain_rows(ctx)[-1])
    path = ctx.path("track2.txt")
    write_submission(d, path, top=min(100, d.shape[1]))
    return [path]


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
        Stage(
            "distances",
            stage_distances,
            _section("pipeline.ensemble", "pipeline.ensemble_weights"),
            ["extract"],
        ),
    ]
    attr = ["attributes"] if pc.attributes else []
    stages += [
        Stage(
            "metadata",
            stage_metadata,
            _section("retrieval.gamma_type", "retrieval.gamma_colour"),
            ["data", *attr],
        ),
        Stage(
            "rerank",
            stage_rerank,
            _section("retrieval", "pipeline.ensemble", "pipeline.ensemble_weights"),
            ["extract", "metadata"],
        ),
        Stage("tracks", stage_tracks, _section("retrieval"), ["rerank", "distances"]),
        Stage("metrics", stage_metrics, _section("retrieval"), ["distances", "rerank", "tracks"]),
        Stage(
            "submission", stage_submission, _section("retrieval"), ["distances", "rerank", "tracks"]
        ),
        Stage(
            "report",
            stage_report,
            lambda cfg: cfg.model_dump(mode="json"),  # the page shows the whole config
            ["data", "distances", "rerank", "tracks", "metrics", *attr, *train_names],
        ),
    ]
    if not pc.attributes:
        stages = [s for s in stages if s.name != "metadata"]
        for s in stages:
            s.reads = [r for r in s.reads if r != "metadata"]
    return stages


STAGE_NAMES = (
    "data",
    "attributes",
    "train",
    "extract",
    "distances",
    "metadata",
    "rerank",
    "tracks",
    "metrics",
    "submission",
    "report",
)


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
