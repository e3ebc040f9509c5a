"""Colour and type id tables (AIC, 0-based) and the clustered classes of the attribute model.

VeRi-776's 1-based colour and type tables list the same names in the same order as the first ten
(colour) / nine (type) AIC entries, so VeRi id ``k`` maps to AIC id ``k - 1``.
"""

from __future__ import annotations

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
