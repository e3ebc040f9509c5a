"""Feature extraction speed on the CPU: ``vreid.Extractor`` against a straightforward loop.

What a user indexing a camera network runs most. The reference, in the same run, is the plain
torchvision way: for each image, open it with PIL, resize + normalise (the same torchvision ops
as vreid's test transform), run the model in eval mode on a batch of one (and, second row, on
simple batches of stacked images, decoded one after another in the calling process). The
Extractor rows batch the images, decode them in DataLoader workers overlapping the model (when
``workers > 0``), and optionally run in channels-last memory format and/or under bf16 autocast;
with onnxruntime installed an ``.onnx`` export of the same model runs too.

Accuracy is checked against the reference's (L2-normalised) features: fp32 rows must agree to
1e-5 max abs (float rounding of batched vs single-image kernels), bf16 rows to ≤ 1e-3 relative
(the features' L2 distance to the reference over their norm, per image, worst case). A row that
misses its bound is marked FAIL.

Images: synthetic JPEG files (coloured shapes, sizes like vehicle crops, 150–400 px) written to a
temporary folder; the model: a random-weights checkpoint of ``--model``/``--backbone`` at
``--size`` (the paper's GLAMOR on resnet50 at 128×256 by default). Each row is timed ``--repeat``
times, interleaved with the other rows, and its best run is kept (the machine may be shared).

    python benchmarks/extract_speed.py [--images 96] [--batch 32] [--workers 1] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.transforms import v2

from vreid.core.config import load_config
from vreid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vreid.inference.extract import Extractor, auto_workers
from vreid.models.checkpoint import (
    arch_from_config,
    build_from_arch,
    load_model,
    save_checkpoint,
)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(200, 400)), int(rng.integers(150, 300))
        img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noise = rng.normal(0, 8, size=(h, w, 3))
        arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(path)
    return paths


def make_checkpoint(path: Path, model: str, backbone: str | None, size: tuple[int, int]) -> Path:
    sets = [f"model.name={model}", f"model.image_size=[{size[0]},{size[1]}]"]
    if backbone:
        sets.append(f"model.backbone={backbone}")
    cfg = load_config(None, sets)
    arch = arch_from_config(cfg.model, 100)
    torch.manual_seed(0)
    net = build_from_arch(arch)
    for m in net.modules():  # BN statistics as after training, not the identity
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    save_checkpoint(
        path,
        {
            "model": net.state_dict(),
            "arch": arch,
            "config": cfg.model_dump(mode="json"),
            "epoch": 0,
        },
    )
    return path


def reference(
    ckpt: Path, size: tuple[int, int], batch: int
) -> Callable[[list[Path]], torch.Tensor]:
    """The straightforward loop: PIL open → torchvision resize + normalise → model (eval)."""
    model = load_model(ckpt, "cpu")
    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(size, antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
        ]
    )

    @torch.no_grad()
    def run(paths: list[Path]) -> torch.Tensor:
        out = []
        for i in range(0, len(paths), batch):
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + batch]])
            out.append(model(x))
        return F.normalize(torch.cat(out), dim=1)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="workers of the bf16 rows")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default="glamor")
    parser.add_argument("--backbone", default=None, help="trunk (default: the model's own)")
    parser.add_argument("--size", default="128,256", help="input height,width")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime row")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    assert len(size) == 2

    with tempfile.TemporaryDirectory(prefix="vreid-extract-bench-") as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        paths = make_images(folder / "images", args.images)
        ckpt = make_checkpoint(folder / "model.pt", args.model, args.backbone, size)

        rows: dict[str, tuple[str, Callable[[list[Path]], torch.Tensor]]] = {}
        rows["reference, batch 1"] = ("fp32", reference(ckpt, size, 1))
        rows[f"reference, batch {args.batch}"] = ("fp32", reference(ckpt, size, args.batch))
        w = args.workers

        def extractor(**options: object) -> Callable[[list[Path]], torch.Tensor]:
            ex = Extractor(ckpt, device="cpu", batch_size=args.batch, **options)  # type: ignore[arg-type]
            return lambda p: ex(p)

        auto = auto_workers(paths, args.batch)
        rows["Extractor fp32 channels-first, workers 0"] = (
            "fp32",
            extractor(num_workers=0, channels_last=False),
        )
        rows["Extractor fp32 channels-last, workers 0"] = ("fp32", extractor(num_workers=0))
        rows[f"Extractor fp32 default (channels-last, {auto} worker)"] = ("fp32", extractor())
        rows[f"Extractor bf16 channels-first, workers {w}"] = (
            "bf16",
            extractor(num_workers=w, amp="bf16", channels_last=False),
        )
        rows[f"Extractor bf16 channels-last, workers {w}"] = (
            "bf16",
            extractor(num_workers=w, amp="bf16"),
        )
        if not args.no_onnx:
            try:
                from vreid.workflows.export import export_onnx

                exported = export_onnx(ckpt, folder / "model.onnx", batch=8)
                onnx = exported.onnx
                print(exported.summary().splitlines()[1])
                onnx_ex = Extractor(onnx, device="cpu", batch_size=args.batch)
                rows[f"Extractor .onnx (onnxruntime), {auto} worker"] = ("fp32", onnx_ex)
            except Exception as err:  # a missing extra (or a failed export) skips the row
                print(f"(onnx row skipped: {type(err).__name__}: {str(err)[:120]})")

        # warm-up (first-call allocations, worker start-up paths) on a few images
        for _, run in rows.values():
            run(paths[: min(4, len(paths))])
        times: dict[str, float] = {name: float("inf") for name in rows}
        feats: dict[str, torch.Tensor] = {}
        for _ in range(args.repeat):
            for name, (_, run) in rows.items():
                start = time.perf_counter()
                feats[name] = run(paths)
                times[name] = min(times[name], time.perf_counter() - start)

        ref_name = "reference, batch 1"
        ref = feats[ref_name]
        ref_speed = len(paths) / times[ref_name]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"\nextraction speed: {args.images} JPEG images (200–400 × 150–300 px) → "
            f"{args.model}/{args.backbone or 'own trunk'} at {size[0]}×{size[1]}, batch "
            f"{args.batch}; CPU {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, load average "
            f"{load:.1f} at the end; torch {torch.__version__}; best of {args.repeat}\n"
        )
        header = f"{'row':<50} {'images/s':>9} {'× ref':>6} {'max abs Δ':>10} {'max rel Δ':>10}  ok"
        print(header)
        print("-" * len(header))
        for name, (precision, _) in rows.items():
            speed = len(paths) / times[name]
            diff = float((feats[name] - ref).abs().max())
            rel = float(((feats[name] - ref).norm(dim=1) / ref.norm(dim=1)).max())
            ok = diff <= 1e-5 if precision == "fp32" else rel <= 1e-3
            print(
                f"{name:<50} {speed:>9.1f} {speed / ref_speed:>6.2f} {diff:>10.2e} {rel:>10.2e}"
                f"  {'ok' if ok else 'FAIL'}"
            )


if __name__ == "__main__":
    main()
