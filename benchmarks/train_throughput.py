"""Training throughput (images/s) of the re-id models at 128×256, against plain torchvision ResNet-50.

One training step = forward, ReidLoss (10·triplet + CE), backward, Adam step, on a random PK batch.
Each model runs in fp32 and fp32 channels-last; on CUDA also under autocast bf16 and fp16 (with a
GradScaler), channels-last. The reference in the same run is torchvision's ``resnet50`` with its own
fc and plain cross-entropy (no re-id head, stride 2 in the last stage) in fp32.

    python benchmarks/train_throughput.py                      # CPU: a couple of minutes
    python benchmarks/train_throughput.py --device cuda --batch 64 --steps 20

The ``glamor-r18`` row is GLAMOR on a ResNet-18 trunk (the CPU demo's model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vreid.engine.losses import ReidLoss
from vreid.models import build_model

#: row name → (registry name, options)
MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "glamor": ("glamor", {}),
    "counter_glamor": ("counter_glamor", {}),
    "resnet50": ("resnet50", {}),
    "resnext101_32x8d": ("resnext101_32x8d", {}),
    "glamor-r18": ("glamor", {"backbone": "resnet18"}),
}


@dataclass
class Row:
    model: str
    mode: str
    batch: int
    images_per_s: float
    ms_per_step: float
    vs_reference: float = 0.0
    gflop_per_image: float = 0.0


def make_batch(batch: int, height: int, width: int, num_classes: int, device: torch.device):
    k = 4 if batch % 4 == 0 else 2
    labels = torch.arange(batch // k, device=device).repeat_interleave(k) % num_classes
    return torch.randn(batch, 3, height, width, device=device), labels


def time_steps(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step: the fastest of ``steps`` timed steps after ``warmup`` untimed ones.

    The fastest, not the mean: on a shared machine other jobs only ever add time.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def forward_gflop(model: nn.Module, height: int, width: int) -> float:
    """Forward GFLOP per image (convolutions and matrix products, one multiply-add = 2 FLOP)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, height, width, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def reid_step(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, mode: str
) -> Callable[[], None]:
    loss_fn = ReidLoss()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=5e-4)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode.split("+")[0])
    scaler = torch.amp.GradScaler(x.device.type, enabled=amp_dtype is torch.float16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ctx = (
            torch.autocast(x.device.type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            out = model(x)
        loss, _ = loss_fn(out.features, out.logits, labels)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def reference_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=5e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        opt.step()

    return step


def prepare(model: nn.Module, x: torch.Tensor, mode: str, device: torch.device):
    model = model.to(device).train()
    if "cl" in mode.split("+"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch", type=int, default=None, help="images per step (CPU 4, CUDA 64)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 3, CUDA 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (CPU 1, CUDA 5)")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated rows")
    parser.add_argument("--modes", default=None, help="comma-separated: fp32, cl, bf16+cl, fp16+cl")
    parser.add_argument("--num-classes", type=int, default=333, help="classifier size (AIC20: 333)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's); 1 is far faster on a machine shared with other jobs",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    on_gpu = device.type == "cuda"
    batch = args.batch or (64 if on_gpu else 4)
    steps = args.steps or (20 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    modes = (
        args.modes.split(",")
        if args.modes
        else (["fp32", "cl", "bf16+cl", "fp16+cl"] if on_gpu else ["fp32", "cl"])
    )
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model rows {unknown}; known: {', '.join(MODELS)}")
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    x0, labels = make_batch(batch, args.height, args.width, args.num_classes, device)
    where = (
        torch.cuda.get_device_name(device) if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"train-step throughput at {args.height}×{args.width}, batch {batch}, fastest of {steps} "
        f"steps after {warmup} warm-up; {where}; torch {torch.__version__}",
        flush=True,
    )

    rows: list[Row] = []
    ref_model, x = prepare(
        torchvision.models.resnet50(num_classes=args.num_classes), x0, "fp32", device
    )
    sec = time_steps(reference_step(ref_model, x, labels), warmup, steps, device)
    reference = batch / sec
    gflop = forward_gflop(ref_model, args.height, args.width)
    rows.append(
        Row("torchvision resnet50 (reference)", "fp32", batch, reference, 1000 * sec, 1.0, gflop)
    )
    print(f"  reference done: {reference:.1f} img/s", flush=True)
    del ref_model

    for name in names:
        arch, options = MODELS[name]
        for mode in modes:
            torch.manual_seed(0)
            model, x = prepare(build_model(arch, args.num_classes, **options), x0, mode, device)
            sec = time_steps(reid_step(model, x, labels, mode), warmup, steps, device)
            gflop = forward_gflop(model, args.height, args.width)
            rows.append(
                Row(name, mode, batch, batch / sec, 1000 * sec, batch / sec / reference, gflop)
            )
            print(f"  {name} {mode}: {batch / sec:.1f} img/s", flush=True)
            del model
            if on_gpu:
                torch.cuda.empty_cache()

    print()
    header = f"{'model':<34} {'mode':<8} {'GFLOP/img':>9} {'img/s':>9} {'ms/step':>9} {'vs ref':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.model:<34} {r.mode:<8} {r.gflop_per_image:>9.2f} {r.images_per_s:>9.1f} "
            f"{r.ms_per_step:>9.0f} {r.vs_reference:>6.2f}×"
        )
    print(
        "\nmodes: fp32; cl = channels-last; bf16/fp16 = autocast (fp16 with GradScaler). "
        "GFLOP/img: forward pass, counted by torch.utils.flop_counter."
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
