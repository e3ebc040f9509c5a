"""Metadata-aware k-reciprocal re-ranking (Zhong et al. 2017) that never builds an N×N matrix.

Definition (issue 4; the dense reference is ``benchmarks/reference_rerank.py``). Items are the
queries then the gallery, N = q + g, and d is the squared Euclidean distance of the main features.

* With metadata ``(query_meta, gallery_meta, weight)``: d' = N(d) + Σ weight · N(D_meta), where
  N(·) divides each row by its maximum over all N items; without metadata d' = d.
* D = N(d'); the initial ranking of each row is by D (ties by item index, as a stable sort).
* R(i, k1): the k-reciprocal neighbours among the top k1 + 1 of i; each candidate c ∈ R(i, k1)
  adds R(c, round(k1/2)) when more than 2/3 of that set lies in R(i, k1) (the expansion R*).
* V(i, ·) = softmax of −D(i, ·) over R*(i); query expansion: V rows averaged over the top k2.
* Jaccard distance 1 − Σmin(V_i, V_j) / (2 − Σmin(V_i, V_j)); final distance
  (1 − λ)·Jaccard + λ·D for query rows and gallery columns, all in float32.

How it avoids N×N memory: distances are computed in tiles (matrix products) over the upper
triangle only (d is symmetric), keeping a running top-K per row and the row maxima; D is kept densely
only for query rows × gallery columns (the output); V is a sparse row-compressed matrix; the Jaccard
step walks an inverted index (V's gallery rows grouped by column). Everything runs in torch on the
chosen device (CPU or CUDA).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from vreid.core.devices import resolve_device
from vreid.inference.features import MAX_ABS_FEATURE

ArrayLike = np.ndarray | torch.Tensor
MetadataTriple = tuple[ArrayLike, ArrayLike, float]

#: Candidates kept per row beyond what the ranks need: covers exact ties at the k-boundaries and
#: lets most D(i, ·) look-ups of the expansion sets hit the stored top-K instead of recomputing.
_TOPK_MARGIN = 8


def _to_tensor(x: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (N, D), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    t = t.to(device=device, dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    if t.numel() and float(t.abs().max()) > MAX_ABS_FEATURE:
        raise ValueError(
            f"{name}: values up to {float(t.abs().max()):.3g} would overflow float32 distances "
            f"(limit {MAX_ABS_FEATURE:.0e}); vreid's features are L2-normalised — rescale them"
        )
    return t


class _Items:
    """Query and gallery rows of one feature kind, kept as two tensors (no concatenated copy):
    item i < q is query row i, item i ≥ q is gallery row i − q."""

    def __init__(
        self, query: ArrayLike, gallery: ArrayLike, name: str, device: torch.device
    ) -> None:
        self.query = _to_tensor(query, f"query {name}", device)
        self.gallery = _to_tensor(gallery, f"gallery {name}", device)
        if self.query.shape[1] != self.gallery.shape[1]:
            raise ValueError(
                f"{name}: query dimension {self.query.shape[1]} differs from gallery dimension "
                f"{self.gallery.shape[1]}"
            )
        self.q = self.query.shape[0]
        self.n = self.q + self.gallery.shape[0]
        self.dim = self.query.shape[1]
        self.sqnorm = torch.cat([(m * m).sum(1) for m in (self.query, self.gallery)])

    def rows(self, sl: slice) -> torch.Tensor:
        """Items sl.start … sl.stop − 1 as one (len, D) tensor (a view unless it straddles q)."""
        a, b, q = sl.start, sl.stop, self.q
        if b <= q:
            return self.query[a:b]
        if a >= q:
            return self.gallery[a - q : b - q]
        return torch.cat([self.query[a:], self.gallery[: b - q]])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Items at the indices ``idx`` (n,) → (n, D)."""
        out = torch.empty((idx.shape[0], self.dim), device=self.query.device)
        is_q = idx < self.q
        out[is_q] = self.query[idx[is_q]]
        out[~is_q] = self.gallery[idx[~is_q] - self.q]
        return out


