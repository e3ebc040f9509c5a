"""Speed of the synthetic-data generator (images/s at 256×256) against a straightforward reference.

Rows: the reference renderer (antialiased background resampling from full resolution, Gaussian
blur filter, float colour arithmetic, fresh noise per image) in one process; our renderer in one
process; our renderer in a process pool. Wall time includes planning, background rendering,
JPEG encoding and writing; CPU time adds up this process and its workers (on a shared machine
the CPU rate says what an idle machine would do).

    python benchmarks/synth_speed.py [--ids 40] [--cameras 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from vreid.synth.generate import plan_dataset, render_tasks


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def run(ids: int, cameras: int, workers: int, size: tuple[int, int]) -> list[dict]:
    rows = []
    variants = [("reference (1 process)", 1, True), ("vreid (1 process)", 1, False)]
    variants.append((f"vreid ({workers} processes)", workers, False))
    for name, n_workers, reference in variants:
        with tempfile.TemporaryDirectory() as tmp:
            wall0, cpu0 = time.perf_counter(), _cpu()
            plan = plan_dataset(Path(tmp), preset="demo", ids=ids, cameras=cameras, seed=0)
            stats: dict[str, float] = {}
            render_tasks(plan, size, workers=n_workers, reference=reference, stats=stats)
            wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
            if n_workers > 1:  # the workers' CPU time (they are not our direct children)
                cpu += stats["render_cpu_seconds"]
        n = len(plan.tasks)
        rows.append(dict(name=name, images=n, wall=wall, cpu=cpu, rate=n / wall, cpu_rate=n / cpu))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ids", type=int, default=40, help="real identities (demo preset otherwise)")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"))
    args = ap.parse_args()
    rows = run(args.ids, args.cameras, args.workers, tuple(args.size))
    base = rows[0]["rate"]
    print(f"synthetic data generation, {tuple(args.size)} images, {os.cpu_count()} CPUs")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (others share this machine)")
    head = f"{'variant':<24}{'images':>8}{'wall s':>9}{'images/s':>10}{'img/CPU-s':>11}{'speed-up':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['name']:<24}{r['images']:>8}{r['wall']:>9.1f}{r['rate']:>10.1f}"
            f"{r['cpu_rate']:>11.1f}{r['rate'] / base:>9.1f}x"
        )


if __name__ == "__main__":
    main()
