"""The one record type every dataset reader produces, and the dataset container."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Split names used by every reader: 'train', 'query', 'gallery'.
SPLITS = ("train", "query", "gallery")


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image of a re-id dataset.

    ``color`` and ``type`` use the AIC id tables (0-based, see :mod:`vreid.data.attributes`);
    readers of other formats map their ids onto them. ``None`` means unknown.
    """

    path: Path
    """Absolute path of the image file."""
    name: str
    """Image name as written in the dataset's label/name files (relative to the split folder)."""
    split: str
    """'train', 'query' or 'gallery'."""
    vehicle_id: int | None = None
    camera: int | None = None
    track: int | None = None
    """0-based track index within the split (line number of the track file), or None."""
    color: int | None = None
    type: int | None = None


@dataclass
class ReidDataset:
    """A dataset: its root, detected format and the records of each split (in file order)."""

    root: Path
    format: str
    splits: dict[str, list[ImageRecord]] = field(default_factory=dict)
    extra_attributes: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """Per split, image name → further label attributes the format carries (e.g. the AIC
    simulation's ``orientation``, ``lightInt``, ``camHei``); only images that have any appear."""

    def __getitem__(self, split: str) -> list[ImageRecord]:
        return self.splits[split]

    def __iter__(self) -> Iterator[ImageRecord]:
        for records in self.splits.values():
            yield from records

    @property
    def has_ground_truth(self) -> bool:
        """True when query and gallery both carry vehicle ids (local evaluation is possible)."""
        q, g = self.splits.get("query", []), self.splits.get("gallery", [])
        return bool(q and g) and all(r.vehicle_id is not None for r in (*q, *g))
