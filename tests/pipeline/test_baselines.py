"""The colour-histogram floor of the results table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vreid.workflows.calibration import colour_histogram_features


def test_colour_histograms_rank_same_colour_first(tmp_path: Path):
    rng = np.random.default_rng(0)
    paths = []
    for name, rgb in [("red1", (200, 20, 20)), ("red2", (190, 30, 25)), ("blue", (20, 30, 200))]:
        img = np.clip(np.array(rgb) + rng.integers(-10, 10, (40, 80, 3)), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(img).save(paths[-1])
    feats = colour_histogram_features(paths)
    assert feats.shape == (3, 8 * 4 * 4)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-6)
    d = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    assert d[0, 1] < 0.5 * d[0, 2]
    # a solid-colour image puts all its mass in one bin
    Image.new("RGB", (30, 30), (255, 255, 0)).save(tmp_path / "yellow.png")
    one = colour_histogram_features([tmp_path / "yellow.png"])[0]
    assert np.count_nonzero(one) == 1
