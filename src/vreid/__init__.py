"""vreid: vehicle re-identification (GLAMOR / Counter GLAMOR, metadata-aware re-ranking, AIC track2)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Extractor", "__version__", "search_images"]


def __getattr__(name: str) -> Any:
    # Lazy so `import vreid` and `vreid --help` do not import torch.
    if name == "Extractor":
        from vreid.inference.extract import Extractor

        return Extractor
    if name == "search_images":
        from vreid.workflows.search import search_images

        return search_images
    raise AttributeError(f"module 'vreid' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy exports are part of the module's surface: show them to dir() and completion
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})
