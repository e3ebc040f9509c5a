"""Every CUDA path of vreid in one run, with throughput numbers: one table, one JSON file.

Meant for a GPU lent for ~15 minutes (sizes chosen so the full run fits ``--budget-minutes``,
default 8, on one H200); ``--smoke`` runs every code path at toy size on the CPU in well under a
minute, so that the script cannot rot between GPU loans (``tests/test_device_check.py``).

    python benchmarks/device_check.py --out benchmarks/results/device_check.json   # on the GPU
    python benchmarks/device_check.py --smoke --out /tmp/device_check.json          # CPU, toy size

Checks (each one row; a failing check is recorded as ``failed`` and the others still run; the
exit code is 1 if any failed; checks that need CUDA or several GPUs are ``skipped`` with the
reason):

1. ``rerank_equal``   — re-ranking on CUDA equals the CPU result and the dense reference
                        (max abs diff, same top-k); smoke: CPU against the dense reference.
2. ``amp_train``      — bf16 and fp16 (CUDA only) re-id training through the Trainer
                        (``vreid.engine.reid.train``): finite loss.
3. ``checkpoint``     — save on GPU, resume on CPU, resume on GPU; smoke: save/resume on the CPU
                        and the resumed run must end bit-identical to an uninterrupted one.
4. ``torchrun``       — ``torchrun --nproc_per_node=N -m vreid.workflows.cli train`` (nccl for the N
                        GPUs present; smoke: 1 CPU process, where the engine starts no group).
5. ``train_throughput`` — images/s of GLAMOR, Counter GLAMOR, ResNet-50: fp32, bf16 autocast,
                        channels-last, torch.compile, next to a plain torchvision ResNet-50 step,
                        and the training data loader's images/s alone.
6. ``extract_rerank_speed`` — Extractor images/s fp32 vs bf16; re-ranking seconds at AIC20 size,
                        100k (and 1M with ``--rerank-sizes aic20,100k,1m``).
7. ``short_training`` — GLAMOR on ``aic20-scale`` synthetic data for ``--train-minutes``, with
                        the mAP it reaches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RERANK_SIZES = {  # name: (queries, gallery)
    "toy": (50, 200),
    "small": (300, 2700),
    "aic20": (1052, 18290),
    "100k": (5000, 95000),
    "1m": (10000, 990000),
}


class Context:
    """Settings and shared, lazily made inputs (synthetic data, a trained checkpoint)."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.cuda = torch.cuda.is_available() and not args.cpu
        self.device = "cuda" if self.cuda else "cpu"
        self.gpus = torch.cuda.device_count() if self.cuda else 0
        self.smoke = args.smoke
        self.started = time.perf_counter()
        self._data: dict[str, Path] = {}
        self._checkpoint: Path | None = None

    def minutes_left(self) -> float:
        return self.args.budget_minutes - (time.perf_counter() - self.started) / 60

    def synth(self, preset: str, ids: int | None = None) -> Path:
        """The ``real/`` root of a generated synthetic dataset (made once per preset/ids)."""
        key = f"{preset}-{ids}"
        if key not in self._data:
            from vreid.synth import generate

            out = self.work / f"synth-{key}"
            workers = 1 if self.smoke else max(1, (os.cpu_count() or 2) - 1)
            generate(out, preset=preset, ids=ids, seed=0, workers=workers, progress=False)
            self._data[key] = out / "real"
        return self._data[key]

    def config(self, *overrides: str, device: str | None = None) -> Any:
        """A training config: the ``tiny`` preset in smoke runs, the paper's defaults otherwise
        (from scratch: the GPU machine has no network for ImageNet weights)."""
        from vreid.core.config import load_config

        base: list[str] = [
            f"runtime.device={device or self.device}",
            "model.pretrained=null",
            "train.eval_every=0",
            f"train.num_workers={0 if self.smoke else self.args.workers}",
        ]
        if self.smoke:
            return load_config("tiny", [*base, *overrides])
        base += ["train.max_iters_per_epoch=4", "train.epochs=1"]
        return load_config(None, [*base, *overrides])

    def small_data(self) -> Path:
        return self.synth("tiny") if self.smoke else self.synth("demo")

    def checkpoint(self) -> Path:
        """A ``vreid train`` checkpoint of the configured model (a few iterations)."""
        if self._checkpoint is None:
            from vreid.engine.reid import train

            cfg = self.config(f"data.root={self.small_data()}")
            res = train(cfg, self.work / "ckpt-run", progress=False)
            self._checkpoint = res.last_checkpoint
        return self._checkpoint


