"""Build a re-id model by name: a plain dict filled by the ``@register_model`` decorator."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from vreid.core.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]

#: name → builder ``(num_classes, **options) -> nn.Module``.
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder ``(num_classes, **options) -> nn.Module`` under ``name``."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model name '{name}' registered twice")
        MODELS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def _options_of(builder: ModelBuilder) -> list[str]:
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build model ``name`` for ``num_classes`` identities.

    Options (keyword-only, e.g. ``backbone``, ``last_stride``, ``pretrained``, ``eval_features``)
    are passed to the builder; ``None`` values are dropped so config defaults apply. The model gets
    an ``arch`` dict ``{"name", "num_classes", **options}`` (without ``pretrained``: the weights
    live in the checkpoint) from which a checkpoint loader rebuilds it.

    Raises:
        ConfigError: unknown name (lists the known ones) or an option the model does not take.
    """
    builder = MODELS.get(name)
    if builder is None:
        raise ConfigError(f"model.name: unknown model '{name}'; known: {', '.join(list_models())}")
    allowed = _options_of(builder)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model '{name}': unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    options = {k: v for k, v in options.items() if v is not None}
    model = builder(num_classes, **options)
    arch = {"name": name, "num_classes": num_classes}
    arch.update({k: v for k, v in options.items() if k != "pretrained"})
    model.arch = arch
    return model