class _ItemFeatures:
    """All N items' feature matrices (main first, then metadata) with squared norms and weights."""

    def __init__(
        self,
        query_feats: ArrayLike,
        gallery_feats: ArrayLike,
        metadata: Sequence[MetadataTriple],
        device: torch.device,
    ) -> None:
        main = _Items(query_feats, gallery_feats, "features", device)
        self.num_query = main.q
        self.num_items = main.n
        self.mats = [main]
        self.weights: list[float] = []
        for j, triple in enumerate(metadata):
            if len(triple) != 3:
                raise ValueError(
                    f"metadata[{j}]: expected (query_feats, gallery_feats, weight), "
                    f"got {len(triple)} items"
                )
            mq, mg, weight = triple
            mat = _Items(mq, mg, f"metadata[{j}] features", device)
            if mat.q != main.q or mat.n != main.n:
                raise ValueError(
                    f"metadata[{j}]: {mat.q} query / {mat.n - mat.q} gallery rows, the main "
                    f"features have {main.q} / {main.n - main.q}"
                )
            self.mats.append(mat)
            self.weights.append(float(weight))
        self.rowmax = [torch.zeros(self.num_items, device=device) for _ in self.mats]

    @property
    def has_metadata(self) -> bool:
        return len(self.mats) > 1

    def tile(self, which: int, rows: slice, cols: slice) -> torch.Tensor:
        """Squared distances (|rows|, |cols|) of feature matrix ``which`` (clamped at 0)."""
        items = self.mats[which]
        sq = items.sqnorm
        base = sq[rows, None] + sq[None, cols]
        return torch.addmm(base, items.rows(rows), items.rows(cols).T, alpha=-2.0).clamp_min_(0.0)

    def pair_sqdist(self, which: int, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Squared distances of the item pairs (i[n], j[n]) of matrix ``which`` (shape (n,))."""
        items = self.mats[which]
        sq = items.sqnorm
        out = torch.empty(i.shape[0], device=sq.device)
        step = max(1, (1 << 22) // items.dim)
        for s in range(0, i.shape[0], step):
            a, b = i[s : s + step], j[s : s + step]
            dot = (items.take(a) * items.take(b)).sum(1)
            out[s : s + step] = (sq[a] + sq[b] - 2.0 * dot).clamp_min_(0.0)
        return out

    def combine(self, parts: Sequence[torch.Tensor], rows: slice | torch.Tensor) -> torch.Tensor:
        """d' from the per-matrix distances of the same entries; ``rows`` selects the row maxima.

        Same operation order as the reference: ((d / m0) + w1 · (D1 / m1)) + w2 · (D2 / m2) …
        """
        if not self.has_metadata:
            return parts[0]
        shape_rows = (slice(None), None) if parts[0].ndim == 2 else (slice(None),)

        def norm(k: int) -> torch.Tensor:
            m = _safe_max(self.rowmax[k][rows])
            return parts[k] / m[shape_rows]

        out = norm(0)
        for k, w in enumerate(self.weights, start=1):
            out = out + w * norm(k)
        return out


#: Items below which everything runs on one CPU thread.
_SMALL = 4096

#: Seconds per phase of the last :func:`rerank` call (for benchmarks).
timings: dict[str, float] = {}


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        timings[name] = now - self.last
        self.last = now


@contextmanager
def _threads(device: torch.device, num: int) -> Iterator[None]:
    """Run torch CPU work on ``num`` threads inside the block (no-op on CUDA)."""
    if device.type != "cpu" or num == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _safe_max(m: torch.Tensor) -> torch.Tensor:
    """Row maxima with 0 replaced by 1 (a row of identical items stays 0 instead of NaN)."""
    return torch.where(m > 0, m, torch.ones_like(m))


def _tiles(n: int, size: int) -> list[tuple[slice, slice]]:
    starts = list(range(0, n, size))
    return [
        (slice(a, min(a + size, n)), slice(b, min(b + size, n)))
        for ia, a in enumerate(starts)
        for b in starts[ia:]
    ]


def _progress(enabled: bool, total: int, description: str) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import Progress

    progress = Progress(transient=True)
    progress.add_task(description, total=total)
    return progress


class _RunningTopK:
    """Per-row running K smallest values and their column indices.

    A block only contributes entries below the row's current K-th value (columns arrive in
    increasing index order, so strict ``<`` keeps the lower index among equal values); rows that
    have not seen K columns yet take every entry. This avoids a top-k over every tile, which would
    cost more than the matrix products themselves on CPU.
    """

    def __init__(self, n: int, k: int, device: torch.device) -> None:
        self.k = k
        self.values = torch.full((n, k), float("inf"), device=device)
        self.indices = torch.full((n, k), -1, dtype=torch.long, device=device)
        self.threshold = torch.full((n,), float("inf"), device=device)

    def update(self, rows: slice, cols: slice, block: torch.Tensor) -> None:
        threshold = self.threshold[rows]
        if block.shape[1] >= self.k and bool(torch.isinf(threshold).all()):
            # the first block these rows see: a plain top-k
            tv, ti = block.topk(self.k, dim=1, largest=False, sorted=False)
            self.values[rows] = tv
            self.indices[rows] = ti + cols.start
            self.threshold[rows] = tv.amax(1)
            return
        r, c = (block < threshold[:, None]).nonzero(as_tuple=True)
        if r.shape[0] == 0:
            return
        counts = torch.bincount(r, minlength=block.shape[0])
        width = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(r.shape[0], device=block.device) - starts[r]
        b = block.shape[0]
        new_v = torch.full((b, width), float("inf"), device=block.device)
        new_i = torch.full((b, width), -1, dtype=torch.long, device=block.device)
        new_v[r, slot] = block[r, c]
        new_i[r, slot] = c + cols.start
        cv = torch.cat([self.values[rows], new_v], 1)
        ci = torch.cat([self.indices[rows], new_i], 1)
        mv, mi = cv.topk(self.k, dim=1, largest=False, sorted=False)
        self.values[rows] = mv
        self.indices[rows] = ci.gather(1, mi)
        self.threshold[rows] = mv.amax(1)


def _sweep(
    feats: _ItemFeatures,
    topk: _RunningTopK,
    rowmax_final: torch.Tensor,
    out_qg: torch.Tensor,
    block_size: int,
    progress: bool,
) -> None:
    """One pass over the upper-triangle tiles: row maxima and running top-K of d', and d' for
    query rows × gallery columns written into ``out_qg``. With metadata a first pass collects
    the row maxima of every base distance (N(·) needs them before d' exists)."""
    n, q = feats.num_items, feats.num_query
    tiles = _tiles(n, block_size)
    passes = 2 if feats.has_metadata else 1
    ctx = _progress(progress, passes * len(tiles), "re-ranking: distances")
    with ctx as bar:
        if feats.has_metadata:
            for rows, cols in tiles:
                for k in range(len(feats.mats)):
                    t = feats.tile(k, rows, cols)
                    rm = feats.rowmax[k]
                    rm[rows] = torch.maximum(rm[rows], t.amax(1))
                    if cols != rows:
                        rm[cols] = torch.maximum(rm[cols], t.amax(0))
                if bar is not None:
                    bar.advance(bar.task_ids[0])
        for rows, cols in tiles:
            parts = [feats.tile(k, rows, cols) for k in range(len(feats.mats))]
            oriented = [(rows, cols, feats.combine(parts, rows))]
            if cols != rows:
                parts_t = [p.T.contiguous() for p in parts]
                oriented.append((cols, rows, feats.combine(parts_t, cols)))
            for r, c, block in oriented:
                rowmax_final[r] = torch.maximum(rowmax_final[r], block.amax(1))
                topk.update(r, c, block)
                # keep d' of query rows × gallery columns (the only part of D the output needs)
                r0, r1 = r.start, min(r.stop, q)
                c0, c1 = max(c.start, q), c.stop
                if r0 < r1 and c0 < c1:
                    out_qg[r0:r1, c0 - q : c1 - q] = block[: r1 - r0, c0 - c.start :]
            if bar is not None:
                bar.advance(bar.task_ids[0])


def _reciprocal_mask(ranks: torch.Tensor, chunk: int) -> torch.Tensor:
    """mask[i, m] = item i is among the first ``ranks.shape[1]`` of item ranks[i, m]. (N, k)."""
    n, k = ranks.shape
    mask = torch.empty((n, k), dtype=torch.bool, device=ranks.device)
    for s in range(0, n, chunk):
        f = ranks[s : s + chunk]
        own = torch.arange(s, s + f.shape[0], device=ranks.device)
        mask[s : s + chunk] = (ranks[f] == own[:, None, None]).any(2)
    return mask


def concat_ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenated ranges [starts[n], starts[n] + counts[n]) as one index tensor."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=starts.device)
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(total, device=starts.device) - torch.repeat_interleave(offsets, counts)
    return torch.repeat_interleave(starts, counts) + within


class _Csr:
    """A sparse (N, N) float32 matrix in row-compressed form."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> None:
        self.crow, self.col, self.val = crow, col, val

    @classmethod
    def from_rows(cls, counts: list[torch.Tensor], cols: list[torch.Tensor], vals: list) -> _Csr:
        c = torch.cat(counts)
        crow = torch.zeros(c.shape[0] + 1, dtype=torch.long, device=c.device)
        crow[1:] = torch.cumsum(c, 0)
        return cls(crow, torch.cat(cols), torch.cat(vals))

    def row_ids(self, a: int, b: int) -> torch.Tensor:
        counts = self.crow[a + 1 : b + 1] - self.crow[a:b]
        return torch.repeat_interleave(torch.arange(a, b, device=counts.device), counts)


def _build_v(
    feats: _ItemFeatures,
    ranks: torch.Tensor,
    rank_d: torch.Tensor,
    rowmax_final: torch.Tensor,
    k1: int,
    chunk: int,
) -> _Csr:
    """V: softmax of −D over the expanded k-reciprocal set of every item (sparse rows)."""
    n = feats.num_items
    k1p = min(k1 + 1, n)
    khp = min(round(k1 / 2) + 1, n)  # round() is half-to-even like np.around
    fk, fh = ranks[:, :k1p], ranks[:, :khp]
    recip_k = _reciprocal_mask(fk, chunk)
    recip_h = _reciprocal_mask(fh, chunk)
    half_sets = torch.where(recip_h, fh, -1)
    # D values of the stored top-K, sorted by column index for look-ups
    sorted_idx, order = ranks.sort(1)
    sorted_d = rank_d.gather(1, order)
    m_final = _safe_max(rowmax_final)

    counts, cols, vals = [], [], []
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        rk = recip_k[s:e]
        own_set = torch.where(rk, fk[s:e], -2)  # (B, k1p)
        cand_sets = half_sets[fk[s:e]]  # (B, k1p, khp)
        valid = cand_sets >= 0
        own_sorted = own_set.sort(1).values
        flat = cand_sets.flatten(1)
        at = torch.searchsorted(own_sorted, flat).clamp_max_(k1p - 1)
        inside = (own_sorted.gather(1, at) == flat).view_as(cand_sets) & valid
        size = valid.sum(-1).double()
        accept = rk & (inside.sum(-1).double() > (2.0 / 3.0) * size)
        expansion = torch.where(accept[..., None] & valid, cand_sets, -1).flatten(1)
        members = torch.cat([torch.where(rk, fk[s:e], -1), expansion], 1).sort(1).values
        dup = torch.zeros_like(members, dtype=torch.bool)
        dup[:, 1:] = members[:, 1:] == members[:, :-1]
        present = (members >= 0) & ~dup
        # D(i, member): from the stored top-K when there, else recomputed from the features
        look = members.clamp_min(0)
        pos = torch.searchsorted(sorted_idx[s:e], look).clamp_max_(sorted_idx.shape[1] - 1)
        hit = present & (sorted_idx[s:e].gather(1, pos) == look)
        dvals = sorted_d[s:e].gather(1, pos)
        miss = present & ~hit
        if bool(miss.any()):
            mi, mj = miss.nonzero(as_tuple=True)
            rows = mi + s
            targets = look[mi, mj]
            parts = [feats.pair_sqdist(k, rows, targets) for k in range(len(feats.mats))]
            dvals[mi, mj] = feats.combine(parts, rows) / m_final[rows]
        weights = torch.where(present, torch.exp(-dvals), torch.zeros_like(dvals))
        weights = weights / weights.sum(1, keepdim=True)
        counts.append(present.sum(1))
        cols.append(members[present])
        vals.append(weights[present])
    return _Csr.from_rows(counts, cols, vals)


def _query_expansion(v: _Csr, ranks: torch.Tensor, k2: int, max_work: int) -> _Csr:
    """V_qe(i) = mean of V over the top-k2 rows of i (sparse, in row chunks)."""
    n = ranks.shape[0]
    k2p = min(k2, n)
    src = ranks[:, :k2p]
    row_nnz = v.crow[1:] - v.crow[:-1]
    work = row_nnz[src].sum(1)
    bounds = _chunk_bounds(work, max_work)
    counts, cols, vals = [], [], []
    for a, b in bounds:
        srcs = src[a:b].reshape(-1)
        owner = torch.arange(a, b, device=src.device).repeat_interleave(k2p)
        c = row_nnz[srcs]
        pos = concat_ranges(v.crow[srcs], c)
        key = torch.repeat_interleave(owner - a, c) * n + v.col[pos]
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        summed = torch.zeros(uniq.shape[0], device=src.device).index_add_(0, inverse, v.val[pos])
        counts.append(torch.bincount(uniq // n, minlength=b - a))
        cols.append(uniq % n)
        vals.append(summed / k2p)
    return _Csr.from_rows(counts, cols, vals)


def _chunk_bounds(work: torch.Tensor, max_work: int, max_rows: int | None = None) -> list:
    """Split rows 0..len(work) into consecutive chunks whose summed work stays ≤ max_work."""
    n = work.shape[0]
    cum = torch.cumsum(work, 0).cpu()
    bounds = []
    a = 0
    while a < n:
        base = int(cum[a - 1]) if a else 0
        b = int(torch.searchsorted(cum, base + max_work, right=True))
        b = max(b, a + 1)
        if max_rows is not None:
            b = min(b, a + max_rows)
        bounds.append((a, min(b, n)))
        a = b
    return bounds


def _jaccard_into(
    v: _Csr, num_query: int, out: torch.Tensor, lambda_value: float, max_work: int
) -> None:
    """out (q, g) holds D; replace it with (1 − λ)·Jaccard + λ·D using an inverted index."""
    n = v.crow.shape[0] - 1
    q, g = num_query, n - num_query
    dev = v.col.device
    # inverted index over gallery rows: for every column, the gallery rows with V ≠ 0 there
    g_start = int(v.crow[q])
    g_col = v.col[g_start:]
    g_row = v.row_ids(q, n)
    g_val = v.val[g_start:]
    by_col = torch.sort(g_col, stable=True).indices
    inv_rows, inv_vals = g_row[by_col] - q, g_val[by_col]
    col_count = torch.bincount(g_col, minlength=n)
    col_start = torch.cumsum(col_count, 0) - col_count

    q_end = int(v.crow[q])
    q_col, q_val = v.col[:q_end], v.val[:q_end]
    q_row = v.row_ids(0, q)
    work = torch.zeros(q, dtype=torch.long, device=dev).index_add_(0, q_row, col_count[q_col])
    max_rows = max(1, (1 << 24) // max(g, 1))
    for a, b in _chunk_bounds(work, max_work, max_rows):
        lo, hi = int(v.crow[a]), int(v.crow[b])
        cols, vi, owner = q_col[lo:hi], q_val[lo:hi], q_row[lo:hi] - a
        c = col_count[cols]
        pos = concat_ranges(col_start[cols], c)
        mins = torch.minimum(torch.repeat_interleave(vi, c), inv_vals[pos])
        flat = torch.repeat_interleave(owner, c) * g + inv_rows[pos]
        overlap = torch.zeros((b - a) * g, device=dev).index_add_(0, flat, mins).view(b - a, g)
        jaccard = 1.0 - overlap / (2.0 - overlap)
        out[a:b] = jaccard * (1.0 - lambda_value) + out[a:b] * lambda_value


def rerank(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metadata: Sequence[MetadataTriple] = (),
    device: str | torch.device | None = None,
    block_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """k-reciprocal re-ranked distances, query (q, D) × gallery (g, D) → float32 array (q, g).

    ``metadata`` is a sequence of ``(query_meta (q, Dm), gallery_meta (g, Dm), weight)``: their
    row-normalised squared distances are added to the row-normalised main distance before
    re-ranking (see the module docstring for the exact definition). ``device``: ``None``/"auto"
    (CUDA when available), "cpu", "cuda", …; ``block_size``: tile edge of the distance products
    (memory ≈ a few tiles + the (q, g) output + sparse sets, never N×N).

    Agrees with the dense reference (``benchmarks/reference_rerank.py``) to float32 rounding; rank
    ties are broken by item index, like a stable sort of each row.
    """
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be ≥ 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value}")
    dev = resolve_device(device)
    timings.clear()
    clock = _Clock(dev)
    with torch.no_grad():
        feats = _ItemFeatures(query_feats, gallery_feats, metadata, dev)
        n, q = feats.num_items, feats.num_query
        g = n - q
        if q == 0 or g == 0:
            return np.zeros((q, g), dtype=np.float32)
        if block_size is None:
            block_size = 8192 if dev.type == "cuda" else 2048
        k_keep = min(n, max(2 * (k1 + 1), k2) + _TOPK_MARGIN)
        topk = _RunningTopK(n, k_keep, dev)
        rowmax_final = torch.zeros(n, device=dev)
        out = torch.empty((q, g), device=dev)
        # Small inputs and the sparse phases are many small operations: on CPU they run on one
        # thread (several threads only add synchronisation, badly so on a busy machine).
        sweep_threads = 1 if n < _SMALL else torch.get_num_threads()
        with _threads(dev, sweep_threads):
            _sweep(feats, topk, rowmax_final, out, block_size, progress)
        clock.lap("distances")

        with _threads(dev, 1):
            # D = N(d'): the same division for the stored top-K and for the output block
            m_final = _safe_max(rowmax_final)
            rank_d = topk.values / m_final[:, None]
            out /= m_final[:q, None]
            # initial ranks: by D, ties by item index (sort by index, then stable sort by value)
            by_index = topk.indices.sort(1)
            rank_d = rank_d.gather(1, by_index.indices)
            by_value = rank_d.sort(dim=1, stable=True)
            ranks = by_index.values.gather(1, by_value.indices)
            rank_d = by_value.values
            del topk, by_index, by_value
            clock.lap("ranks")

            chunk = max(1, (1 << 23) // ((k1 + 1) * (round(k1 / 2) + 1) * 8))
            v = _build_v(feats, ranks, rank_d, rowmax_final, k1, chunk)
            del feats, rank_d
            clock.lap("k-reciprocal sets")
            work = 1 << 22  # entries per sparse chunk: bounds the transient memory
            if k2 != 1:
                v = _query_expansion(v, ranks, k2, work)
            del ranks
            clock.lap("query expansion")
            _jaccard_into(v, q, out, lambda_value, work)
            clock.lap("jaccard")
        return out.cpu().numpy()


def original_distance(
    query_feats: ArrayLike,
    gallery_feats: ArrayLike,
    *,
    metadata: Sequence[MetadataTriple] = (),
    device: str | torch.device | None = None,
) -> np.ndarray:
    """D = N(d') for query rows × gallery columns, float32 (q, g): the distance re-ranking starts
    from (``rerank(..., lambda_value=1)`` returns the same), used when re-ranking is off.

    Only the q query rows are computed (against all N items, for the row maxima).
    """
    dev = resolve_device(device)
    with torch.no_grad():
        feats = _ItemFeatures(query_feats, gallery_feats, metadata, dev)
        n, q = feats.num_items, feats.num_query
        out = torch.empty((q, n - q), device=dev)
        step = max(1, (1 << 24) // max(n, 1))
        for s in range(0, q, step):
            rows = slice(s, min(s + step, q))
            parts = [
                torch.cat([feats.tile(k, rows, slice(0, q)), feats.tile(k, rows, slice(q, n))], 1)
                for k in range(len(feats.mats))
            ]
            for k, part in enumerate(parts):
                feats.rowmax[k][rows] = part.amax(1)
            dprime = feats.combine(parts, rows)
            out[rows] = (dprime / _safe_max(dprime.amax(1))[:, None])[:, q:]
        return out.cpu().numpy()
