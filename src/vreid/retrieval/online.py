"""Online k-reciprocal re-ranking: one query against a standing gallery, from stored neighbour lists.

The definition is the one of :func:`vreid.retrieval.reranking.rerank` applied to ONE query and
the gallery (items = the query, index 0, then the gallery 1 … g; ties by item index, so the query
wins every tie). ``rerank(q[None], g, k1=…, k2=…, lambda_value=…)`` is what
``online_rerank(graph, q)`` equals (to float32 rounding, identical rankings).

What the gallery stores (:class:`NeighbourGraph`): for every gallery item its top-K gallery
neighbours by d (squared Euclidean distance, sorted by D = d / max_row d, ties by index) with their
d values, and the row maximum of d over the gallery. From these, :meth:`NeighbourGraph.prepare`
builds, once per (k1, k2), the gallery-only V (softmax over the expanded k-reciprocal sets, sparse
rows) and V_qe (query expansion), kept as an inverted index by column.

What a query changes (everything else is reused):

1. its own row: d(q, ·) against the gallery (one matrix-vector product), D_q = d / max;
2. every gallery row i: M'(i) = max(M(i), d(i, q)); q enters i's list at position p_i = #{entries
   with D < D(i, q)} (strict: the query's index 0 wins ties);
3. L = rows whose top-(k1+1) list changed (p_i ≤ k1) + the query; V(i) depends on the lists of i,
   its top-(k1+1) F(i) and F(F(i)), and on M'(i): A = L ∪ {F(i) ∩ L ≠ ∅} ∪ {F(i) ∩ A1 ≠ ∅} ∪
   {M'(i) ≠ M(i)} is where V is recomputed (exactly, as the dense definition does);
4. V_qe is recomputed for the rows whose top-k2 meets A; Jaccard of the query against every
   gallery item walks the stored inverted index over the query's V_qe support, and the recomputed
   rows replace their stored values.

The cost per query is one pass over the gallery features plus work proportional to |A| (hundreds
to a few thousand rows), not the O(N²) of a full re-ranking.

With attribute metadata (d' = d / M₀ + Σ w · d_meta / M_meta, ``rerank(…, metadata=…)``) the
stored lists, values and row maxima are those of d', with each row's component maxima M_c. A
query that raises some M_c(i) re-weights row i's whole d' row (its order can change): such rows
are recomputed against the gallery (:meth:`NeighbourGraph._fresh_rows`) and treated as changed
lists in step 3; every other row is handled as above with d' for d.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vreid.core.devices import resolve_device
from vreid.retrieval.reranking import _tiles, concat_ranges

ArrayLike = np.ndarray | torch.Tensor

#: neighbours kept per gallery item beyond k1 + 1 (margin for ties; lets look-ups hit the list)
DEFAULT_K = 40


#: seconds per phase (and row counts) of the last query: for benchmarks
timings: dict[str, float] = {}


class _Laps:
    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        timings[name] = now - self.last
        self.last = now


def _safe(m: torch.Tensor) -> torch.Tensor:
    return torch.where(m > 0, m, torch.ones_like(m))


def _as_feats(x: ArrayLike, device: torch.device) -> torch.Tensor:
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = np.array(x)  # a read-only memory map: torch wants writable memory
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D feature array (N, D), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32).contiguous()


def _tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x))  # a copy: memory maps are read-only
    return x.to(device, dtype)


def _sort_rows(values: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by value, ties by index (index sort, then a stable value sort)."""
    by_index = indices.sort(1)
    values = values.gather(1, by_index.indices)
    by_value = values.sort(dim=1, stable=True)
    return by_value.values, by_index.values.gather(1, by_value.indices)