def _finite_loss(history: list[dict[str, Any]]) -> float:
    loss = float(history[-1]["loss"])
    if not math.isfinite(loss):
        raise RuntimeError(f"loss is {loss}")
    return loss


def _sizes(spec: str) -> list[tuple[str, int, int]]:
    out = []
    for name in spec.split(","):
        if name in RERANK_SIZES:
            out.append((name, *RERANK_SIZES[name]))
        else:  # "Q+G"
            q, g = name.split("+")
            out.append((name, int(q), int(g)))
    return out


# ---------------------------------------------------------------------------------------------
# the checks: each returns (status, numbers, note)


def check_rerank_equal(ctx: Context) -> tuple[str, dict, str]:
    """Re-ranking on CUDA = on the CPU = the dense reference (max abs diff, same top-k)."""
    from reference_rerank import reference_rerank
    from rerank import make_features, same_top
    from vreid.retrieval.reranking import rerank

    _, q, g = _sizes(ctx.args.equal_size)[0]
    feats = make_features(q + g)
    qf, gf = feats[:q], feats[q:]
    top = min(100, g)
    nums: dict[str, Any] = {"size": f"{q}+{g}", "top_k": top}
    t = time.perf_counter()
    cpu = rerank(qf, gf, k1=20, k2=6, lambda_value=0.3, device="cpu")
    nums["cpu_s"] = time.perf_counter() - t
    if q + g <= ctx.args.reference_max:
        t = time.perf_counter()
        ref = reference_rerank(qf, gf, 20, 6, 0.3)
        nums["reference_s"] = time.perf_counter() - t
        nums["cpu_vs_reference_max_abs_diff"] = float(np.abs(cpu - ref).max())
        nums["cpu_vs_reference_same_top"] = same_top(cpu, ref, top)
    problems = []
    if nums.get("cpu_vs_reference_same_top", 1.0) < 1.0:
        problems.append("CPU top-k differs from the reference")
    if not ctx.cuda:
        note = "CUDA part skipped: no GPU; CPU checked against the dense reference"
        return ("failed" if problems else "ok"), nums, "; ".join([*problems, note])
    t = time.perf_counter()
    gpu = rerank(qf, gf, k1=20, k2=6, lambda_value=0.3, device="cuda")
    torch.cuda.synchronize()
    nums["cuda_s"] = time.perf_counter() - t
    nums["cuda_vs_cpu_max_abs_diff"] = float(np.abs(gpu - cpu).max())
    nums["cuda_vs_cpu_same_top"] = same_top(gpu, cpu, top)
    if nums["cuda_vs_cpu_same_top"] < 1.0:
        problems.append("CUDA top-k differs from the CPU's")
    if nums["cuda_vs_cpu_max_abs_diff"] > 1e-4:
        problems.append("CUDA result differs from the CPU's by more than 1e-4")
    return ("failed" if problems else "ok"), nums, "; ".join(problems)


def check_amp_train(ctx: Context) -> tuple[str, dict, str]:
    """bf16 and fp16 re-id training steps through the Trainer end with a finite loss."""
    from vreid.engine.reid import train

    root = ctx.small_data()
    nums: dict[str, Any] = {}
    notes = []
    for amp in ("bf16", "fp16"):
        if amp == "fp16" and not ctx.cuda:
            notes.append("fp16 skipped: autocast fp16 + GradScaler is CUDA-only")
            continue
        cfg = ctx.config(f"data.root={root}", f"train.amp={amp}")
        t = time.perf_counter()
        res = train(cfg, ctx.work / f"amp-{amp}", progress=False)
        nums[f"{amp}_loss"] = _finite_loss(res.history)
        nums[f"{amp}_images_per_s"] = res.history[-1].get("images_per_s")
        nums[f"{amp}_s"] = time.perf_counter() - t
    return "ok", nums, "; ".join(notes)


def _max_diff(a: Path, b: Path) -> float:
    from vreid.models.checkpoint import load_checkpoint

    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if sa[k].numel())


