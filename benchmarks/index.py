"""Benchmark of the gallery index: build time, memory, query latency, faiss recall.

Synthetic, realistic-looking features: 2048-d unit vectors around identity centres (~50 images
per identity). Per size and backend (exact torch lists / faiss HNSW lists), in its own subprocess
(so peak RSS is its own):

* build: neighbour lists (K = 40) + the re-ranking sets (``NeighbourGraph.prepare``), seconds;
  faiss: recall@100 of its lists against exact search on 200 rows;
* memory: the index in memory vs feature bytes + neighbour-list bytes; peak RSS;
* query latency p50/p99 of one query and of a batch of 64: plain (exact distances + top-100 in
  torch; faiss: the HNSW search itself) and with online re-ranking (``NeighbourGraph.rerank``);
* the straightforward approach of ``vreid search`` today: a full ``rerank(q[None], gallery)``
  per query (run where it takes < ~2 min).

    python benchmarks/index.py [--sizes 10k,100k] [--backends exact,faiss] [--threads N]
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

SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
DIM = 2048


def features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = max(1, n // 50)
    centres = rng.standard_normal((ids, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, DIM), dtype=np.float32)
    step = 50_000
    for s in range(0, n, step):
        e = min(n, s + step)
        lab = rng.integers(0, ids, e - s)
        noise = rng.standard_normal((e - s, DIM), dtype=np.float32) * (1.1 / np.sqrt(DIM))
        x[s:e] = centres[lab] + noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def pct(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_case(size: str, backend: str, reps: int) -> dict:
    import torch

    from vreid.retrieval.online import NeighbourGraph, exact_neighbours
    from vreid.retrieval.reranking import rerank
    from vreid.workflows.index import compute_neighbours

    n = SIZES[size]
    x = features(n + 64, seed=1)
    gallery, queries = x[64:], x[:64]
    out: dict = {"size": size, "backend": backend, "gallery": n}
    t = time.perf_counter()
    idx, d, rowmax, info = compute_neighbours(gallery, 40, backend=backend)
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
    out["index_MB"] = graph.nbytes / 2**20
    out["ratio"] = graph.nbytes / (feat_bytes + list_bytes)

    gt = torch.from_numpy(gallery)
    sq = (gt * gt).sum(1)

    def plain(q: np.ndarray) -> None:
        qt = torch.from_numpy(q)
        dist = sq[None] + (qt * qt).sum(1)[:, None] - 2 * qt @ gt.T
        dist.topk(100, dim=1, largest=False)

    faiss_index = None
    if backend == "faiss":
        import faiss

        faiss_index = faiss.IndexHNSWFlat(DIM, 32)
        faiss_index.hnsw.efConstruction = 80
        t = time.perf_counter()
        faiss_index.add(gallery)
        out["faiss_add_s"] = time.perf_counter() - t
        faiss_index.hnsw.efSearch = 256
        _, approx = faiss_index.search(queries, 100)
        exact_idx, _, _ = exact_neighbours(queries, 100, others=gallery)
        hits = [len(set(a) & set(e)) for a, e in zip(approx, exact_idx.numpy(), strict=True)]
        out["query_recall@100"] = float(np.sum(hits) / (100 * len(queries)))

    def timed(fn, arg, k: int) -> tuple[float, float]:
        fn(arg)  # warm-up
        times = []
        for i in range(k):
            t = time.perf_counter()
            fn(arg if arg.shape[0] == 64 else queries[i % 64 : i % 64 + 1])
            times.append(time.perf_counter() - t)
        return pct(times)

    out["plain_1"] = timed(plain, queries[:1], reps)
    out["plain_64"] = timed(plain, queries, max(3, reps // 10))
    if faiss_index is not None:
        out["faiss_1"] = timed(lambda q: faiss_index.search(q, 100), queries[:1], reps)
        out["faiss_64"] = timed(lambda q: faiss_index.search(q, 100), queries, max(3, reps // 10))
    out["rerank_1"] = timed(lambda q: graph.rerank(q), queries[:1], reps)
    out["rerank_64"] = timed(lambda q: graph.rerank(q), queries, 3)
    if n <= 20_000:
        times = []
        for i in range(3):
            t = time.perf_counter()
            full = rerank(queries[i : i + 1], gallery, device="cpu")
            times.append(time.perf_counter() - t)
            if backend == "exact":
                online = graph.rerank(queries[i : i + 1])
                out["max_abs_diff_vs_full"] = max(
                    out.get("max_abs_diff_vs_full", 0.0), float(np.abs(online - full).max())
                )
        out["full_rerank_1"] = pct(times)
    out["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10k,100k")
    ap.add_argument("--backends", default="exact,faiss")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.case:
        size, backend = args.case.split(":")
        print(json.dumps(run_case(size, backend, args.reps)))
        return
    rows = []
    for size in args.sizes.split(","):
        for backend in args.backends.split(","):
            if backend == "exact" and SIZES[size] > 200_000:
                print(f"{size} exact: skipped (all-pairs lists; use faiss)", flush=True)
                continue
            cmd = [
                sys.executable,
                __file__,
                "--case",
                f"{size}:{backend}",
                "--reps",
                str(args.reps),
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if res.returncode != 0:
                print(f"{size} {backend}: failed\n{res.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    hdr = (
        "| gallery | lists | build s | recall@100 lists | index MB (× feat+lists) | peak MB "
        "| plain 1 p50/p99 ms | plain 64 | faiss 1 | faiss 64 | rerank 1 p50/p99 ms "
        "| rerank 64 | full rerank 1 |"
    )
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))

    def f(v: object) -> str:
        return "" if v is None else f"{v[0]:.1f} / {v[1]:.1f}"  # type: ignore[index]

    for r in rows:
        print(
            f"| {r['size']} | {r['backend']} | {r['build_s']:.1f} | "
            f"{format(r['recall@100'], '.3f') if 'recall@100' in r else ''} | "
            f"{r['index_MB']:.0f} ({r['ratio']:.2f}×) | {r['peak_rss_MB']:.0f} | "
            f"{f(r['plain_1'])} | {f(r['plain_64'])} | {f(r.get('faiss_1'))} | "
            f"{f(r.get('faiss_64'))} | {f(r['rerank_1'])} | {f(r['rerank_64'])} | "
            f"{f(r.get('full_rerank_1'))} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
