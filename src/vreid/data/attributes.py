"""Colour and type id tables (AIC, 0-based) and the clustered classes of the attribute model.

VeRi-776's 1-based colour and type tables list the same names in the same order as the first ten
(colour) / nine (type) AIC entries, so VeRi id ``k`` maps to AIC id ``k - 1``.

The attribute model (paper section 3.2.2) does not learn the raw ids:

- **type** is clustered into six classes by common visual appearance (:data:`TYPE_CLASSES`):
  small (sedan, hatchback, estate, sportscar), big (suv, mpv), van, pickup, truck, long (bus, RV);
- **colour** keeps the dataset's colours except orange, pink and purple (:data:`COLOR_CLASSES`).
  Images of an excluded colour are *not* relabelled: their colour target is :data:`IGNORE_INDEX`,
  so they still train the type head but never the colour head.

:data:`ATTRIBUTE_TABLE` is the one table all of this is derived from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vreid.core.errors import DatasetError

if TYPE_CHECKING:
    from vreid.data.records import ImageRecord

AIC_COLORS: tuple[str, ...] = (
    "yellow", "orange", "green", "gray", "red", "blue",
    "white", "golden", "brown", "black", "purple", "pink",
)  # fmt: skip
AIC_TYPES: tuple[str, ...] = (
    "sedan", "suv", "van", "hatchback", "mpv", "pickup",
    "bus", "truck", "estate", "sportscar", "RV",
)  # fmt: skip

VERI_COLORS: tuple[str, ...] = AIC_COLORS[:10]
VERI_TYPES: tuple[str, ...] = AIC_TYPES[:9]

IGNORE_INDEX: int = -100
"""Target of an image left out of a head's loss (PyTorch's ``cross_entropy`` default ``ignore_index``)."""

# The one table: for every AIC name, the attribute-model class it belongs to (None: excluded).
ATTRIBUTE_TABLE: dict[str, dict[str, str | None]] = {
    "color": {
        "yellow": "yellow",
        "orange": None,
        "green": "green",
        "gray": "gray",
        "red": "red",
        "blue": "blue",
        "white": "white",
        "golden": "golden",
        "brown": "brown",
        "black": "black",
        "purple": None,
        "pink": None,
    },
    "type": {
        "sedan": "small",
        "hatchback": "small",
        "estate": "small",
        "sportscar": "small",
        "suv": "big",
        "mpv": "big",
        "van": "van",
        "pickup": "pickup",
        "truck": "truck",
        "bus": "long",
        "RV": "long",
    },
}

TYPE_CLASSES: tuple[str, ...] = ("small", "big", "van", "pickup", "truck", "long")
"""The six clustered type classes, in class-index order."""
COLOR_CLASSES: tuple[str, ...] = tuple(
    c for c in AIC_COLORS if ATTRIBUTE_TABLE["color"][c] is not None
)
"""The colour classes (AIC colours without orange, purple, pink), in class-index order."""
EXCLUDED_COLORS: tuple[str, ...] = tuple(
    c for c in AIC_COLORS if ATTRIBUTE_TABLE["color"][c] is None
)

ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {"color": COLOR_CLASSES, "type": TYPE_CLASSES}
"""Class names of each head of the attribute model."""
AIC_NAMES: dict[str, tuple[str, ...]] = {"color": AIC_COLORS, "type": AIC_TYPES}


def _lookup(attribute: str) -> np.ndarray:
    """AIC id → class index (or :data:`IGNORE_INDEX`) as an int64 array."""
    classes = ATTRIBUTE_CLASSES[attribute]
    table = ATTRIBUTE_TABLE[attribute]
    return np.array(
        [
            IGNORE_INDEX if table[n] is None else classes.index(table[n])
            for n in AIC_NAMES[attribute]
        ],
        dtype=np.int64,
    )


AIC_COLOR_TO_CLASS: np.ndarray = _lookup("color")
"""AIC colour id → colour class index, :data:`IGNORE_INDEX` for excluded colours. Shape (12,)."""
AIC_TYPE_TO_CLASS: np.ndarray = _lookup("type")
"""AIC type id → clustered type class index. Shape (11,)."""
_TO_CLASS = {"color": AIC_COLOR_TO_CLASS, "type": AIC_TYPE_TO_CLASS}


def veri_to_aic(attribute: str, veri_id: int) -> int | None:
    """Map a VeRi-776 1-based colour/type id to the AIC 0-based id; 0 (VeRi's "invalid") → None.

    Raises :class:`ValueError` for ids outside VeRi's table (readers wrap it with the file name).
    """
    size = len(VERI_COLORS if attribute == "color" else VERI_TYPES)
    if veri_id == 0:
        return None
    if not 1 <= veri_id <= size:
        raise ValueError(f"VeRi {attribute} id {veri_id} is outside 1..{size}")
    return veri_id - 1


def attribute_targets(
    records: Sequence[ImageRecord], *, source: str | None = None
) -> dict[str, np.ndarray]:
    """Class targets of the attribute heads for ``records``.

    Returns ``{"color": (N,) int64, "type": (N,) int64}``: the clustered class index of each image,
    :data:`IGNORE_INDEX` where the label is unknown (``None``) or, for colour, an excluded colour.
    A label id outside the AIC tables raises :class:`DatasetError` naming the image (and
    ``source``, e.g. the label file, when given).
    """
    out: dict[str, np.ndarray] = {}
    for attribute in ("color", "type"):
        lookup = _TO_CLASS[attribute]
        raw = np.array(
            [-1 if getattr(r, attribute) is None else int(getattr(r, attribute)) for r in records],
            dtype=np.int64,
        )
        bad = (raw < -1) | (raw >= len(lookup))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            rec = records[i]
            where = f"{source}: " if source else ""
            names = AIC_NAMES[attribute]
            raise DatasetError(
                f"{where}image {rec.name} ({rec.path}): {attribute} id {raw[i]} is outside the AIC "
                f"{attribute} table (0..{len(names) - 1}: {', '.join(names)}); "
                f"{int(bad.sum())} image(s) affected. Fix the label file or map the ids to the AIC "
                f"table (vreid.data.attributes)"
            )
        targets = np.full(len(records), IGNORE_INDEX, dtype=np.int64)
        known = raw >= 0
        targets[known] = lookup[raw[known]]
        out[attribute] = targets
    return out
