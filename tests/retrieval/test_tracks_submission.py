"""Track averaging, ensembles, distances and track2.txt writing/checking."""

from __future__ import annotations

import numpy as np
import pytest

from vreid.core.errors import SubmissionError
from vreid.retrieval.distance import ensemble, pairwise_distances
from vreid.retrieval.submission import check_submission, top_indices, write_submission
from vreid.retrieval.tracks import average_by_track


def test_average_by_track_brute_force():
    rng = np.random.default_rng(0)
    dist = rng.random((7, 30)).astype(np.float32)
    tracks = rng.integers(-1, 6, 30)  # -1: no track
    tracks[:3] = -1
    got = average_by_track(dist, tracks)
    for i in range(7):
        for j in range(30):
            if tracks[j] < 0:
                assert got[i, j] == dist[i, j]
            else:
                same = tracks == tracks[j]
                assert got[i, j] == pytest.approx(dist[i, same].mean(), rel=1e-6)


def test_average_by_track_with_labels_and_none():
    dist = np.array([[1.0, 3.0, 5.0, 7.0]])
    got = average_by_track(dist, ["a", None, "a", "b"])
    np.testing.assert_allclose(got, [[3.0, 3.0, 3.0, 7.0]])
    with pytest.raises(ValueError, match="3 track ids for 4"):
        average_by_track(dist, [1, 2, 3])


def test_ensemble_and_weights():
    a, b = np.ones((2, 3)), np.full((2, 3), 4.0)
    np.testing.assert_allclose(ensemble([a, b]), 2.5)
    np.testing.assert_allclose(ensemble([a, b], [3, 1]), 1.75)
    assert ensemble([a, b]).dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        ensemble([a, np.ones((3, 2))])
    with pytest.raises(ValueError, match="weights"):
        ensemble([a, b], [1])


def test_pairwise_distances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(9, 5)), rng.normal(size=(11, 5))
    exact = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    np.testing.assert_allclose(pairwise_distances(a, b, block=4), exact, atol=1e-5)
    np.testing.assert_allclose(pairwise_distances(a, b, squared=True), exact**2, atol=1e-4)
    # |a|² + |a|² − 2a·a cancels to float32 rounding (~1e-6), whose square root is ~1e-3
    assert (pairwise_distances(a, a).diagonal() < 5e-3).all()
    with pytest.raises(ValueError, match="expected"):
        pairwise_distances(a, b[:, :4])


def test_top_indices_breaks_ties_by_index():
    dist = np.array([[0.5, 0.1, 0.5, 0.1, 0.9], [3, 2, 1, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(top_indices(dist, 3), [[1, 3, 0], [3, 4, 2]])
    np.testing.assert_array_equal(top_indices(dist, 10), [[1, 3, 0, 2, 4], [3, 4, 2, 1, 0]])


def test_write_then_check_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    dist = rng.random((5, 250))
    path = write_submission(dist, tmp_path / "track2.txt")
    ranks = check_submission(path, 5, 250)
    assert ranks.shape == (5, 100)
    np.testing.assert_array_equal(ranks - 1, np.argsort(dist, 1)[:, :100])
    small = write_submission(dist[:, :30], tmp_path / "small.txt")
    assert check_submission(small, 5, 30).shape == (5, 30)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 2 3\n1 2 3\n", "2 lines, expected one per query"),
        ("1 2 3\n1 2\n3 2 1\n", "line 2: 2 gallery indices, expected 3"),
        ("1 2 3\n1 2 x\n3 2 1\n", "line 2: 'x' is not an integer"),
        ("1 2 3\n1 2 4\n3 2 1\n", "line 2: index 4 outside 1..3"),
        ("0 2 3\n1 2 3\n3 2 1\n", "line 1: index 0 outside"),
        ("1 2 3\n1 2 3\n3 3 1\n", "line 3: index 3 appears 2 times"),
    ],
)
def test_check_submission_errors(tmp_path, content, message):
    path = tmp_path / "track2.txt"
    path.write_text(content)
    with pytest.raises(SubmissionError, match=message):
        check_submission(path, 3, 3)


def test_check_submission_missing_file(tmp_path):
    with pytest.raises(SubmissionError, match="not found"):
        check_submission(tmp_path / "nope.txt", 1, 1)
