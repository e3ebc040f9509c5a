"""The retrieval chain on synthetic features: its rows, each recomputed from the building blocks,
the clamping of k1/k2, the track rule, the weights and the scoring."""

from __future__ import annotations

import numpy as np
import pytest

from vreid.core.config import RetrievalConfig
from vreid.core.errors import ConfigError
from vreid.retrieval.chain import RetrievalChain, ground_truth, model_distance, score
from vreid.retrieval.distance import ensemble
from vreid.retrieval.metrics import evaluate
from vreid.retrieval.reranking import original_distance, rerank
from vreid.retrieval.tracks import average_by_track

Q, G, IDS = 6, 30, 6


def _clustered(seed: int, dim: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(IDS, dim))
    qid, gid = np.arange(Q) % IDS, np.arange(G) % IDS
    q = centres[qid] + rng.normal(scale=noise, size=(Q, dim))
    g = centres[gid] + rng.normal(scale=noise, size=(G, dim))
    return q.astype(np.float32), g.astype(np.float32)


@pytest.fixture
def inputs():
    features = {"a": _clustered(1, 16, 0.8), "b": _clustered(2, 16, 0.8)}
    attributes = {"type": _clustered(3, 4, 0.3), "color": _clustered(4, 3, 0.3)}
    tracks = [j // 3 for j in range(G)]
    return features, attributes, tracks


def test_rows_are_the_building_blocks_in_order(inputs):
    features, attributes, tracks = inputs
    s = RetrievalConfig(k1=5, k2=2, ensemble_weights=[3, 1])
    chain = RetrievalChain(s, features, attributes=attributes, gallery_tracks=tracks, device="cpu")
    rows = dict(chain)
    assert (
        list(rows)
        == chain.rows
        == [
            "a",
            "b",
            "ensemble",
            "ensemble+rerank",
            "ensemble+rerank+metadata",
            "ensemble+rerank+metadata+tracks",
        ]
    )
    assert chain.final == "ensemble+rerank+metadata+tracks"
    meta = [(*attributes["type"], 0.2), (*attributes["color"], 0.1)]
    plain = {m: original_distance(*features[m]) for m in features}
    for m in features:
        np.testing.assert_array_equal(rows[m], plain[m])
        np.testing.assert_array_equal(rows[m], model_distance(*features[m]))
    np.testing.assert_array_equal(rows["ensemble"], ensemble([plain["a"], plain["b"]], [3, 1]))
    rr = [rerank(*features[m], k1=5, k2=2, lambda_value=0.3) for m in features]
    np.testing.assert_array_equal(rows["ensemble+rerank"], ensemble(rr, [3, 1]))
    rrm = [rerank(*features[m], k1=5, k2=2, lambda_value=0.3, metadata=meta) for m in features]
    np.testing.assert_array_equal(rows["ensemble+rerank+metadata"], ensemble(rrm, [3, 1]))
    np.testing.assert_array_equal(
        rows[chain.final], average_by_track(ensemble(rrm, [3, 1]), tracks)
    )
    np.testing.assert_array_equal(chain.final_distances(), rows[chain.final])
    assert chain.steps["metadata"] == ["type", "color"]


def test_without_rerank_metadata_goes_through_the_original_distance(inputs):
    features, attributes, tracks = inputs
    s = RetrievalConfig(rerank=False, gamma_colour=0.0, track_average=False)
    chain = RetrievalChain(s, features, attributes=attributes, gallery_tracks=tracks)
    rows = dict(chain)
    assert list(rows) == ["a", "b", "ensemble", "ensemble+metadata"]
    meta = [(*attributes["type"], 0.2)]
    expected = ensemble([original_distance(*features[m], metadata=meta) for m in features])
    np.testing.assert_array_equal(rows["ensemble+metadata"], expected)
    np.testing.assert_array_equal(chain.final_distances(), expected)
    assert chain.steps["metadata"] == ["type"]
    # no metadata given, or every γ zero: the plain ensemble is final
    assert RetrievalChain(s, features, gallery_tracks=tracks).final == "ensemble"
    zero = RetrievalConfig(rerank=False, gamma_type=0, gamma_colour=0, track_average=False)
    assert RetrievalChain(zero, features, attributes=attributes).rows[-1] == "ensemble"


def test_track_rule_and_clamping(inputs):
    features, _, _ = inputs
    one = {"a": features["a"]}
    s = RetrievalConfig(k1=500, k2=400)  # more than the 36 items: clamped
    partial = [None] * G
    partial[:4] = [7, 7, 8, 8]
    chain = RetrievalChain(s, one, gallery_tracks=partial)
    rows = dict(chain)
    assert list(rows) == ["a", "ensemble", "ensemble+rerank", "ensemble+rerank+tracks"]
    expected = rerank(*features["a"], k1=Q + G, k2=Q + G)
    np.testing.assert_array_equal(rows["ensemble+rerank"], expected)
    final = rows["ensemble+rerank+tracks"]
    np.testing.assert_array_equal(final[:, 4:], expected[:, 4:])  # no track: own distance
    np.testing.assert_allclose(final[:, 0], expected[:, :2].mean(1), rtol=1e-6)
    # no image with a track, or track averaging off: no tracks row
    assert RetrievalChain(s, one, gallery_tracks=[None] * G).final == "ensemble+rerank"
    off = RetrievalConfig(track_average=False)
    assert RetrievalChain(off, one, gallery_tracks=partial).final == "ensemble+rerank"


def test_bad_settings_are_refused(inputs):
    features, attributes, _ = inputs
    with pytest.raises(ConfigError, match=r"ensemble_weights \[1\.0\] has 1 entries for 2"):
        RetrievalChain(RetrievalConfig(ensemble_weights=[1]), features)
    with pytest.raises(ValueError, match="no 'color' attribute features"):
        RetrievalChain(RetrievalConfig(), features, attributes={"type": attributes["type"]})
    with pytest.raises(ValueError, match="clash"):
        RetrievalChain(RetrievalConfig(), {"ensemble": features["a"]})


def test_score_is_evaluate_at_top_plus_the_full_length(inputs):
    features, _, _ = inputs

    class Rec:
        def __init__(self, vid: int, cam: int | None) -> None:
            self.vehicle_id, self.camera = vid, cam

    query = [Rec(i % IDS, 1) for i in range(Q)]
    gallery = [Rec(j % IDS, 2) for j in range(G)]
    truth = ground_truth(query, gallery)
    assert truth is not None
    d = model_distance(*features["a"])
    s = RetrievalConfig(top=5)
    m = score(d, truth, s)
    aic = evaluate(d, truth.query_ids, truth.gallery_ids, protocol="aic", max_rank=5)
    full = evaluate(d, truth.query_ids, truth.gallery_ids, protocol="all", max_rank=G)
    assert m == {**aic, "full": {k: full[k] for k in ("mAP", "mINP", "num_valid_queries")}}
    assert len(m["cmc"]) == 5
    assert ground_truth([Rec(1, None)], gallery).query_cams is None
    assert ground_truth([*query[:-1], Rec(None, 1)], gallery) is None
