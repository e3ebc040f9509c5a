"""Benchmark of the gallery index: build time, memory, query latency, faiss recall.

Synthetic, realistic-looking features: unit vectors (2048-d by default, ``--dim``) around
identity centres (~50 images per identity). Per size and backend (exact torch lists / faiss PQ
fast-scan lists re-scored exactly), in its own subprocess (so peak RSS is its own):

* build: neighbour lists (K = 40) + the re-ranking sets (``NeighbourGraph.prepare``), seconds
  (faiss: the PQ index, then the lists' search and the row maxima); faiss: recall of its lists
  against exact search on 200 rows;
* memory: the index in memory vs feature bytes + neighbour-list bytes; peak RSS;
* faiss: recall@100 of a raw query against exact search, and its same-identity recall (of the
  query's identity among the exact top 100, the share faiss finds);
* query latency p50/p99 of one query and of a batch of 64: plain (exact distances + top-100 in
  torch; faiss: the PQ search with its exact re-scoring) and with online re-ranking (``NeighbourGraph.rerank``);
  faiss: also with d(q, ·) from a top-L search (``--candidates``, the index's default 1000) and
  the recall@100 of that final ranking against the full-pass query on the same lists (and, up
  to 20k, against the exact lists' final ranking);
* the straightforward approach of ``vreid search`` today: a full ``rerank(q[None], gallery)``
  per query (up to 20k items, where it takes < ~2 min).

    python benchmarks/index.py [--sizes 10k,100k] [--backends auto|exact,faiss] [--dim 2048]
                               [--json out.json] [--threads N] [--reps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {
    "5k": 5_000,
    "10k": 10_000,
    "20k": 20_000,
    "30k": 30_000,
    "50k": 50_000,
    "100k": 100_000,
    "1m": 1_000_000,
}


def features(n: int, seed: int = 0, dim: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 unit vectors, ~50 per identity centre (noise ≈ the centre's norm), and
    each one's identity (n,) int64."""
    rng = np.random.default_rng(seed)
    ids = max(1, n // 50)
    centres = rng.standard_normal((ids, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    step = 50_000
    for s in range(0, n, step):
        e = min(n, s + step)
        lab = rng.integers(0, ids, e - s)
        noise = rng.standard_normal((e - s, dim), dtype=np.float32) * (1.1 / np.sqrt(dim))
        x[s:e] = centres[lab] + noise
        labels[s:e] = lab
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def same_identity_recall(
    found: np.ndarray, exact: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray
) -> float:
    """Of the same-identity items in each exact top-k row (q, k), the share ``found`` (q, ≥ k)
    holds: the recall that matters for re-id. (recall@100 also counts the ~50 places after a
    query's identity, a noise floor of nearly equidistant items only exhaustive search ranks.)"""
    hit = total = 0
    for f, e, label in zip(found, exact, query_ids, strict=True):
        mates = set(e[gallery_ids[e] == label].tolist())
        hit += len(mates & set(f.tolist()))
        total += len(mates)
    return hit / max(1, total)


def pct(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_case(size: str, backend: str, reps: int, dim: int, candidates: int) -> dict:
    import torch

    from vreid.retrieval.online import NeighbourGraph, exact_neighbours
    from vreid.retrieval.reranking import rerank
    from vreid.workflows import index as wf

    n = SIZES[size]
    x, labels = features(n + 64, seed=1, dim=dim)
    gallery, queries = x[64:], x[:64]
    out: dict = {"size": size, "backend": backend, "gallery": n, "dim": dim}
    ann = None
    t = time.perf_counter()
    if backend == "faiss":
        ann = wf.ann_index(gallery)
        out["ann_build_s"] = time.perf_counter() - t
        print(f"{size} faiss: PQ index in {out['ann_build_s']:.0f} s", file=sys.stderr, flush=True)
    idx, d, rowmax, info = wf.compute_neighbours(gallery, 40, backend=backend, index=ann)
    out["lists_s"] = time.perf_counter() - t
    out.update({k: v for k, v in info.items() if k != "backend"})
    graph = NeighbourGraph(gallery, idx, d, rowmax)
    t = time.perf_counter()
    graph.prepare(20, 6)
    out["prepare_s"] = time.perf_counter() - t
    out["build_s"] = out["lists_s"] + out["prepare_s"]
    feat_bytes = gallery.nbytes
    list_bytes = idx.nbytes + d.nbytes + rowmax.nbytes
    out["feature_MB"] = feat_bytes / 2**20
    out["lists_MB"] = list_bytes / 2**20
    print(f"{size} {backend}: built in {out['build_s']:.0f} s", file=sys.stderr, flush=True)

    gt = torch.from_numpy(gallery)
    sq = (gt * gt).sum(1)

    def plain(q: np.ndarray) -> None:
        qt = torch.from_numpy(q)
        dist = sq[None] + (qt * qt).sum(1)[:, None] - 2 * qt @ gt.T
        dist.topk(100, dim=1, largest=False)

    def timed(fn, arg, k: int) -> tuple[float, float]:
        fn(arg)  # warm-up
        times = []
        for i in range(k):
            t = time.perf_counter()
            fn(arg if arg.shape[0] == 64 else queries[i % 64 : i % 64 + 1])
            times.append(time.perf_counter() - t)
        return pct(times)

    def top100(dist: np.ndarray) -> np.ndarray:
        return np.argsort(dist, axis=1, kind="stable")[:, :100]

    out["plain_1"] = timed(plain, queries[:1], reps)
    out["plain_64"] = timed(plain, queries, max(3, reps // 10))
    out["rerank_1"] = timed(lambda q: graph.rerank(q), queries[:1], reps)
    out["rerank_64"] = timed(lambda q: graph.rerank(q), queries, 3)
    # after the first queries: the graph also holds the rank table they build
    out["index_MB"] = graph.nbytes / 2**20
    out["ratio"] = graph.nbytes / (feat_bytes + list_bytes)
    if ann is not None:  # the PQ codes (the features are the index's own)
        faiss_bytes = wf._faiss().serialize_index(ann).nbytes
        out["faiss_MB"] = faiss_bytes / 2**20
        out["ratio_with_faiss"] = (graph.nbytes + faiss_bytes) / (feat_bytes + list_bytes)
    full_pass = graph.rerank(queries)
    if ann is not None:

        def search(q: np.ndarray) -> np.ndarray:
            return wf.ann_search(ann, gallery, q, 100, wf.QUERY_SHORTLIST)[1]

        approx = search(queries)
        exact_idx, _, _ = exact_neighbours(queries, 100, others=gallery)
        out["query_recall@100"] = wf.recall_at(approx, exact_idx.numpy())
        out["query_same_id_recall@100"] = same_identity_recall(
            approx, exact_idx.numpy(), labels[:64], labels[64:]
        )
        out["faiss_1"] = timed(search, queries[:1], reps)
        out["faiss_64"] = timed(search, queries, max(3, reps // 10))
        graph.candidates = wf.top_l_search(ann, gallery, candidates)
        out["candidates"] = candidates
        out["topl_rerank_1"] = timed(lambda q: graph.rerank(q), queries[:1], reps)
        out["topl_rerank_64"] = timed(lambda q: graph.rerank(q), queries, 3)
        top_l = graph.rerank(queries)
        out["topl_recall@100_vs_full_pass"] = wf.recall_at(top100(top_l), top100(full_pass))
        graph.candidates = None
        if n <= 20_000:  # the exact lists' final ranking: the whole approximation's cost
            ei, ed, emax = exact_neighbours(gallery, 40)
            exact = NeighbourGraph(gallery, ei, ed, emax).rerank(queries)
            out["topl_recall@100_vs_exact"] = wf.recall_at(top100(top_l), top100(exact))
            out["faiss_lists_recall@100_vs_exact"] = wf.recall_at(top100(full_pass), top100(exact))
    if n <= 20_000:
        times = []
        for i in range(3):
            t = time.perf_counter()
            full = rerank(queries[i : i + 1], gallery, device="cpu")
            times.append(time.perf_counter() - t)
            if backend == "exact":
                out["max_abs_diff_vs_full"] = max(
                    out.get("max_abs_diff_vs_full", 0.0), float(np.abs(full_pass[i] - full).max())
                )
        out["full_rerank_1"] = pct(times)
    out["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["loadavg_end"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10k,100k", help=f"comma-separated of {', '.join(SIZES)}")
    ap.add_argument(
        "--backends",
        default="auto",
        help="exact,faiss or auto: both up to 20k, exact up to 200k (the 100k target is the "
        "exact backend's), faiss beyond (the 1M target)",
    )
    ap.add_argument("--dim", type=int, default=2048, help="feature dimension (resnet18: 512)")
    ap.add_argument("--candidates", type=int, default=1000, help="L of the top-L query search")
    ap.add_argument("--pq-dims", type=int, help="dimensions per PQ sub-quantiser (the index's)")
    ap.add_argument("--query-shortlist", type=int, help="a query's PQ shortlist (the index's)")
    ap.add_argument("--list-shortlist", type=int, help="the lists' PQ shortlist (the index's)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument(
        "--json", help="write the rows to this file (default: index-benchmark-<sizes>.json)"
    )
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.case:
        from vreid.workflows import index as wf

        for name, value in (
            ("PQ_DIMS", args.pq_dims),
            ("QUERY_SHORTLIST", args.query_shortlist),
            ("LIST_SHORTLIST", args.list_shortlist),
        ):
            if value:
                setattr(wf, name, value)
        size, backend = args.case.split(":")
        print(json.dumps(run_case(size, backend, args.reps, args.dim, args.candidates)))
        return
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows = []
    for size in args.sizes.split(","):
        n = SIZES[size]
        auto = ["exact", "faiss"] if n <= 20_000 else ["exact"] if n <= 200_000 else ["faiss"]
        for backend in auto if args.backends == "auto" else args.backends.split(","):
            if backend == "exact" and SIZES[size] > 200_000:
                print(f"{size} exact: skipped (all-pairs lists; use faiss)", flush=True)
                continue
            cmd = [sys.executable, __file__, "--case", f"{size}:{backend}"]
            for flag in (
                "reps",
                "dim",
                "candidates",
                "pq_dims",
                "query_shortlist",
                "list_shortlist",
                "threads",
            ):
                value = getattr(args, flag)
                if value:
                    cmd += [f"--{flag.replace('_', '-')}", str(value)]
            t = time.perf_counter()
            res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)
            if res.returncode != 0:
                print(f"{size} {backend}: failed (stderr above)", flush=True)
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["case_wall_s"] = time.perf_counter() - t
            rows.append(row)
            print(json.dumps(row), flush=True)
            path = args.json or f"index-benchmark-{args.sizes.replace(',', '-')}.json"
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as fh:  # after every case: a later failure keeps the rows
                json.dump(rows, fh, indent=1)
    hdr = (
        "| gallery | dim | lists | build s | lists recall@40 | index MB (× feat+lists) | peak MB "
        "| + faiss PQ MB (× feat+lists) | plain 1 p50/p99 ms | plain 64 | faiss 1 | faiss 64 "
        "| faiss recall@100 | faiss same-identity recall | rerank 1 p50/p99 ms "
        "| rerank 64 | top-L rerank 1 | top-L rerank 64 | top-L recall@100 | full rerank 1 "
        "| case s |"
    )
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))

    def f(v: object) -> str:
        return "" if v is None else f"{v[0]:.1f} / {v[1]:.1f}"  # type: ignore[index]

    def r3(v: object) -> str:
        return "" if v is None else f"{v:.3f}"

    def faiss_mb(r: dict) -> str:
        if "faiss_MB" not in r:
            return ""
        return f"{r['faiss_MB']:.0f} ({r['ratio_with_faiss']:.2f}×)"

    for r in rows:
        print(
            f"| {r['size']} | {r['dim']} | {r['backend']} | {r['build_s']:.1f} | "
            f"{r3(r.get('lists_recall@40'))} | "
            f"{r['index_MB']:.0f} ({r['ratio']:.2f}×) | {r['peak_rss_MB']:.0f} | {faiss_mb(r)} | "
            f"{f(r['plain_1'])} | {f(r['plain_64'])} | {f(r.get('faiss_1'))} | "
            f"{f(r.get('faiss_64'))} | {r3(r.get('query_recall@100'))} | "
            f"{r3(r.get('query_same_id_recall@100'))} | "
            f"{f(r['rerank_1'])} | {f(r['rerank_64'])} | "
            f"{f(r.get('topl_rerank_1'))} | {f(r.get('topl_rerank_64'))} | "
            f"{r3(r.get('topl_recall@100_vs_full_pass'))} | {f(r.get('full_rerank_1'))} | "
            f"{r['case_wall_s']:.0f} |"
        )
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
