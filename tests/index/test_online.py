"""Online re-ranking equals the dense k-reciprocal definition applied to one query and the gallery."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vreid.retrieval.online import NeighbourGraph, exact_neighbours
from vreid.retrieval.reranking import rerank


def _clustered(rng, n, dim, ids, noise, quantise=True):
    centres = rng.normal(size=(ids, dim))
    x = centres[rng.integers(0, ids, n)] + noise * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if quantise:  # every distance exact in float32 (see docs/readme/retrieval.md)
        x = np.round(x * 256) / 256
    return x.astype(np.float32)


def _check(gallery, queries, **kw):
    graph = NeighbourGraph.build(gallery, 40)
    got = graph.rerank(queries, **kw)
    for i in range(len(queries)):
        ref = rerank(queries[i : i + 1], gallery, device="cpu", **kw)[0]
        np.testing.assert_allclose(got[i], ref, atol=1e-5, rtol=0)
        top = min(100, len(gallery))
        assert (
            np.argsort(got[i], kind="stable")[:top] == np.argsort(ref, kind="stable")[:top]
        ).all()


@pytest.mark.parametrize(
    ("g", "k1", "k2", "lam"),
    [(300, 20, 6, 0.3), (400, 10, 3, 0.5), (250, 20, 1, 0.3), (25, 20, 6, 0.3), (300, 5, 2, 0.0)],
)
def test_equals_rerank_of_one_query(g, k1, k2, lam):
    rng = np.random.default_rng(g + k1)
    feats = _clustered(rng, g + 6, 16, max(3, g // 12), 0.6)
    _check(feats[6:], feats[:6], k1=k1, k2=k2, lambda_value=lam)


def test_duplicates_outliers_and_unquantised_features():
    rng = np.random.default_rng(7)
    gallery = _clustered(rng, 300, 32, 20, 0.5, quantise=False)
    gallery[10] = gallery[11]  # exact ties between gallery items
    queries = np.concatenate(
        [
            gallery[[3]],  # a copy of a gallery item (tie with the query)
            -gallery[[5]],  # an outlier: farther than any gallery item for many rows
            _clustered(rng, 3, 32, 20, 0.5, quantise=False),
        ]
    )
    _check(gallery, queries, k1=20, k2=6, lambda_value=0.3)


def test_neighbour_lists_are_exact_and_sorted():
    rng = np.random.default_rng(1)
    x = _clustered(rng, 200, 8, 10, 0.5)
    _idx, d, rowmax = exact_neighbours(x, 12, block_rows=37)
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    ref = np.argsort(full, axis=1, kind="stable")[:, :12]
    np.testing.assert_allclose(d.numpy(), np.take_along_axis(full, ref, 1), atol=1e-5)
    np.testing.assert_allclose(rowmax.numpy(), full.max(1), atol=1e-5)
    assert (np.diff(d.numpy(), axis=1) >= 0).all()


def _check_metadata(gallery, attrs, queries, q_attrs, weights, **kw):
    """Online re-ranking with attribute metadata against ``rerank(…, metadata=…)`` per query;
    returns how many gallery rows had a component maximum raised by some query."""
    graph = NeighbourGraph.build(gallery, 40, metadata=list(zip(attrs, weights, strict=True)))
    got = graph.rerank(queries, metadata=q_attrs, **kw)
    raised = 0
    for i in range(len(queries)):
        meta = [(qa[i : i + 1], ga, w) for qa, ga, w in zip(q_attrs, attrs, weights, strict=True)]
        ref = rerank(queries[i : i + 1], gallery, device="cpu", metadata=meta, **kw)[0]
        np.testing.assert_allclose(got[i], ref, atol=1e-5, rtol=0)
        top = min(100, len(gallery))
        assert (
            np.argsort(got[i], kind="stable")[:top] == np.argsort(ref, kind="stable")[:top]
        ).all()
        for qa, ga in zip(q_attrs, attrs, strict=True):
            d_q = ((ga - qa[i]) ** 2).sum(1)
            d_g = ((ga[:, None] - ga[None]) ** 2).sum(-1).max(1)
            raised += int((d_q > d_g).sum())
    return raised


@pytest.mark.parametrize(
    ("g", "k1", "k2", "lam", "weights"),
    [
        (300, 20, 6, 0.3, (0.2, 0.1)),
        (400, 10, 3, 0.5, (0.4, 0.05)),
        (250, 20, 1, 0.3, (0.1,)),
        (25, 20, 6, 0.3, (0.2, 0.1)),
        (300, 5, 2, 0.0, (1.0, 0.5)),
    ],
)
def test_metadata_equals_rerank_of_one_query(g, k1, k2, lam, weights):
    rng = np.random.default_rng(3 * g + k1)
    feats = _clustered(rng, g + 6, 16, max(3, g // 12), 0.6)
    attrs = [_clustered(rng, g + 6, 6, 4, 0.4) for _ in weights]
    # an outlier query in every component: raises the component maxima of many gallery rows
    for x in (feats, *attrs):
        x[0] = -x[7]
    queries, gallery = feats[:6], feats[6:]
    raised = _check_metadata(
        gallery,
        [a[6:] for a in attrs],
        queries,
        [a[:6] for a in attrs],
        list(weights),
        k1=k1,
        k2=k2,
        lambda_value=lam,
    )
    assert raised > 0  # the case where the order of whole rows changes was exercised


def test_metadata_with_unquantised_features_and_ties():
    rng = np.random.default_rng(11)
    gallery = _clustered(rng, 300, 32, 20, 0.5, quantise=False)
    attr = _clustered(rng, 300, 8, 5, 0.3, quantise=False)
    gallery[10], attr[10] = gallery[11], attr[11]
    queries = np.concatenate([gallery[[3]], -gallery[[5]], gallery[[40]]])
    q_attr = np.concatenate([attr[[3]], attr[[5]], -attr[[40]]])
    raised = _check_metadata(
        gallery, [attr], queries, [q_attr], [0.3], k1=20, k2=6, lambda_value=0.3
    )
    assert raised > 0


def _top_l(graph, size):
    """A top-L search by exact distances (what faiss approximates): ids, d, the largest d."""

    def search(q):
        d = graph.query_distances(q)
        top = d.topk(min(size, len(d)), largest=False)
        return top.indices, top.values, float(d.max())

    return search


def test_top_l_candidates():
    rng = np.random.default_rng(5)
    feats = _clustered(rng, 406, 16, 30, 0.6)
    queries, gallery = feats[:6], feats[6:]
    exact = NeighbourGraph.build(gallery, 40).rerank(queries)
    # every item a candidate: the same answer as the full pass
    graph = NeighbourGraph.build(gallery, 40)
    graph.candidates = _top_l(graph, len(gallery))
    np.testing.assert_allclose(graph.rerank(queries), exact, atol=1e-6, rtol=0)
    # L = 100 of 400: non-candidates at D = 1; the top 20 keep ≥ 95 % of their items
    graph.candidates = _top_l(graph, 100)
    approx = graph.rerank(queries)
    top = 20
    for a, e in zip(approx, exact, strict=True):
        found = np.argsort(a, kind="stable")[:top]
        truth = np.argsort(e, kind="stable")[:top]
        assert len(set(found) & set(truth)) >= 0.95 * top
    outside = np.ones(len(gallery), dtype=bool)
    outside[_top_l(graph, 100)(torch.from_numpy(queries[0]))[0].numpy()] = False
    # beyond the L, the distance is (1 − λ)·Jaccard + λ·1
    assert (approx[0][outside] >= 0.3 - 1e-6).all()


def test_symmetric_all_pairs_pass_equals_the_row_blocks():
    """A gallery against itself (n > 2 tiles) takes the tiles above the diagonal only."""
    rng = np.random.default_rng(2)
    x = _clustered(rng, 5000, 8, 300, 0.3)
    idx, d, rowmax = exact_neighbours(x, 12)  # symmetric tiles
    ref_idx, ref_d, ref_max = exact_neighbours(x, 12, others=x)  # row blocks
    np.testing.assert_array_equal(d.numpy(), ref_d.numpy())
    np.testing.assert_array_equal(rowmax.numpy(), ref_max.numpy())
    assert (idx == ref_idx).float().mean() > 0.999  # ties at the k-th value may differ
    assert (np.diff(d.numpy(), axis=1) >= 0).all()


def _storages(obj) -> dict[int, int]:
    """{storage address: bytes} of every tensor an object holds, in lists and sparse sets too."""
    found: dict[int, int] = {}
    for value in vars(obj).values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            tensors = [item] if torch.is_tensor(item) else []
            if hasattr(item, "ptr"):  # a sparse set (ptr, col, val)
                tensors = [item.ptr, item.col, item.val]
            for t in tensors:
                found[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return found


@pytest.mark.parametrize("metadata", [False, True])
def test_nbytes_counts_every_tensor_the_graph_holds(metadata):
    rng = np.random.default_rng(7)
    feats = _clustered(rng, 401, 32, 30, 0.6)
    meta = [(rng.normal(size=(400, 6)).astype(np.float32), 0.2)] if metadata else []
    graph = NeighbourGraph.build(feats[1:], 40, metadata=meta)
    graph.prepare(20, 6)
    graph.rerank(feats[:1], metadata=[rng.normal(size=(1, 6))] if metadata else [])
    held = _storages(graph)
    assert graph.nbytes == sum(held.values())
    # the sets are held compactly: int32 columns, the lists' index order as int16
    assert graph.v.col.dtype == torch.int32
    assert graph._index_order.dtype == torch.int16
    # beyond the features: ≈ 1,450 bytes per item at K = 40, k1 = 20 (2,700 before that)
    per_item = (graph.nbytes - sum(p.untyped_storage().nbytes() for p in graph.parts)) / 400
    assert per_item < 1_800
