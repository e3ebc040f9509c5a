"""The tiled re-ranking equals the dense reference (Zhong et al. + metadata) on small inputs.

Features are quantised to multiples of 1/256 in [-1, 1] with at most 16 dimensions, so every dot
product, norm and distance is exact in float32 whatever the summation order: the reference and the
tiled code then see bit-identical distances and initial ranks, and any difference left comes from
the float32 sums of V and the Jaccard step (≤ 1e-6). With unquantised features a near-tie of two
distances can flip between two BLAS kernels, which is a property of float32, not of the algorithm.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_rerank import reference_rerank
from vreid.retrieval.reranking import original_distance, rerank


def quantise(x: np.ndarray) -> np.ndarray:
    return (np.clip(np.round(x * 256), -256, 256) / 256).astype(np.float32)


def random_feats(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return quantise(rng.uniform(-1, 1, size=(n, dim)))


def clustered_feats(rng: np.random.Generator, n: int, dim: int, ids: int) -> np.ndarray:
    centres = rng.uniform(-0.6, 0.6, size=(ids, dim))
    labels = rng.integers(0, ids, size=n)
    return quantise(centres[labels] + rng.normal(scale=0.15, size=(n, dim)))


def assert_same_ranking(got: np.ndarray, ref: np.ndarray, top: int = 100, tol: float = 1e-6):
    """got's top-``top`` list of every row is a correct top list of ref (up to ties within tol)."""
    top = min(top, ref.shape[1])
    order = np.argsort(got, axis=1, kind="stable")[:, :top]
    ref_along_got = np.take_along_axis(ref, order, axis=1)
    ref_sorted = np.sort(ref, axis=1)[:, :top]
    assert np.abs(ref_along_got - ref_sorted).max() <= tol


CASES = [
    # kind, metadata, k1, k2, lambda, block_size
    ("random", False, 20, 6, 0.3, 64),
    ("random", True, 20, 6, 0.3, 100),
    ("clustered", False, 20, 6, 0.3, 128),
    ("clustered", True, 20, 6, 0.3, 64),
    ("clustered", False, 7, 1, 0.0, 1000),
    ("clustered", True, 5, 3, 0.5, 50),
    ("random", False, 11, 4, 1.0, 37),
    ("clustered", True, 13, 10, 0.8, 2048),
]


@pytest.mark.parametrize(("kind", "with_meta", "k1", "k2", "lam", "block"), CASES)
def test_equals_dense_reference(kind, with_meta, k1, k2, lam, block):
    rng = np.random.default_rng(k1 * 100 + k2)
    n, q = 320, 70
    if kind == "random":
        feats = random_feats(rng, n, 16)
    else:
        feats = clustered_feats(rng, n, 16, ids=25)
    metadata = ()
    if with_meta:
        colour = clustered_feats(rng, n, 8, ids=6)
        vtype = random_feats(rng, n, 4)
        metadata = ((colour[:q], colour[q:], 0.1), (vtype[:q], vtype[q:], 0.2))
    ref = reference_rerank(feats[:q], feats[q:], k1, k2, lam, metadata)
    got = rerank(
        feats[:q],
        feats[q:],
        k1=k1,
        k2=k2,
        lambda_value=lam,
        metadata=metadata,
        device="cpu",
        block_size=block,
    )
    assert got.dtype == np.float32
    assert got.shape == (q, n - q)
    assert np.abs(got - ref).max() <= 1e-4
    assert_same_ranking(got, ref)
    if lam < 1.0:  # the re-ranking really changed the order of the plain distance
        plain = ((feats[:q, None] - feats[None, q:]) ** 2).sum(-1)
        assert (np.argsort(plain, 1)[:, :10] != np.argsort(got, 1)[:, :10]).any()


def test_metadata_changes_the_result():
    rng = np.random.default_rng(1)
    feats = clustered_feats(rng, 200, 16, ids=20)
    colour = random_feats(rng, 200, 8)
    plain = rerank(feats[:40], feats[40:], device="cpu")
    with_meta = rerank(feats[:40], feats[40:], metadata=[(colour[:40], colour[40:], 0.5)])
    assert np.abs(plain - with_meta).max() > 1e-2


def test_exact_ties_are_broken_by_index_like_the_reference():
    rng = np.random.default_rng(2)
    base = clustered_feats(rng, 150, 12, ids=15)
    # every item three times: whole groups of exactly equal distances
    feats = np.concatenate([base, base, base])[rng.permutation(450)]
    q = 60
    ref = reference_rerank(feats[:q], feats[q:], 20, 6, 0.3)
    got = rerank(feats[:q], feats[q:], device="cpu", block_size=100)
    assert np.abs(got - ref).max() <= 1e-4
    assert_same_ranking(got, ref)


def test_fewer_items_than_k1():
    rng = np.random.default_rng(3)
    feats = random_feats(rng, 12, 6)
    ref = reference_rerank(feats[:4], feats[4:], 20, 6, 0.3)
    got = rerank(feats[:4], feats[4:], device="cpu")
    assert np.abs(got - ref).max() <= 1e-4


def test_tile_size_does_not_change_the_result():
    rng = np.random.default_rng(4)
    feats = clustered_feats(rng, 500, 16, ids=40)
    a = rerank(feats[:100], feats[100:], device="cpu", block_size=33)
    b = rerank(feats[:100], feats[100:], device="cpu", block_size=4096)
    assert np.abs(a - b).max() <= 1e-6


def test_torch_tensors_are_accepted():
    rng = np.random.default_rng(5)
    feats = random_feats(rng, 80, 8)
    a = rerank(feats[:20], feats[20:], device="cpu")
    b = rerank(torch.from_numpy(feats[:20]), torch.from_numpy(feats[20:]), device="cpu")
    np.testing.assert_array_equal(a, b)


def test_bad_input_is_rejected():
    rng = np.random.default_rng(6)
    q, g = rng.normal(size=(5, 8)), rng.normal(size=(20, 8))
    with pytest.raises(ValueError, match="dimension"):
        rerank(q, rng.normal(size=(20, 7)))
    bad = g.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rerank(q, bad)
    with pytest.raises(ValueError, match=r"metadata\[0\]"):
        rerank(q, g, metadata=[(q[:, :2], g[:10, :2], 0.1)])
    with pytest.raises(ValueError, match="k1"):
        rerank(q, g, k1=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(7)
    feats = clustered_feats(rng, 600, 16, ids=40)
    colour = random_feats(rng, 600, 8)
    meta = [(colour[:100], colour[100:], 0.1)]
    cpu = rerank(feats[:100], feats[100:], metadata=meta, device="cpu")
    gpu = rerank(feats[:100], feats[100:], metadata=meta, device="cuda", block_size=256)
    assert np.abs(cpu - gpu).max() <= 1e-4
    assert_same_ranking(gpu, cpu)


def test_original_distance_is_rerank_with_lambda_one():
    rng = np.random.default_rng(8)
    feats = clustered_feats(rng, 260, 16, ids=20)
    colour = random_feats(rng, 260, 8)
    meta = [(colour[:50], colour[50:], 0.1)]
    d = original_distance(feats[:50], feats[50:], metadata=meta, device="cpu")
    np.testing.assert_array_equal(
        d, rerank(feats[:50], feats[50:], lambda_value=1.0, metadata=meta)
    )
    assert d.max() <= 1.0
