"""The pipeline engine: stages with declared inputs, cached artefacts, manifests and resume.

It knows nothing of re-id. A :class:`Stage` declares the config keys it reads (``config_keys``,
dotted paths such as ``"train"`` or ``"retrieval.k1"``) and the stages whose outputs it reads
(``reads``). Its cache key is the hash of exactly those config values (plus ``extra_key``, for
inputs that are not config values, e.g. a weights file's content) and of the upstream stages'
output digests: nothing is listed by hand twice.

Each stage writes ``manifests/<stage>.json`` holding its config hash, its inputs hash and the
digests of its outputs. A stage whose hashes match and whose outputs are all present is skipped;
otherwise it runs again, and so does everything downstream of it (their input hashes change). A
stage interrupted half-way leaves ``manifests/<stage>.started.json`` with its key and no manifest:
the next call runs it again with ``ctx.resume`` true when the key is unchanged (training then
resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from rich.console import Console

from vreid.core.artefacts import write_json_atomic
from vreid.core.config import Config, save_config
from vreid.core.errors import ConfigError

console = Console(stderr=True)


def hash_obj(obj: Any) -> str:
    """sha256 (first 16 hex digits) of ``obj`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 (first 16 hex digits) of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def config_values(config: Config, keys: Sequence[str]) -> dict[str, Any]:
    """``{dotted key: value}`` of ``config`` (JSON form) for each key; a section gives all its
    fields. An unknown key is a :class:`ConfigError` (a declaration that names nothing)."""
    tree = config.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"stage declares config key {key!r}, which does not exist")
            node = node[part]
        out[key] = node
    return out


@dataclass
class RunContext:
    """What a stage gets: the config, the run directory, the progress flag, and ``resume`` — true
    when this stage was interrupted earlier with the same key (set by the engine per stage)."""

    config: Config
    run_dir: Path
    progress: bool = True
    resume: bool = False

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def forget(self) -> None:
        """Drop cached reads (called after a stage that rewrites what they read)."""


C = TypeVar("C", bound=RunContext)


@dataclass
class Stage(Generic[C]):
    """One pipeline stage: ``run(ctx)`` returns the paths of its outputs (absolute inside the run
    directory, or relative to it)."""

    name: str
    run: Callable[[C], list[Path]]
    config_keys: tuple[str, ...]
    """Config keys (dotted; a section name means all its fields) the stage reads."""
    reads: list[str] = field(default_factory=list)
    """Stages whose outputs it reads."""
    extra_key: Callable[[Config], dict[str, Any]] | None = None
    """Inputs that are not config values (e.g. the content hash of a weights file named there)."""

    def key_values(self, config: Config) -> dict[str, Any]:
        """What the stage's config hash covers."""
        values = config_values(config, self.config_keys)
        if self.extra_key is not None:
            values["extra"] = self.extra_key(config)
        return values

    def config_hash(self, config: Config) -> str:
        return hash_obj(self.key_values(config))


def manifest_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "manifests" / f"{stage}.json"


def read_manifest(run_dir: Path, stage: str) -> dict[str, Any] | None:
    p = manifest_path(run_dir, stage)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text("utf-8"))
    except json.JSONDecodeError:
        return None


def _inputs_hash(run_dir: Path, stage: Stage) -> str:
    digests = {}
    for up in stage.reads:
        m = read_manifest(run_dir, up)
        digests[up] = m.get("output_digest") if m else None
    return hash_obj(digests)


def _up_to_date(run_dir: Path, stage: Stage, config_hash: str, inputs_hash: str) -> bool:
    m = read_manifest(run_dir, stage.name)
    if m is None or m.get("config_hash") != config_hash or m.get("inputs_hash") != inputs_hash:
        return False
    for rel, info in m.get("outputs", {}).items():
        p = run_dir / rel
        if not p.is_file() or p.stat().st_size != info["size"]:
            return False
    return True


def versions() -> dict[str, str]:
    """Python, platform, package versions and the device: written beside every run."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("vreid", "torch", "torchvision", "numpy", "scipy", "pillow", "pydantic"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    import torch

    out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    out["torch threads"] = str(torch.get_num_threads())
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


def run_stages(
    stages: Sequence[Stage[C]],
    ctx: C,
    *,
    from_stage: str | None = None,
) -> tuple[list[str], list[str]]:
    """Run ``stages`` in order in ``ctx.run_dir``, skipping those whose artefacts are up to date;
    ``from_stage`` forces that stage and all later ones. Returns ``(ran, skipped)``."""
    run_dir, config = ctx.run_dir, ctx.config
    save_config(config, run_dir / "config.yaml")
    write_json_atomic(run_dir / "versions.json", versions())
    write_json_atomic(run_dir / "stages.json", [s.name for s in stages])
    start_at = resolve_from_stage(stages, from_stage) if from_stage else len(stages)
    ran: list[str] = []
    skipped: list[str] = []
    for order, stage in enumerate(stages):
        config_hash = stage.config_hash(config)
        inputs_hash = _inputs_hash(run_dir, stage)
        key = hash_obj([config_hash, inputs_hash])
        if order < start_at and _up_to_date(run_dir, stage, config_hash, inputs_hash):
            console.print(f"[dim]stage {stage.name}: up to date[/]")
            skipped.append(stage.name)
            continue
        console.rule(f"stage {stage.name}")
        started = manifest_path(run_dir, f"{stage.name}.started")
        previous = json.loads(started.read_text("utf-8")) if started.is_file() else {}
        ctx.resume = previous.get("key") == key
        if not ctx.resume:
            write_json_atomic(started, {"key": key})
        t0 = time.perf_counter()
        outputs = stage.run(ctx)
        seconds = time.perf_counter() - t0
        ctx.resume = False
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
            "output_digest": hash_obj(files),
            "seconds": round(seconds, 2),
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_json_atomic(manifest_path(run_dir, stage.name), manifest)
        started.unlink(missing_ok=True)
        console.print(f"stage {stage.name}: done in {seconds:.1f} s")
        ran.append(stage.name)
        ctx.forget()
    return ran, skipped