def check_checkpoint(ctx: Context) -> tuple[str, dict, str]:
    """Save/resume across devices; on the CPU the resumed run must be bit-identical."""
    from vreid.engine.reid import train

    root = ctx.small_data()
    one = ["train.max_iters_per_epoch=1", f"data.root={root}"]
    epochs = 3 if ctx.cuda else 2
    straight = train(
        ctx.config(*one, f"train.epochs={epochs}"), ctx.work / "ckpt-straight", progress=False
    )
    run = ctx.work / "ckpt-resumed"
    devices = [ctx.device, "cpu", ctx.device][:epochs] if ctx.cuda else ["cpu", "cpu"]
    res = None
    for epoch, dev in enumerate(devices, start=1):
        cfg = ctx.config(*one, f"train.epochs={epoch}", device=dev)
        res = train(cfg, run, resume=epoch > 1, progress=False)
        _finite_loss(res.history)
    assert res is not None
    diff = _max_diff(straight.last_checkpoint, res.last_checkpoint)
    nums = {"devices": "→".join(devices), "max_abs_diff_vs_uninterrupted": diff}
    if ctx.cuda:
        return "ok", nums, "across devices the weights agree to rounding only (diff reported)"
    if diff != 0.0:
        return "failed", nums, "resumed CPU run is not bit-identical to the uninterrupted one"
    return "ok", nums, "GPU save/CPU resume skipped: no GPU; CPU resume bit-identical"


def check_torchrun(ctx: Context) -> tuple[str, dict, str]:
    """``torchrun --nproc_per_node=N -m vreid.workflows.cli train`` for one short epoch."""
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        return "skipped", {}, "torch.distributed.run (torchrun) is unavailable"
    nproc = ctx.gpus if ctx.cuda else ctx.args.cpu_nproc
    if ctx.cuda and nproc < 2:
        note = (
            "1 GPU: torchrun with 1 process (the engine starts no process group); nccl needs >1 GPU"
        )
    elif ctx.cuda:
        note = f"nccl on {nproc} GPUs"
    else:
        note = (
            f"CPU, {nproc} process(es); the engine starts a gloo group only when WORLD_SIZE > 1"
            " (tests/training covers 2-process gloo)"
        )
    cfg_args = ["-c", "tiny"] if ctx.smoke else []
    sets = [
        f"data.root={ctx.small_data()}",
        f"runtime.device={ctx.device}",
        "model.pretrained=null",
        "train.eval_every=0",
        "train.epochs=1",
        "train.max_iters_per_epoch=2",
        f"train.num_workers={0 if ctx.smoke else ctx.args.workers}",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", "-m", "vreid.workflows.cli", "train"]
    cmd += ["--out", str(ctx.work / "torchrun"), "-q", *cfg_args]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    nums = {"nproc": nproc, "returncode": proc.returncode}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-3:]
        return "failed", nums, " | ".join(tail)
    if not (ctx.work / "torchrun" / "checkpoints" / "last.pt").exists():
        return "failed", nums, "no last.pt written"
    return "ok", nums, note


def check_train_throughput(ctx: Context) -> tuple[str, dict, str]:
    """Model step images/s per mode against torchvision ResNet-50, and the data loader alone."""
    import torchvision
    from torch.utils.data import DataLoader

    from train_throughput import make_batch, prepare, reference_step, reid_step, time_steps
    from vreid.data import load_dataset
    from vreid.data.image_datasets import ReidImageDataset
    from vreid.data.transforms import build_transforms
    from vreid.models import build_model

    a = ctx.args
    dev = torch.device(ctx.device)
    h, w = (32, 64) if ctx.smoke else (128, 256)
    batch, steps, warm = (4, 1, 0) if ctx.smoke else (a.batch, a.steps, 3)
    options = {"backbone": "resnet18"} if ctx.smoke else {}
    classes = 333
    torch.manual_seed(0)
    x0, labels = make_batch(batch, h, w, classes, dev)
    nums: dict[str, Any] = {"image_size": f"{h}x{w}", "batch": batch}
    notes = []
    ref_model, x = prepare(torchvision.models.resnet50(num_classes=classes), x0, "fp32", dev)
    sec = time_steps(reference_step(ref_model, x, labels), warm, steps, dev)
    nums["torchvision_resnet50_fp32"] = batch / sec
    del ref_model
    modes = ["fp32", "bf16", "cl", "bf16+cl", "compile"]
    if ctx.cuda:
        modes.insert(2, "fp16")
    if ctx.smoke:
        # bf16+cl runs both the autocast and the channels-last paths; the rest only add time
        modes = ["fp32", "bf16+cl"] + (["compile"] if a.smoke_compile else [])
        if not a.smoke_compile:
            notes.append("compile skipped in smoke (minutes of CPU compilation); --smoke-compile")
    for name in ("glamor", "counter_glamor", "resnet50"):
        for mode in modes:
            torch.manual_seed(0)
            opts = dict(options) if name != "resnet50" else {}
            if name == "resnet50" and ctx.smoke:
                opts = {"backbone": "resnet18"}
            model, x = prepare(build_model(name, classes, **opts), x0, mode, dev)
            if mode == "compile":
                if name not in a.compile_models.split(","):
                    continue
                model = torch.compile(model)
            sec = time_steps(reid_step(model, x, labels, mode), warm, steps, dev)
            nums[f"{name}_{mode}"] = batch / sec
            del model
            if ctx.cuda:
                torch.cuda.empty_cache()
    # the data loader alone: decode + train augmentation of the synthetic training split
    data = load_dataset(ctx.small_data(), "aic20")
    records = data.splits["train"]
    ds = ReidImageDataset(records, build_transforms((h, w), train=True))
    workers = 0 if ctx.smoke else a.workers
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    n, t = 0, time.perf_counter()
    limit = 3 if ctx.smoke else 40
    for i, (images, *_rest) in enumerate(loader):
        n += images.shape[0]
        if i + 1 >= limit:
            break
    nums[f"loader_{workers}workers"] = n / (time.perf_counter() - t)
    model_rate = nums.get("glamor_bf16+cl") or nums["glamor_fp32"]
    nums["loader_vs_glamor_step"] = nums[f"loader_{workers}workers"] / model_rate
    return "ok", nums, "; ".join(notes)


