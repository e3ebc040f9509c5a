"""Re-ranking benchmark: time, peak memory and agreement of vreid's re-ranking with the dense reference.

For each size (queries + gallery, clustered 2048-d features: vehicle ids with ~50 images each) the
cases run one at a time, each in its own subprocess so that its peak RSS is its own:

* ``floor``     — all-pairs matrix products in 2048-row blocks with a top-21 per row: no re-ranking
                  at all, the speed of this machine right now (the floor to approach);
* ``vreid``     — ``vreid.retrieval.rerank`` (k1=20, k2=6, λ=0.3);
* ``reference`` — ``benchmarks/reference_rerank.py``, the dense formulation, only where its
                  ≈ 6 N² float32 matrices fit in the memory available now.

``max abs diff`` compares vreid's (q, g) output with the reference's; ``same top100`` is the share
of queries whose vreid top-100 list is a correct top-100 of the reference (ties within 1e-6 may
swap). Peak MB includes the Python +
torch runtime (``base MB``, measured after imports) and the input features themselves.

    python benchmarks/rerank.py                      # veri, aic20, 100k
    python benchmarks/rerank.py --sizes aic20 --threads 2 --no-reference
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {  # name: (queries, gallery)
    "small": (300, 2700),
    "veri": (1678, 11579),
    "aic20": (1052, 18290),
    "100k": (5000, 95000),
}
DIM = 2048
IMAGES_PER_ID = 50
HERE = Path(__file__).resolve().parent


def make_features(num: int, seed: int = 0) -> np.ndarray:
    """Clustered, L2-normalised float32 features (num, 2048): ids with ~50 noisy images each."""
    rng = np.random.default_rng(seed)
    ids = max(1, num // IMAGES_PER_ID)
    centres = rng.standard_normal((ids, DIM), dtype=np.float32)
    feats = np.empty((num, DIM), dtype=np.float32)
    labels = rng.integers(0, ids, num)
    step = 8192
    for s in range(0, num, step):
        noise = rng.standard_normal((min(step, num - s), DIM), dtype=np.float32)
        feats[s : s + step] = centres[labels[s : s + step]] + 1.2 * noise
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats


def same_top(got: np.ndarray, ref: np.ndarray, top: int = 100, tol: float = 1e-6) -> float:
    """Fraction of rows whose top-``top`` list from ``got`` is a correct top list of ``ref``
    (orders may differ only among distances equal within ``tol``)."""
    order = np.argsort(got, axis=1, kind="stable")[:, :top]
    along = np.take_along_axis(ref, order, axis=1)
    best = np.sort(ref, axis=1)[:, :top]
    return float((np.abs(along - best) <= tol).all(1).mean())


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it is not inherited from the
    parent across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(case: str, feats_path: str, num_query: int, out_path: str, device: str) -> None:
    """Run one case in this process and print a JSON line with seconds and peak memory."""
    import torch

    sys.path.insert(0, str(HERE))
    from reference_rerank import reference_rerank
    from vreid.retrieval.reranking import rerank

    base = peak_rss_mb()
    feats = np.load(feats_path)
    q, g = feats[:num_query], feats[num_query:]
    start = time.perf_counter()
    if case == "floor":
        x = torch.from_numpy(feats)
        with torch.no_grad():
            for s in range(0, x.shape[0], 2048):
                block = x[s : s + 2048] @ x.T
                block.topk(21, dim=1, largest=False)
        out = None
    elif case == "vreid":
        out = rerank(q, g, k1=20, k2=6, lambda_value=0.3, device=device)
    else:
        out = reference_rerank(q, g, 20, 6, 0.3)
    seconds = time.perf_counter() - start
    if out is not None:
        np.save(out_path, out)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "base_mb": base}))


def run_case(case: str, feats_path: Path, num_query: int, out_path: Path, args) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    if args.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--child", case, str(feats_path), str(num_query)]
    cmd += [str(out_path), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="veri,aic20,100k", help="comma-separated: " + ", ".join(SIZES)
    )
    parser.add_argument("--threads", type=int, default=0, help="BLAS/OpenMP threads (0: default)")
    parser.add_argument("--device", default="cpu", help="device of vreid's re-ranking")
    parser.add_argument("--no-reference", action="store_true", help="skip the dense reference")
    parser.add_argument("--no-floor", action="store_true", help="skip the matrix-product floor")
    parser.add_argument(
        "--child", nargs=4, metavar=("CASE", "FEATS", "Q", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        case, feats_path, num_query, out_path = args.child
        child(case, feats_path, int(num_query), out_path, args.device)
        return

    print(
        f"re-ranking benchmark: {os.cpu_count()} CPUs visible, threads={args.threads or 'default'}, "
        f"device={args.device}, load average {os.getloadavg()[0]:.1f}, "
        f"{mem_available_mb() / 1024:.1f} GB available"
    )
    header = f"{'size':<22} {'case':<10} {'seconds':>9} {'peak MB':>9} {'base MB':>8} {'max abs diff':>13} {'same top100':>11}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="vreid-bench-") as tmp:
        tmp_dir = Path(tmp)
        for name in args.sizes.split(","):
            q, g = SIZES[name]
            n = q + g
            label = f"{name} ({q:,}+{g:,})"
            feats_path = tmp_dir / f"{name}.npy"
            np.save(feats_path, make_features(n))
            cases = [] if args.no_floor else ["floor"]
            cases.append("vreid")
            need_mb = 6 * n * n * 4 / 2**20 + n * DIM * 4 / 2**20 + 500
            if not args.no_reference:
                cases.append("reference")
            outputs = {}
            for case in cases:
                if case == "reference" and need_mb > 0.85 * mem_available_mb():
                    print(
                        f"{label:<22} {case:<10} skipped: needs ≈ {need_mb / 1024:.0f} GB, "
                        f"{mem_available_mb() / 1024:.1f} GB available"
                    )
                    continue
                out_path = tmp_dir / f"{name}-{case}.npy"
                res = run_case(case, feats_path, q, out_path, args)
                if "error" in res:
                    print(f"{label:<22} {case:<10} failed: {res['error']}")
                    continue
                diff = ""
                if out_path.exists():
                    outputs[case] = out_path
                if case == "reference" and "vreid" in outputs:
                    a, b = np.load(outputs["vreid"]), np.load(out_path)
                    diff = f"{np.abs(a - b).max():.2e}"
                    same = same_top(a, b)
                    diff += f" {same:>8.2%}"
                print(
                    f"{label:<22} {case:<10} {res['seconds']:>9.1f} {res['peak_mb']:>9.0f} "
                    f"{res['base_mb']:>8.0f} {diff:>13}",
                    flush=True,
                )
            feats_path.unlink()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