def exact_neighbours(
    feats: ArrayLike,
    k: int,
    *,
    others: ArrayLike | None = None,
    device: str | torch.device | None = "cpu",
    block_rows: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k by squared distance of every row of ``feats`` among ``others`` (default: itself).

    Returns ``(indices (n, k) long, d (n, k) float32, rowmax (n,))``, rows sorted by d, ties by
    index; blockwise (memory: ``block_rows`` × len(others) floats), CPU or CUDA.
    """
    idx, val, rowmax, _ = combined_neighbours(
        feats, k, others=others, device=device, block_rows=block_rows
    )
    return idx, val, rowmax


def combined_neighbours(
    feats: ArrayLike,
    k: int,
    *,
    others: ArrayLike | None = None,
    metadata: Sequence[tuple[ArrayLike, ArrayLike | None, float]] = (),
    maxima: ArrayLike | None = None,
    device: str | torch.device | None = "cpu",
    block_rows: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k of every row of ``feats`` (n, D) among ``others`` (m, D) (default: itself) by the
    distance re-ranking starts from: d (squared Euclidean) without metadata, with metadata
    ``[(meta (n, E), meta_others (m, E) or None for itself, weight), …]`` d' = d / M₀ + Σ
    weight · d_meta / M_meta, each M the row's largest distance of that component (as
    :func:`vreid.retrieval.reranking.rerank` defines it; a zero maximum counts as 1).

    ``maxima`` (1 + len(metadata), n): the rows' component maxima over items outside ``others``
    (an index's older items); the maxima used are then the larger of those and the ones over
    ``others``. Returns ``(indices (n, k) long, values (n, k) float32, rowmax (n,) of the values
    over others, component maxima (1 + len(metadata), n))``, rows sorted by value, ties by index.
    """
    dev = resolve_device(device)
    xs = [_as_feats(feats, dev)]
    if others is None and not metadata and maxima is None and xs[0].shape[0] > 2 * _TILE:
        return _self_neighbours(xs[0], k)
    ys = [xs[0] if others is None else _as_feats(others, dev)]
    weights = []
    for mx, my, w in metadata:
        xs.append(_as_feats(mx, dev))
        ys.append(xs[-1] if my is None else _as_feats(my, dev))
        weights.append(float(w))
    n, m = xs[0].shape[0], ys[0].shape[0]
    k = min(k, m)
    sy = [(y * y).sum(1) for y in ys]
    base = None if maxima is None else _tensor(maxima, dev, torch.float32).reshape(len(xs), n)
    idx = torch.empty((n, k), dtype=torch.long, device=dev)
    val = torch.empty((n, k), device=dev)
    rowmax = torch.zeros(n, device=dev)
    comp_max = torch.zeros((len(xs), n), device=dev)
    with torch.no_grad():
        for s in range(0, n, block_rows):
            e = min(s + block_rows, n)
            parts = []
            for c, (x, y) in enumerate(zip(xs, ys, strict=True)):
                xb = x[s:e]
                d = torch.addmm((xb * xb).sum(1)[:, None] + sy[c][None], xb, y.T, alpha=-2.0)
                d.clamp_min_(0.0)
                comp_max[c, s:e] = d.amax(1) if m else 0.0
                parts.append(d)
            if base is not None:
                comp_max[:, s:e] = torch.maximum(comp_max[:, s:e], base[:, s:e])
            d = combine_distances(parts, _safe(comp_max[:, s:e])[:, :, None], weights)
            rowmax[s:e] = d.amax(1)
            v, i = d.topk(k, dim=1, largest=False, sorted=False)
            val[s:e], idx[s:e] = _sort_rows(v, i)
    return idx, val, rowmax, comp_max


#: tile edge of the symmetric all-pairs pass
_TILE = 2048


def _self_neighbours(
    x: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`combined_neighbours` of a gallery (n, D) against itself without metadata: d is
    symmetric, so only the tiles on and above the diagonal are computed (half the products of
    the row-block pass); each tile's top-k along both axes is merged into its rows' and its
    columns' lists, sorted by d (ties by index) at the end."""
    n = x.shape[0]
    k = min(k, n)
    sq = (x * x).sum(1)
    val = torch.full((n, k), float("inf"), device=x.device)
    idx = torch.full((n, k), -1, dtype=torch.long, device=x.device)
    rowmax = torch.zeros(n, device=x.device)

    def merge(rows: slice, v: torch.Tensor, i: torch.Tensor) -> None:
        cv, ci = torch.cat([val[rows], v], 1), torch.cat([idx[rows], i], 1)
        mv, at = cv.topk(k, dim=1, largest=False, sorted=False)
        val[rows], idx[rows] = mv, ci.gather(1, at)

    with torch.no_grad():
        for rows, cols in _tiles(n, _TILE):
            d = torch.addmm(sq[rows, None] + sq[None, cols], x[rows], x[cols].T, alpha=-2.0)
            d.clamp_min_(0.0)
            rowmax[rows] = torch.maximum(rowmax[rows], d.amax(1))
            v, i = d.topk(min(k, d.shape[1]), dim=1, largest=False, sorted=False)
            merge(rows, v, i + cols.start)
            if cols != rows:
                rowmax[cols] = torch.maximum(rowmax[cols], d.amax(0))
                v, i = d.topk(min(k, d.shape[0]), dim=0, largest=False, sorted=False)
                merge(cols, v.T, i.T + rows.start)
        val, idx = _sort_rows(val, idx)
    return idx, val, rowmax, rowmax[None].clone()


def combine_distances(
    parts: Sequence[torch.Tensor], maxima: torch.Tensor, weights: Sequence[float]
) -> torch.Tensor:
    """d' from per-component distances ``parts`` (each (n,) or (n, m)) and their rows' maxima
    ``maxima`` (C, n) or (C, n, 1) (zero already replaced by 1): ``parts[0]`` itself without
    metadata, else (d / M₀ + w₁ · (d₁ / M₁)) + … — the operation order of
    :func:`vreid.retrieval.reranking.rerank`, so the values agree to the last bit."""
    if not weights:
        return parts[0]
    out = parts[0] / maxima[0]
    for c, w in enumerate(weights, start=1):
        out = out + w * (parts[c] / maxima[c])
    return out


def merge_neighbours(
    idx_a: torch.Tensor, d_a: torch.Tensor, idx_b: torch.Tensor, d_b: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two sorted neighbour lists per row (disjoint candidates) into the best k."""
    v, i = _sort_rows(torch.cat([d_a, d_b], 1), torch.cat([idx_a, idx_b], 1))
    return i[:, :k], v[:, :k]


class _Sparse:
    """Sparse rows: ``ptr`` (rows + 1), ``col``, ``val`` (row-compressed). ``col`` is held as
    int32 (half the memory of the gallery's sets) and handed out as int64 by :meth:`gather`."""

    def __init__(self, ptr: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> None:
        self.ptr, self.col, self.val = ptr, col.to(torch.int32), val

    @classmethod
    def from_counts(cls, counts: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> _Sparse:
        ptr = torch.zeros(counts.shape[0] + 1, dtype=torch.long, device=counts.device)
        ptr[1:] = torch.cumsum(counts, 0)
        return cls(ptr, col, val)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(which of ``rows`` each entry belongs to, col, val) of the rows ``rows``."""
        counts = self.ptr[rows + 1] - self.ptr[rows]
        pos = concat_ranges(self.ptr[rows], counts)
        owner = torch.repeat_interleave(torch.arange(rows.shape[0], device=rows.device), counts)
        return owner, self.col[pos].long(), self.val[pos]

    def transpose(self, num_cols: int) -> _Sparse:
        counts = self.ptr[1:] - self.ptr[:-1]
        rows = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)
        order = torch.sort(self.col, stable=True).indices
        col_counts = torch.bincount(self.col, minlength=num_cols)
        return _Sparse.from_counts(col_counts, rows[order], self.val[order])

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.ptr, self.col, self.val


def _v_rows(rows: torch.Tensor, ranks: torch.Tensor, k1: int, dvals) -> _Sparse:
    """V rows (softmax of −D over the expanded k-reciprocal set) of ``rows`` from the rank table
    ``ranks`` (N, ≥ k1 + 1; row i = item i's list). ``dvals(rows, members, present)`` → D values (needed where ``present``)."""
    n = ranks.shape[0]
    k1p = min(k1 + 1, n)
    khp = min(round(k1 / 2) + 1, n)
    fk = ranks[rows, :k1p]  # (B, k1p)
    recip_k = (ranks[fk, :k1p] == rows[:, None, None]).any(2)
    fh = ranks[fk, :khp]  # (B, k1p, khp): the half lists of the candidates
    recip_h = (ranks[fh, :khp] == fk[..., None, None]).any(-1)
    cand_sets = torch.where(recip_h, fh, -1)
    valid = cand_sets >= 0
    own_sorted = torch.where(recip_k, fk, -2).sort(1).values
    flat = cand_sets.flatten(1)
    at = torch.searchsorted(own_sorted, flat).clamp_max_(k1p - 1)
    inside = (own_sorted.gather(1, at) == flat).view_as(cand_sets) & valid
    size = valid.sum(-1).double()
    accept = recip_k & (inside.sum(-1).double() > (2.0 / 3.0) * size)
    expansion = torch.where(accept[..., None] & valid, cand_sets, -1).flatten(1)
    members = torch.cat([torch.where(recip_k, fk, -1), expansion], 1).sort(1).values
    dup = torch.zeros_like(members, dtype=torch.bool)
    dup[:, 1:] = members[:, 1:] == members[:, :-1]
    present = (members >= 0) & ~dup
    d = dvals(rows, members.clamp_min(0), present)
    w = torch.where(present, torch.exp(-d), torch.zeros_like(d))
    w = w / w.sum(1, keepdim=True)
    return _Sparse.from_counts(present.sum(1), members[present], w[present])


class NeighbourGraph:
    """A gallery's features, top-K neighbour lists and row maxima: what online re-ranking needs.

    ``indices`` (g, K) gallery indices sorted by D = d / rowmax (ties by index), ``dists`` (g, K)
    their d (squared Euclidean distances), ``rowmax`` (g,) the largest d of each row over the
    gallery. ``feats`` (g, D) the features (float16 storage is accepted; computed in float32).

    With attribute metadata (``metadata``: ``[(meta (g, E), weight), …]``, ``maxima`` (1 +
    len(metadata), g): each row's largest distance of every component over the gallery, as
    :func:`combined_neighbours` returns them) the lists, ``dists`` and ``rowmax`` are those of
    the combined distance d' = d / M₀ + Σ weight · d_meta / M_meta, and a query gives its
    attribute features too (``rerank(…, metadata=[meta (q, E), …])``).

    ``candidates``: ``f(query (D,)) → (ids (L,), d (L,), largest d)``, a top-L search (faiss)
    that replaces the full pass over the gallery for d(q, ·) (without metadata): a gallery item
    outside the L takes D = 1 in the query's row and its row's maximum as d(i, q), so the query
    enters only the lists of the L candidates. Exact whenever every row the query enters is
    among the L and the largest d is right; the benchmark measures the recall it costs.
    """

    def __init__(
        self,
        feats: ArrayLike,
        indices: ArrayLike,
        dists: ArrayLike,
        rowmax: ArrayLike,
        *,
        metadata: Sequence[tuple[ArrayLike, float]] = (),
        maxima: ArrayLike | None = None,
        candidates: Callable[[torch.Tensor], tuple[Any, Any, float]] | None = None,
        device: str | torch.device | None = "cpu",
    ) -> None:
        self.device = resolve_device(device)
        self.candidates = candidates
        self.feats = _as_feats(feats, self.device)
        # the components of the distance: the features, then each attribute head's
        self.parts = [self.feats] + [_as_feats(mf, self.device) for mf, _ in metadata]
        self.weights = [float(w) for _, w in metadata]
        self.part_sqnorm = [(f * f).sum(1) for f in self.parts]
        self.sqnorm = self.part_sqnorm[0]
        self.indices = _tensor(indices, self.device, torch.long)
        self.dists = _tensor(dists, self.device, torch.float32)
        self.rowmax = _tensor(rowmax, self.device, torch.float32)
        g = self.feats.shape[0]
        if self.indices.shape != self.dists.shape or self.indices.shape[0] != g:
            raise ValueError(
                f"neighbour lists {tuple(self.indices.shape)} / {tuple(self.dists.shape)} do not "
                f"match {g} gallery items"
            )
        if self.weights:
            if maxima is None:
                raise ValueError("neighbour lists with metadata need the component maxima")
            self.maxima = _tensor(maxima, self.device, torch.float32).reshape(len(self.parts), g)
            if any(p.shape[0] != g for p in self.parts):
                raise ValueError(f"metadata features do not match {g} gallery items")
        else:
            self.maxima = self.rowmax[None]
        self._prepared: tuple[int, int] | None = None

    @classmethod
    def build(
        cls,
        feats: ArrayLike,
        k: int = DEFAULT_K,
        *,
        metadata: Sequence[tuple[ArrayLike, float]] = (),
        device: str | torch.device | None = "cpu",
    ) -> NeighbourGraph:
        """Exact lists of ``feats`` (g, D) (and ``metadata`` [(meta (g, E), weight), …])."""
        idx, d, rowmax, maxima = combined_neighbours(
            feats, k, metadata=[(mf, None, w) for mf, w in metadata], device=device
        )
        return cls(feats, idx, d, rowmax, metadata=metadata, maxima=maxima, device=device)

    @property
    def size(self) -> int:
        return self.feats.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    @property
    def metadata_weights(self) -> list[float]:
        return list(self.weights)

    # ---- the gallery-only V and V_qe (once per k1, k2)
    def _pair_d(
        self, a: torch.Tensor, b: torch.Tensor, maxima: torch.Tensor | None = None
    ) -> torch.Tensor:
        """d (d' with metadata, rows normalised by ``maxima`` (C, g), zero-safe; default: the
        stored ones) of gallery pairs (a[n], b[n]) from the features → (n,)."""
        out = torch.empty(a.shape[0], device=self.device)
        m = _safe(self.maxima if maxima is None else maxima)
        step = max(1, (1 << 22) // max(1, sum(p.shape[1] for p in self.parts)))
        for s in range(0, a.shape[0], step):
            x, y = a[s : s + step], b[s : s + step]
            parts = [
                (sq[x] + sq[y] - 2.0 * (f[x] * f[y]).sum(1)).clamp_min_(0.0)
                for f, sq in zip(self.parts, self.part_sqnorm, strict=True)
            ]
            out[s : s + step] = combine_distances(parts, m[:, x], self.weights)
        return out

    def _lookup_d(
        self,
        rows: torch.Tensor,
        members: torch.Tensor,
        needed: torch.Tensor,
        maxima: torch.Tensor | None = None,
        stale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """d(rows[b], members[b, j]) (d' with metadata) for gallery indices where ``needed``:
        the stored list when there and the row is not ``stale`` (g,) bool, else the features
        (with ``maxima``, see :meth:`_pair_d`); other entries: arbitrary."""
        order = self._index_order[rows].long()
        srt = self.indices[rows].gather(1, order)
        pos = torch.searchsorted(srt, members).clamp_max_(srt.shape[1] - 1)
        hit = srt.gather(1, pos) == members
        if stale is not None:
            hit &= ~stale[rows][:, None]
        vals = self.dists[rows].gather(1, order.gather(1, pos))
        miss = needed & ~hit
        if bool(miss.any()):
            mi, mj = miss.nonzero(as_tuple=True)
            vals[mi, mj] = self._pair_d(rows[mi], members[mi, mj], maxima)
        return vals

    def prepare(self, k1: int, k2: int) -> None:
        """Build the gallery-only V (rows) and V_qe (inverted: columns) for (k1, k2)."""
        if self._prepared == (k1, k2):
            return
        g = self.size
        need = min(max(k1 + 1, k2), g)
        if self.k < need:
            raise ValueError(
                f"the neighbour lists keep {self.k} neighbours; k1={k1}, k2={k2} need {need}"
            )
        k1p = min(k1 + 1, g)
        listed = _Sparse(
            torch.arange(g + 1, device=self.device) * k1p,
            self.indices[:, :k1p].reshape(-1),
            torch.zeros(g * k1p, dtype=torch.bool, device=self.device),  # structure only
        )
        self._listed_by = listed.transpose(g)  # item → the rows listing it in their top k1 + 1
        # each row's list in index order, as a permutation (a sorted copy of the lists and
        # their distances would cost 12 bytes per entry instead of 2)
        self._index_order = self.indices.argsort(1).to(torch.int16)
        m = _safe(self.rowmax)

        def dvals(rows: torch.Tensor, members: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
            return self._lookup_d(rows, members, need) / m[rows, None]

        chunk = max(1, (1 << 21) // ((k1 + 1) * (round(k1 / 2) + 1) ** 2))
        parts = [
            _v_rows(torch.arange(s, min(s + chunk, g), device=self.device), self.indices, k1, dvals)
            for s in range(0, g, chunk)
        ]
        counts = torch.cat([p.ptr[1:] - p.ptr[:-1] for p in parts])
        self.v = _Sparse.from_counts(
            counts, torch.cat([p.col for p in parts]), torch.cat([p.val for p in parts])
        )
        if k2 != 1:
            vqe = self._expand(torch.arange(g, device=self.device), self.indices, k2, None, None)
        else:
            vqe = self.v
        self.vqe_rows = vqe
        self.vqe_cols = vqe.transpose(g)
        self._prepared = (k1, k2)

    def _expand(
        self,
        rows: torch.Tensor,
        ranks: torch.Tensor,
        k2: int,
        new_rows: torch.Tensor | None,
        new_v: _Sparse | None,
    ) -> _Sparse:
        """V_qe of ``rows`` = mean of V over each row's top-k2 in ``ranks``. In the online case
        (``new_rows``: item ids whose V is ``new_v``; item i ≥ 1 is gallery i − 1) the rank table
        and the result are in item indexing."""
        k2p = min(k2, ranks.shape[1])
        n_cols = ranks.shape[0]
        out_counts, out_cols, out_vals = [], [], []
        step = max(1, (1 << 18) // max(1, k2p))
        for s in range(0, rows.shape[0], step):
            r = rows[s : s + step]
            src = ranks[r, :k2p].reshape(-1)
            owner = torch.arange(r.shape[0], device=r.device).repeat_interleave(k2p)
            if new_rows is None:
                o, c, v = self.v.gather(src)
                o = owner[o]
            else:
                slot = torch.full((n_cols,), -1, dtype=torch.long, device=r.device)
                slot[new_rows] = torch.arange(new_rows.shape[0], device=r.device)
                is_new = slot[src] >= 0
                o1, c1, v1 = new_v.gather(slot[src[is_new]])
                o2, c2, v2 = self.v.gather(src[~is_new] - 1)
                o = torch.cat([owner[is_new][o1], owner[~is_new][o2]])
                c = torch.cat([c1, c2 + 1])
                v = torch.cat([v1, v2])
            key = o * n_cols + c
            uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
            summed = torch.zeros(uniq.shape[0], device=r.device).index_add_(0, inverse, v)
            out_counts.append(torch.bincount(uniq // n_cols, minlength=r.shape[0]))
            out_cols.append(uniq % n_cols)
            out_vals.append(summed / k2p)
        return _Sparse.from_counts(torch.cat(out_counts), torch.cat(out_cols), torch.cat(out_vals))

    @property
    def nbytes(self) -> int:
        """Bytes of every tensor the graph holds: features (and attribute features), lists,
        maxima, and once prepared the sparse sets, the inverted lists and the rank table."""
        held = [*self.parts, *self.part_sqnorm, self.indices, self.dists, self.rowmax]
        if self.weights:
            held.append(self.maxima)
        if self._prepared is not None:
            held.append(self._index_order)
            for sparse in (self._listed_by, self.v, self.vqe_rows, self.vqe_cols):
                held += sparse.tensors
        if getattr(self, "_base", None) is not None:
            held.append(self._base)
        seen: set[int] = set()
        total = 0
        for t in held:  # count shared storage once (vqe_rows is v when k2 = 1)
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
        return total

    # ---- one query
    def query_distances(self, query: torch.Tensor, part: int = 0) -> torch.Tensor:
        """d(query, gallery) (g,) squared distances of component ``part`` (0: the features)."""
        q = query.to(self.device, torch.float32)
        f, sq = self.parts[part], self.part_sqnorm[part]
        return (sq + (q * q).sum() - 2.0 * (f @ q)).clamp_min_(0.0)

    def _fresh_rows(
        self, rows: torch.Tensor, maxima: torch.Tensor, dgq: torch.Tensor, w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gallery rows whose component maxima the query changed: their d' over the whole
        gallery again (the order of d' changes, not only its scale). Returns the item-indexed
        lists (|rows|, w) (the query is item 0 and wins ties) and the rows' raw maxima of d'."""
        g = self.size
        lists = torch.empty((rows.shape[0], w), dtype=torch.long, device=self.device)
        top = torch.empty(rows.shape[0], device=self.device)
        step = max(1, (1 << 24) // max(1, g * len(self.parts)))
        for s in range(0, rows.shape[0], step):
            r = rows[s : s + step]
            parts = [
                torch.addmm(sq[r][:, None] + sq[None], f[r], f.T, alpha=-2.0).clamp_min_(0.0)
                for f, sq in zip(self.parts, self.part_sqnorm, strict=True)
            ]
            d = combine_distances(parts, _safe(maxima[:, r])[:, :, None], self.weights)
            mx = torch.maximum(d.amax(1), dgq[r])
            full = torch.cat([dgq[r][:, None], d], 1) / _safe(mx)[:, None]
            lists[s : s + step] = full.sort(dim=1, stable=True).indices[:, :w]
            top[s : s + step] = mx
        return lists, top

    def rerank_one(
        self,
        query: ArrayLike,
        *,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        metadata: Sequence[ArrayLike] = (),
    ) -> torch.Tensor:
        """Re-ranked distances (g,) of one query (D,) against the gallery (float32); with
        metadata, ``metadata`` holds the query's attribute features (E,) of every head."""
        g = self.size
        n = g + 1
        k1 = min(k1, n)
        k2 = min(k2, n)
        if len(metadata) != len(self.weights):
            raise ValueError(
                f"the lists were built with {len(self.weights)} metadata heads, the query has "
                f"{len(metadata)}"
            )
        self.prepare(k1, k2)
        dev = self.device
        with torch.no_grad():
            qv = torch.as_tensor(np.asarray(query) if not torch.is_tensor(query) else query)
            qv = qv.reshape(-1)
            lap = _Laps()
            maxima = None  # the components' new row maxima (with metadata)
            stale = None  # rows whose component maxima the query changed
            pool = cand_ids = None  # the gallery rows the query can enter (None: all)
            if self.weights:
                parts = [self.query_distances(qv)] + [
                    self.query_distances(torch.as_tensor(np.asarray(mq)).reshape(-1), c)
                    for c, mq in enumerate(metadata, start=1)
                ]
                m_q = _safe(torch.stack([p.max() for p in parts]))
                dq_q = combine_distances(parts, m_q, self.weights)  # d'(q, ·)
                maxima = torch.maximum(self.maxima, torch.stack(parts))
                stale = (maxima != self.maxima).any(0)
                dgq = combine_distances(parts, _safe(maxima), self.weights)  # d'(·, q)
                dq_row = dq_q / _safe(dq_q.max())
            elif self.candidates is not None:
                # top-L search: a non-candidate sits at D = 1 in the query's row and at its
                # row's maximum in the gallery rows (the query enters no list beyond the L)
                pool, cand_d, far = self.candidates(qv)
                pool = cand_ids = torch.as_tensor(pool, device=dev, dtype=torch.long)
                cand_d = torch.as_tensor(cand_d, device=dev, dtype=torch.float32)
                m_q = _safe(torch.maximum(cand_d.max(), torch.as_tensor(float(far), device=dev)))
                dq_row = torch.ones(g, device=dev)
                dq_row[pool] = cand_d / m_q
                dgq = self.rowmax.clone()
                dgq[pool] = cand_d
            else:
                dgq = self.query_distances(qv)
                dq_row = dgq / _safe(dgq.max())
            lap("query distances")
            d_full = torch.cat([torch.zeros(1, device=dev), dq_row])
            # gallery rows: new maxima, the query's D and its place in each list
            w = min(max(k1 + 1, k2), n)
            raw_new = torch.maximum(self.rowmax, dgq)
            s_rows = torch.zeros(0, dtype=torch.long, device=dev)
            s_lists = torch.zeros((0, w), dtype=torch.long, device=dev)
            if stale is not None and bool(stale.any()):
                s_rows = stale.nonzero().squeeze(1)
                s_lists, raw_new[s_rows] = self._fresh_rows(s_rows, maxima, dgq, w)
            m_old = _safe(self.rowmax)
            m_new = _safe(raw_new)
            m_changed = m_new != m_old
            if stale is not None:
                m_changed |= stale
            d_gq = dgq / m_new
            cut = min(self.k, w)
            # rows where the query takes a place among the first w (strict <: it wins ties)
            # (vector operations over the whole gallery: no index gathers on the full pass)
            if pool is None:
                enter = torch.ones(g, dtype=torch.bool, device=dev)
                if cut >= w:  # else a gallery smaller than w: every list holds every item
                    enter = d_gq <= self.dists[:, cut - 1] / m_new
                if stale is not None:
                    enter &= ~stale
                r_rows = enter.nonzero().squeeze(1)
            else:
                if cut >= w:
                    pool = pool[d_gq[pool] <= self.dists[pool, cut - 1] / m_new[pool]]
                r_rows = pool
            listed = self.dists[r_rows, :cut] / m_new[r_rows, None]
            p = (listed < d_gq[r_rows, None]).sum(1)  # q's position in those rows' lists
            old = self.indices[r_rows, :cut] + 1
            if cut < w:
                pad = torch.zeros((old.shape[0], w - cut), dtype=torch.long, device=dev)
                old = torch.cat([old, pad], 1)
            t = torch.arange(w, device=dev)[None]
            src = (t - (t > p[:, None]).long()).clamp_max_(old.shape[1] - 1)
            new_lists = torch.where(t == p[:, None], 0, old.gather(1, src))
            # the query's own list: every entry up to the (w-1)-th value, sorted with ties by index
            vals = dq_row if cand_ids is None else dq_row[cand_ids]
            kth = vals.topk(min(w - 1, vals.shape[0]), largest=False, sorted=False).values.max()
            top_i = (vals <= kth).nonzero().squeeze(1)
            if cand_ids is not None:
                top_i = cand_ids[top_i]
            q_order = _sort_rows(dq_row[top_i][None], top_i[None])[1][0][: w - 1] + 1
            q_ranks = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), q_order])
            # the rank table in item indexing (q = 0, gallery j = j + 1), width w: the stored
            # base with the query's row and the changed rows written in, restored afterwards
            ranks = self._base_ranks(w)
            before = torch.get_num_threads()
            if dev.type == "cpu":  # small operations: one thread (others only add sync)
                torch.set_num_threads(1)
            written = torch.cat([r_rows, s_rows]) + 1
            saved = ranks[written].clone()
            ranks[0, : q_ranks.shape[0]] = q_ranks
            ranks[written] = torch.cat([new_lists, s_lists])
            changed = torch.cat([r_rows[p < min(k1 + 1, n)], s_rows])
            try:
                return self._rerank_rest(
                    ranks,
                    changed,
                    dgq,
                    dq_row,
                    d_full,
                    m_new,
                    m_changed,
                    maxima,
                    stale,
                    k1,
                    k2,
                    lambda_value,
                    lap,
                )
            finally:
                ranks[written] = saved
                torch.set_num_threads(before)

    def _base_ranks(self, w: int) -> torch.Tensor:
        """(g + 1, w) item-indexed lists of the gallery (row 0: room for the query)."""
        if getattr(self, "_base", None) is None or self._base.shape[1] != w:
            g = self.size
            body = self.indices[:, : min(self.k, w)] + 1
            if body.shape[1] < w:
                pad = torch.zeros((g, w - body.shape[1]), dtype=torch.long, device=self.device)
                body = torch.cat([body, pad], 1)
            head = torch.zeros((1, w), dtype=torch.long, device=self.device)
            self._base = torch.cat([head, body])
        return self._base

    def _rerank_rest(
        self,
        ranks,
        changed,
        dgq,
        dq_row,
        d_full,
        m_new,
        m_changed,
        maxima,
        stale,
        k1,
        k2,
        lambda_value,
        lap,
    ) -> torch.Tensor:
        g = self.size
        n = g + 1
        dev = self.device
        lap("lists")
        # A: the rows whose V changes. `changed`: the rows whose first k1 + 1 changed (the
        # query entered them, or their component maxima changed and they were recomputed)

        def listing(items: torch.Tensor) -> torch.Tensor:
            return self._listed_by.gather(items)[1]

        a1 = torch.cat([changed, listing(changed)])
        a_g = torch.cat([a1, listing(torch.unique(a1)), m_changed.nonzero().squeeze(1)])
        a_rows = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), torch.unique(a_g) + 1])
        affected = torch.zeros(n, dtype=torch.bool, device=dev)
        affected[a_rows] = True

        def dvals(rows: torch.Tensor, members: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
            out = torch.empty(members.shape, device=dev)
            is_q = rows == 0
            out[is_q] = d_full[members[is_q]]
            gr = ~is_q
            gi, gm = rows[gr] - 1, members[gr]
            mq = gm == 0
            dd = self._lookup_d(gi, (gm - 1).clamp_min(0), need[gr] & (gm > 0), maxima, stale)
            dd = torch.where(mq, dgq[gi][:, None], dd)
            out[gr] = dd / m_new[gi][:, None]
            return out

        lap("affected")
        new_v = _v_rows(a_rows, ranks, k1, dvals)
        lap("V")
        # V_qe for the rows whose top-k2 meets A
        if k2 != 1:
            k2p = min(k2, n)
            cand = torch.unique(torch.cat([a_rows[1:] - 1, listing(a_rows[1:] - 1)])) + 1
            cand = cand[affected[ranks[cand, :k2p]].any(1)]
            qe_rows = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), cand])
            new_qe = self._expand(qe_rows, ranks, k2, a_rows, new_v)
        else:
            qe_rows, new_qe = a_rows, new_v
        lap("query expansion")
        # the query's V_qe row (qe_rows[0] == 0)
        q_cols = new_qe.col[new_qe.ptr[0] : new_qe.ptr[1]].long()
        q_vals = new_qe.val[new_qe.ptr[0] : new_qe.ptr[1]]
        # Jaccard overlap from the stored inverted index (gallery columns = item cols − 1)
        overlap = torch.zeros(g, device=dev)
        gal = q_cols >= 1
        cols_g, vals_g = q_cols[gal] - 1, q_vals[gal]
        owner, rows_hit, vals_hit = self.vqe_cols.gather(cols_g)
        overlap.index_add_(0, rows_hit, torch.minimum(vals_g[owner], vals_hit))
        # recomputed rows: their overlap over the query's support replaces the stored one
        qpos = torch.full((n,), -1, dtype=torch.long, device=dev)
        qpos[q_cols] = torch.arange(q_cols.shape[0], device=dev)
        o, c, v = new_qe.gather(torch.arange(1, qe_rows.shape[0], device=dev))
        keep = qpos[c] >= 0
        fresh = torch.zeros(qe_rows.shape[0] - 1, device=dev).index_add_(
            0, o[keep], torch.minimum(v[keep], q_vals[qpos[c[keep]]])
        )
        overlap[qe_rows[1:] - 1] = fresh
        jaccard = 1.0 - overlap / (2.0 - overlap)
        out = jaccard * (1.0 - lambda_value) + dq_row * lambda_value
        lap("jaccard")
        timings["affected rows"] = float(a_rows.shape[0])
        timings["expanded rows"] = float(qe_rows.shape[0])
        return out

    def rerank(
        self,
        queries: ArrayLike,
        *,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        metadata: Sequence[ArrayLike] = (),
    ) -> np.ndarray:
        """Each query row (q, D) re-ranked on its own against the gallery → float32 (q, g);
        ``metadata``: the queries' attribute features [(q, E), …] of every head the lists were
        built with, in order."""
        qs = torch.as_tensor(np.asarray(queries) if not torch.is_tensor(queries) else queries)
        meta = [torch.as_tensor(np.asarray(m)) for m in metadata]
        out = np.empty((qs.shape[0], self.size), dtype=np.float32)
        for i in range(qs.shape[0]):
            out[i] = (
                self.rerank_one(
                    qs[i],
                    k1=k1,
                    k2=k2,
                    lambda_value=lambda_value,
                    metadata=[m[i] for m in meta],
                )
                .cpu()
                .numpy()
            )
        return out


def online_rerank(
    graph: NeighbourGraph,
    queries: ArrayLike,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """``graph.rerank``: every query row re-ranked on its own against the standing gallery."""
    return graph.rerank(queries, k1=k1, k2=k2, lambda_value=lambda_value)