def check_extract_rerank_speed(ctx: Context) -> tuple[str, dict, str]:
    """Extractor images/s fp32 vs bf16; re-ranking seconds at AIC20 / 100k / (1M) size."""
    from rerank import make_features
    from vreid.data import load_dataset
    from vreid.inference.extract import Extractor
    from vreid.retrieval.reranking import rerank

    ckpt = ctx.checkpoint()
    data = load_dataset(ctx.small_data(), "aic20")
    paths = [r.path for r in data.splits["train"]]
    paths = paths[: (16 if ctx.smoke else 2048)]
    nums: dict[str, Any] = {"images": len(paths)}
    workers = 0 if ctx.smoke else ctx.args.workers
    for amp in ("off", "bf16"):
        ex = Extractor(
            ckpt,
            device=ctx.device,
            batch_size=8 if ctx.smoke else 256,
            amp=amp,
            num_workers=workers,
        )
        ex(paths[: min(len(paths), 8)])  # warm-up
        t = time.perf_counter()
        ex(paths)
        nums[f"extract_{amp}_images_per_s"] = len(paths) / (time.perf_counter() - t)
    notes = []
    for name, q, g in _sizes(ctx.args.rerank_sizes):
        if not ctx.smoke and ctx.minutes_left() < 1.0:
            notes.append(f"rerank {name} skipped: budget spent")
            continue
        feats = make_features(q + g)
        t = time.perf_counter()
        rerank(feats[:q], feats[q:], device=ctx.device)
        if ctx.cuda:
            torch.cuda.synchronize()
        nums[f"rerank_{name}_s"] = time.perf_counter() - t
        del feats
    return "ok", nums, "; ".join(notes)


def check_short_training(ctx: Context) -> tuple[str, dict, str]:
    """GLAMOR on synthetic data for a fixed time; the mAP it reaches on the query/gallery."""
    from vreid.data import load_dataset
    from vreid.engine.evaluation import evaluate_model
    from vreid.engine.reid import train
    from vreid.engine.trainer import TimeBudgetHook
    from vreid.models.checkpoint import load_model

    a = ctx.args
    if ctx.smoke:
        root, minutes = ctx.synth("tiny"), 0.0
        sets = [f"data.root={root}", "train.epochs=1", "train.max_iters_per_epoch=3"]
    else:
        root = ctx.synth("aic20-scale", a.synth_ids)
        minutes = min(a.train_minutes, max(0.5, ctx.minutes_left() - 1.0))
        sets = [f"data.root={root}", "train.epochs=1000", "train.max_iters_per_epoch=null"]
        if a.train_amp != "off":
            sets.append(f"train.amp={a.train_amp}")
    cfg = ctx.config("model.name=glamor", *sets)
    hooks = [TimeBudgetHook(time.perf_counter() + 60 * minutes)] if minutes else []
    t = time.perf_counter()
    res = train(cfg, ctx.work / "short", progress=False, hooks=hooks)
    train_s = time.perf_counter() - t
    _finite_loss(res.history)
    data = load_dataset(root, "aic20")
    model = load_model(res.last_checkpoint, ctx.device)
    metrics = evaluate_model(
        model,
        data.splits["query"],
        data.splits["gallery"],
        image_size=tuple(cfg.model.image_size),
        device=torch.device(ctx.device),
        batch_size=cfg.train.batch_size_eval,
        protocol=cfg.retrieval.protocol,
    )
    iters = sum(int(h.get("iterations", 0)) for h in res.history)
    nums = {
        "data": f"{root.parent.name}: {len(data.splits['train'])} train images",
        "train_s": train_s,
        "iterations": iters,
        "epochs": res.epochs,
        "loss": float(res.history[-1]["loss"]),
        "mAP": float(metrics["mAP"]),
        "rank1": float(metrics.get("rank1", float("nan"))),
    }
    return "ok", nums, "toy size: the mAP means nothing" if ctx.smoke else ""


