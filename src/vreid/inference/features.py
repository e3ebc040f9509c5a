"""Feature files: ``<stem>.npy`` (float32, (N, D)) beside ``<stem>.names.txt`` (one image name per line).

Written by ``vreid extract`` and read by ``vreid rank``; the name index ties each row to an image so
a feature file can be checked against the split it claims to describe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vreid.core.artefacts import atomic_path, names_bytes, read_names, read_npy
from vreid.core.errors import FeatureFileError, VreidError

MAX_ABS_FEATURE = 1e15
"""Largest feature magnitude accepted: squared distances of 2048-d features stay finite in float32."""


def _paths(stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix == ".npy":
        stem = stem.with_suffix("")
    return stem.with_suffix(".npy"), stem.with_name(stem.name + ".names.txt")


def save_features(stem: str | os.PathLike[str], features: np.ndarray, names: Sequence[str]) -> Path:
    """Write features (N, D) and their N names atomically; returns the ``.npy`` path."""
    npy, idx = _paths(stem)
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != len(names):
        raise ValueError(f"features {features.shape} do not match {len(names)} names")
    bad = ~np.isfinite(features).all(axis=1) if features.size else np.zeros(0, bool)
    if bad.any():  # what load_features refuses is never written: no silent NaN rows
        rows = np.flatnonzero(bad)
        raise FeatureFileError(
            f"{npy}: not written: {rows.size} of {len(names)} feature rows are NaN or inf (first: "
            f"{names[int(rows[0])]!r}); the model's weights or these images are broken"
        )
    index = names_bytes(names)  # encoded first: nothing is written if a name cannot be
    # Both files are complete before either is renamed into place (names first, then features),
    # so a failure never leaves one file of the pair new and the other missing or old.
    with atomic_path(npy) as tmp_npy, atomic_path(idx) as tmp_idx:
        np.save(tmp_npy, features, allow_pickle=False)
        tmp_idx.write_bytes(index)
    return npy


def load_features(
    stem: str | os.PathLike[str],
    expected_names: Sequence[str] | None = None,
    expected_dim: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Read a feature file and its name index; validate shape, finiteness and (optionally) names.

    Returns ``(features (N, D) float32, names)``. Every problem is a :class:`FeatureFileError`
    naming the file.
    """
    npy, idx = _paths(stem)
    if not npy.is_file():
        raise FeatureFileError(f"{npy}: feature file not found")
    if not idx.is_file():
        raise FeatureFileError(f"{idx}: name index not found (expected beside {npy.name})")
    try:
        feats = read_npy(npy)
    except VreidError as err:
        raise FeatureFileError(str(err)) from None
    if feats.ndim != 2:
        raise FeatureFileError(f"{npy}: expected a 2-D array (N, D), got shape {feats.shape}")
    if not np.issubdtype(feats.dtype, np.floating):
        raise FeatureFileError(f"{npy}: expected floating-point features, got {feats.dtype}")
    feats = feats.astype(np.float32, copy=False)
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise FeatureFileError(f"{npy}: {int(bad.sum())} rows contain NaN or inf (rows {rows} …)")
    big = float(np.abs(feats).max(initial=0.0))
    if big > MAX_ABS_FEATURE:
        raise FeatureFileError(
            f"{npy}: values up to {big:.3g} would overflow float32 distances (limit "
            f"{MAX_ABS_FEATURE:.0e}); vreid's features are L2-normalised — rescale these"
        )
    try:
        names = read_names(idx)
    except VreidError as err:
        raise FeatureFileError(str(err)) from None
    if len(names) != feats.shape[0]:
        raise FeatureFileError(
            f"{idx}: {len(names)} names for {feats.shape[0]} feature rows in {npy.name}"
        )
    if expected_dim is not None and feats.shape[1] != expected_dim:
        raise FeatureFileError(
            f"{npy}: feature dimension {feats.shape[1]}, expected {expected_dim}"
        )
    if expected_names is not None and list(expected_names) != names:
        exp = list(expected_names)
        if len(exp) != len(names):
            msg = f"{len(names)} names, the split has {len(exp)} images"
        else:
            i = next(i for i, (a, b) in enumerate(zip(exp, names, strict=True)) if a != b)
            msg = f"line {i + 1} is {names[i]!r}, the split has {exp[i]!r} there"
        raise FeatureFileError(f"{idx}: name index does not match the split: {msg}")
    return feats, names
