"""evaluate() against plain per-query code, with ties and queries without matches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vreid.retrieval.metrics import evaluate


def brute_force(dist, qid, gid, qcam, gcam, protocol, max_rank):
    """One query at a time, straight from the definitions (stable ties)."""
    aps, inps, firsts, skipped = [], [], [], 0
    for i in range(dist.shape[0]):
        order = sorted(range(dist.shape[1]), key=lambda j: (dist[i, j], j))
        if protocol == "veri":
            order = [j for j in order if not (gid[j] == qid[i] and gcam[j] == qcam[i])]
        good = [gid[j] == qid[i] for j in order]
        n = sum(good)
        if n == 0:
            skipped += 1
            continue
        hits, precisions = 0, []
        positions = []
        for pos, is_match in enumerate(good, start=1):
            if is_match:
                hits += 1
                positions.append(pos)
                if protocol != "aic" or pos <= max_rank:
                    precisions.append(hits / pos)
        aps.append(sum(precisions) / n)
        inps.append(n / positions[-1])
        firsts.append(positions[0])
    if not aps:
        return None, [], None, 0, skipped
    cmc = [np.mean([f <= k for f in firsts]) for k in range(1, max_rank + 1)]
    return np.mean(aps), cmc, np.mean(inps), len(aps), skipped


@pytest.mark.parametrize("protocol", ["aic", "veri", "all"])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_brute_force(protocol, ties):
    rng = np.random.default_rng(10 + ties)
    q, g = 40, 150
    dist = rng.random((q, g)).astype(np.float32)
    if ties:  # few distinct values: long runs of exactly equal distances
        dist = np.round(dist * 6).astype(np.float32) / 6
    qid = rng.integers(0, 15, q)
    qid[:3] = 99  # queries without any match
    gid = rng.integers(0, 15, g)
    qcam, gcam = rng.integers(0, 4, q), rng.integers(0, 4, g)
    max_rank = 20
    got = evaluate(dist, qid, gid, qcam, gcam, protocol=protocol, max_rank=max_rank)
    m_ap, cmc, minp, valid, skipped = brute_force(dist, qid, gid, qcam, gcam, protocol, max_rank)
    assert got["num_valid_queries"] == valid
    assert got["num_skipped_queries"] == skipped >= 3
    assert got["mAP"] == pytest.approx(m_ap, abs=1e-9)
    assert got["cmc"] == pytest.approx(cmc, abs=1e-12)
    assert got["mINP"] == pytest.approx(minp, abs=1e-9)
    assert got["rank1"] == got["cmc"][0]
    assert len(got["cmc"]) == max_rank


def test_protocols_differ_where_they_should():
    rng = np.random.default_rng(3)
    dist = rng.random((30, 400))
    qid, gid = rng.integers(0, 10, 30), rng.integers(0, 10, 400)
    qcam, gcam = rng.integers(0, 3, 30), rng.integers(0, 3, 400)
    aic = evaluate(dist, qid, gid, protocol="aic", max_rank=10)
    full = evaluate(dist, qid, gid, protocol="all", max_rank=10)
    veri = evaluate(dist, qid, gid, qcam, gcam, protocol="veri", max_rank=10)
    assert aic["mAP"] < full["mAP"]  # matches beyond rank 10 count for 'all' only
    assert veri["mAP"] != full["mAP"]
    assert aic["cmc"] == full["cmc"]


def test_perfect_ranking_scores_one():
    gid = np.repeat(np.arange(5), 4)
    qid = np.arange(5)
    dist = (qid[:, None] != gid[None, :]).astype(float) + np.linspace(0, 0.1, 20)[None, :]
    out = evaluate(dist, qid, gid, protocol="all")
    assert out["mAP"] == 1.0
    assert out["mINP"] == 1.0
    assert out["cmc"][0] == 1.0
    assert out["rank10"] == 1.0


def test_bad_input():
    d = np.zeros((2, 3))
    with pytest.raises(ValueError, match="2×3"):
        evaluate(d, [1], [1, 2, 3])
    with pytest.raises(ValueError, match="cams"):
        evaluate(d, [1, 2], [1, 2, 3], protocol="veri")
    with pytest.raises(ValueError, match="no query"):
        evaluate(d, [7, 8], [1, 2, 3])
    d[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(d, [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="protocol"):
        evaluate(d, [1, 2], [1, 2, 3], protocol="market")


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    q=st.integers(1, 6),
    g=st.integers(1, 25),
    levels=st.integers(1, 5),
    protocol=st.sampled_from(["aic", "veri", "all"]),
    max_rank=st.integers(1, 8),
)
def test_property_matches_brute_force(data, q, g, levels, protocol, max_rank):
    """Small matrices with few distinct values (many ties) and few ids."""
    dist = np.array(
        data.draw(st.lists(st.integers(0, levels), min_size=q * g, max_size=q * g)), dtype=float
    ).reshape(q, g)
    qid = np.array(data.draw(st.lists(st.integers(0, 3), min_size=q, max_size=q)))
    gid = np.array(data.draw(st.lists(st.integers(0, 3), min_size=g, max_size=g)))
    qcam = np.array(data.draw(st.lists(st.integers(0, 1), min_size=q, max_size=q)))
    gcam = np.array(data.draw(st.lists(st.integers(0, 1), min_size=g, max_size=g)))
    expected = brute_force(dist, qid, gid, qcam, gcam, protocol, max_rank)
    if expected[3] == 0:
        with pytest.raises(ValueError, match="no query"):
            evaluate(dist, qid, gid, qcam, gcam, protocol=protocol, max_rank=max_rank)
        return
    got = evaluate(dist, qid, gid, qcam, gcam, protocol=protocol, max_rank=max_rank)
    m_ap, cmc, minp, valid, skipped = expected
    assert (got["num_valid_queries"], got["num_skipped_queries"]) == (valid, skipped)
    assert got["mAP"] == pytest.approx(m_ap, abs=1e-9)
    assert got["cmc"] == pytest.approx(cmc, abs=1e-12)
    assert got["mINP"] == pytest.approx(minp, abs=1e-9)
