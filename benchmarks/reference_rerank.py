"""The dense reference of metadata-aware k-reciprocal re-ranking, written once and plainly.

This is Zhong et al.'s public formulation ("Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) with every N×N matrix built in full, plus the metadata extension of issue 4:
d' = N(d) + Σ weight · N(D_meta), N(·) dividing each row by its maximum over all N items. It is
the definition ``vreid.retrieval.rerank`` is tested and benchmarked against; it needs about
five N×N float32/int32 matrices of memory (≈ 9 GB at AIC20 size).

Two details are fixed where the public code leaves them to chance: initial ranks use a stable sort
(ties by item index), and a row whose maximum distance is 0 is divided by 1 instead of 0.

Running this file checks it on a tiny input (``make bench`` runs every script here).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def squared_distances(feats: np.ndarray) -> np.ndarray:
    """All-pairs squared Euclidean distances (N, N), float32, clamped at 0."""
    feats = np.asarray(feats, dtype=np.float32)
    sq = (feats * feats).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (feats @ feats.T), 0.0)


def row_normalise(dist: np.ndarray) -> np.ndarray:
    """N(·): divide each row by its maximum (1 where the maximum is 0)."""
    m = dist.max(axis=1, keepdims=True)
    m[m == 0] = 1.0
    return dist / m


def reference_rerank(
    query_feats: np.ndarray,
    gallery_feats: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metadata: Sequence[tuple[np.ndarray, np.ndarray, float]] = (),
) -> np.ndarray:
    """Dense re-ranking; returns the final (q, g) float32 distances."""
    query_num = len(query_feats)
    feats = np.concatenate([query_feats, gallery_feats]).astype(np.float32)
    all_num = len(feats)

    dist = squared_distances(feats)
    if metadata:
        dist = row_normalise(dist)
        for meta_q, meta_g, weight in metadata:
            meta = squared_distances(np.concatenate([meta_q, meta_g]))
            dist = dist + np.float32(weight) * row_normalise(meta)
    original_dist = row_normalise(dist).astype(np.float32)
    del dist
    initial_rank = np.argsort(original_dist, axis=1, kind="stable").astype(np.int32)
    V = np.zeros_like(original_dist, dtype=np.float32)

    for i in range(all_num):
        # k-reciprocal neighbours
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            half = int(np.around(k1 / 2.0)) + 1
            candidate_forward_k_neigh_index = initial_rank[candidate, :half]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :half]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(
                np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)
            ) > 2.0 / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)

    original_dist = original_dist[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank

    invIndex = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(5, 8)), rng.normal(size=(40, 8))
    out = reference_rerank(q, g, k1=6, k2=3)
    if out.shape != (5, 40) or not np.isfinite(out).all():
        raise SystemExit("reference_rerank: bad output")
    print(f"reference_rerank: ok on a (5, 40) example; first row minimum {out[0].min():.4f}")