CHECKS: list[tuple[str, Callable[[Context], tuple[str, dict, str]]]] = [
    ("rerank_equal", check_rerank_equal),
    ("amp_train", check_amp_train),
    ("checkpoint", check_checkpoint),
    ("torchrun", check_torchrun),
    ("train_throughput", check_train_throughput),
    ("extract_rerank_speed", check_extract_rerank_speed),
    ("short_training", check_short_training),
]


def run_check(ctx: Context, name: str, fn: Callable) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        status, numbers, note = fn(ctx)
    except Exception as exc:  # one failing check must not stop the others
        status, numbers = "failed", {}
        note = f"{type(exc).__name__}: {exc}".strip()[:500]
        traceback.print_exc()
    return {
        "name": name,
        "status": status,
        "numbers": numbers,
        "seconds": round(time.perf_counter() - t, 2),
        "note": note,
    }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'check':<22} {'status':<8} {'s':>7}  numbers"
    print(header)
    print("-" * 100)
    for r in rows:
        nums = ", ".join(f"{k}={_fmt(v)}" for k, v in r["numbers"].items())
        print(f"{r['name']:<22} {r['status']:<8} {r['seconds']:>7.1f}  {nums}")
        if r["note"]:
            print(f"{'':<40}note: {r['note']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "device_check.json")
    parser.add_argument("--smoke", action="store_true", help="every path at toy size on the CPU")
    parser.add_argument("--cpu", action="store_true", help="use the CPU even if CUDA is present")
    parser.add_argument("--only", default="", help="comma-separated check names (default: all)")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="whole-run budget")
    parser.add_argument("--train-minutes", type=float, default=3.0, help="check 7's training time")
    parser.add_argument("--train-amp", default="bf16", help="check 7's train.amp (off/bf16/fp16)")
    parser.add_argument(
        "--synth-ids",
        type=int,
        default=None,
        help="real identities of check 7's aic20-scale data (default: the preset's 666)",
    )
    parser.add_argument("--equal-size", default="small", help="check 1's size (name or Q+G)")
    parser.add_argument(
        "--reference-max", type=int, default=3000, help="largest N for the dense reference"
    )
    parser.add_argument("--rerank-sizes", default="aic20,100k", help="check 6 (add 1m if time)")
    parser.add_argument("--batch", type=int, default=64, help="check 5's batch on CUDA")
    parser.add_argument("--steps", type=int, default=10, help="check 5's timed steps on CUDA")
    parser.add_argument("--workers", type=int, default=8, help="data loader workers (not smoke)")
    parser.add_argument("--cpu-nproc", type=int, default=1, help="torchrun processes on the CPU")
    parser.add_argument(
        "--compile-models", default="glamor", help="models timed under torch.compile (check 5)"
    )
    parser.add_argument("--smoke-compile", action="store_true", help="include compile in smoke")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cpu = True
        args.equal_size = "toy"
        args.rerank_sizes = "toy"
        torch.set_num_threads(min(2, torch.get_num_threads()))

    wanted = [n for n in args.only.split(",") if n]
    unknown = [n for n in wanted if n not in dict(CHECKS)]
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {', '.join(n for n, _ in CHECKS)}")
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vreid-device-check-"))
    try:
        ctx = Context(args, work)
        where = torch.cuda.get_device_name(0) if ctx.cuda else f"CPU ({os.cpu_count()} cores)"
        print(f"device check on {where}; torch {torch.__version__}; smoke={args.smoke}", flush=True)
        rows = []
        for name, fn in CHECKS:
            if wanted and name not in wanted:
                continue
            row = run_check(ctx, name, fn)
            print(f"  {name}: {row['status']} ({row['seconds']:.1f} s)", flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - start
    print()
    print_table(rows)
    print(f"\ntotal {total:.1f} s")
    report = {
        "device": where,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "smoke": args.smoke,
        "total_seconds": round(total, 1),
        "load_average": os.getloadavg()[0],
        "checks": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
