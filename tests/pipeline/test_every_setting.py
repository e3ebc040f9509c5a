"""Every config field is honoured: changing it changes the cache key (or the stage list) of the
pipeline stages that read it — so a run with the new value recomputes what depends on it — or it
is one of the few fields listed below, whose docstrings say why no stage's key holds them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from vreid.core.config import INFORMATIONAL_KEYS, Config, load_config
from vreid.core.errors import ConfigError
from vreid.workflows.pipeline import build_stages

#: Fields that change no result: where the work runs or what the run is called.
INFORMATIONAL = {"runtime.device", "pipeline.name"}
#: Fields read by a command outside the pipeline, named here.
COMMAND_ONLY = {"detector": "vreid train-detector"}


def leaf_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += leaf_fields(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def _get(config: Config, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _candidates(value: Any) -> list[Any]:
    """Other values to try for a field (the first that validates and builds is used)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, 1600, 5000, 2]
    if isinstance(value, float):
        return [value / 2 + 0.01, value * 2 + 0.01, 0.5]
    if isinstance(value, tuple | list):
        items = list(value)
        if items and isinstance(items[0], int | float):
            return [[items[0] + 16, *items[1:]], [items[0] / 2, *items[1:]]]
        if isinstance(value, list):
            return [items[:1], items[1:], [*items, "resnet50"], ["real"], ["glamor"]]
    return [
        None,
        "cpu",
        "other",
        "light",
        "bf16",
        "mINP",
        "adam",
        "all",
        "veri",
        "best",
        "pre_neck",
        "vehicleid",
        "counter_glamor",
        "/tmp/vreid-every-setting",
        8,
        64,
        0.25,
        1.0,
        2,
        [0.5, 0.5],
    ]


def _changed(base: Config, dotted: str) -> Config | None:
    tree = base.model_dump(mode="json")
    extra: dict[str, Any] = {}
    if dotted == "pipeline.checkpoint":  # best needs a validation split (refused otherwise)
        extra = {"train.val_fraction": 0.25, "train.eval_every": 1}
    for value in _candidates(_get(base, dotted)):
        if value == _get(base, dotted):
            continue
        try:
            config = load_config(None, values={**_flat(tree), dotted: value, **extra})
            build_stages(config)
        except (ConfigError, ValidationError):
            continue
        if _get(config, dotted) != _get(base, dotted):
            return config
    return None  # no other value builds from this base (e.g. tune.enabled without validation)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k in {"augment"} | set(Config.model_fields):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _keys(config: Config) -> dict[str, str]:
    return {s.name: s.config_hash(config) for s in build_stages(config)}


#: Configs the fields are changed from: some fields are read only when another enables their
#: stage (tune.* with tune.enabled), so a field must reach a key from at least one of them.
BASES = {
    "tiny": [],
    "aic20": [],
    "tiny, tuned": ["tune.enabled=true", "train.val_fraction=0.25"],
}


def test_every_field_reaches_a_stage_key():
    unread: dict[str, set[str]] = {}
    for name, overrides in BASES.items():
        preset = name.split(",")[0]
        base = load_config(preset, ["pipeline.ensemble=[glamor, counter_glamor]", *overrides])
        before = _keys(base)
        for dotted in leaf_fields(Config):
            section = dotted.split(".")[0]
            if dotted in INFORMATIONAL or section in COMMAND_ONLY:
                continue
            changed = _changed(base, dotted)
            if changed is None or _keys(changed) == before:
                unread.setdefault(dotted, set()).add(name)
    never = sorted(k for k, bases in unread.items() if len(bases) == len(BASES))
    assert not never, f"fields that change no stage key in any of {list(BASES)}: {never}"


def test_the_exceptions_say_so_in_their_docstrings():
    assert INFORMATIONAL == INFORMATIONAL_KEYS  # what results keys and the report leave out
    for dotted in INFORMATIONAL:
        section, name = dotted.split(".")
        doc = Config.model_fields[section].annotation.model_fields[name].description or ""
        assert "Informational" in doc or "informational" in doc, dotted
    for section, command in COMMAND_ONLY.items():
        doc = Config.model_fields[section].annotation.__doc__ or ""
        assert command in doc, section


def test_a_key_of_one_stage_leaves_the_others_alone():
    """The keys are precise, not the whole config: retrieval.k1 re-runs the chain and what
    follows it, not training."""
    base = load_config("tiny")
    changed = load_config("tiny", ["retrieval.k1=7"])
    before, after = _keys(base), _keys(changed)
    assert {s for s in before if before[s] != after[s]} == {"distances", "metrics", "submission"}
