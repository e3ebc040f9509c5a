"""The ``vreid`` command line: a thin layer over the Python API (each command calls one function).

Errors caused by input (:class:`~vreid.errors.VreidError`) are printed on one line and exit with
status 2; ``vreid --debug …`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vreid.errors import VreidError

app = typer.Typer(
    name="vreid",
    help="Vehicle re-identification: synthetic data, cropping, GLAMOR training, re-ranking, AIC submissions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
_state = {"debug": False}

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (defaults: the paper's values)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set train.lr=1e-4 (repeatable)."),
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    _state["debug"] = debug


# ============================================================================================
# data (issue 2): vreid data info / vreid data check
data_app = typer.Typer(help="Inspect and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="auto, aic20, aic20-sim, aic21, aic21-sim, veri776, vehicleid or folder.",
    ),
]


@data_app.command("info")
def data_info(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    format: FormatOpt = "auto",
) -> None:
    """Detect the format and print ids, images, cameras, tracks and attribute coverage per split."""
    from rich.table import Table

    from vreid.datasets import load_dataset
    from vreid.datasets.inspect import summarize

    dataset = load_dataset(root, format)
    table = Table(title=f"{dataset.root} ({dataset.format})")
    for column in ("split", "ids", "images", "cameras", "tracks", "colour", "type"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for s in summarize(dataset):
        ids = f"{s.ids}" if s.id_coverage == 1 else f"{s.ids} ({s.id_coverage:.0%} labelled)"
        table.add_row(
            s.split,
            ids if s.ids else "-",
            str(s.images),
            str(s.cameras) if s.cameras else "-",
            str(s.tracks) if s.tracks else "-",
            f"{s.color_coverage:.0%}",
            f"{s.type_coverage:.0%}",
        )
    Console().print(table)


@data_app.command("check")
def data_check(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    format: FormatOpt = "auto",
    workers: Annotated[int | None, typer.Option(help="Threads (default: CPU count).")] = None,
) -> None:
    """Read the labels, then open, verify and decode every image; exit 1 if any is corrupt."""
    from vreid.datasets import load_dataset
    from vreid.datasets.inspect import check_images

    dataset = load_dataset(root, format)
    records = list(dataset)
    bad = check_images(records, workers=workers, progress=sys.stderr.isatty())
    out = Console()
    if not bad:
        out.print(f"{dataset.root} ({dataset.format}): all {len(records)} images are readable")
        return
    for item in bad:
        out.print(f"corrupt: {item.path}: {item.reason}", highlight=False, soft_wrap=True)
    out.print(f"{len(bad)} of {len(records)} images are corrupt", highlight=False)
    raise typer.Exit(1)


# ============================================================================================
# synth (issue 3): vreid synth


# ============================================================================================
# crop (issue 7): vreid crop / vreid train-detector


@app.command("crop")
def crop_command(
    src: Annotated[Path, typer.Argument(help="Dataset root (or any folder with --folder).")],
    dst: Annotated[
        Path, typer.Argument(help="Output root: new, empty, or an earlier crop output.")
    ],
    detector: Annotated[
        str | None,
        typer.Option(
            help="torchvision detector, e.g. maskrcnn_resnet50_fpn_v2, fasterrcnn_resnet50_fpn_v2, "
            "fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_mobilenet_v3_large_320_fpn "
            "(default: the checkpoint's, else crop.detector)."
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="torchvision COCO weights file or `vreid train-detector` checkpoint "
            "(default: torchvision's cache)."
        ),
    ] = None,
    margin: Annotated[
        float | None, typer.Option(help="Margin per side, fraction of the box (0.05).")
    ] = None,
    min_score: Annotated[
        float | None, typer.Option(help="Ignore detections below this confidence (0.5).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per detector call (8).")] = None,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 0,
    format: Annotated[str, typer.Option("--format", "-f", help="Dataset format.")] = "auto",
    folder: Annotated[
        bool, typer.Option("--folder", help="SRC is a plain folder of images, not a dataset.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Crop every image of a dataset to its vehicle (paper 3.2.1); DST reads back as the same dataset.

    Resumable: run the same command again to finish an interrupted run.
    """
    from vreid.config import load_config
    from vreid.preprocess import crop_dataset, crop_folder

    cfg = load_config(config, set_ or []).crop
    kwargs = {
        "detector": detector if detector is not None else cfg.detector,
        "weights": weights if weights is not None else cfg.weights,
        "margin": margin if margin is not None else cfg.margin,
        "min_score": min_score if min_score is not None else cfg.min_score,
        "device": device if device is not None else cfg.device,
        "batch_size": batch_size if batch_size is not None else cfg.batch_size,
        "workers": workers,
        "progress": sys.stderr.isatty(),
    }
    if folder:
        report = crop_folder(src, dst, **kwargs)
    else:
        report = crop_dataset(src, dst, format=format, **kwargs)
    out = Console()
    out.print(f"detector {report.detector} on {report.device}; weights: {report.weights}")
    out.print(
        f"{report.cropped} of {report.images} images cropped, {len(report.uncropped)} kept whole "
        f"(no vehicle found; listed in {report.dst / 'crop_uncropped.txt'}); "
        f"{report.skipped} finished by an earlier run; "
        f"{report.processed} processed now at {report.images_per_second:.1f} images/s",
        highlight=False,
        soft_wrap=True,
    )


@app.command("train-detector")
def train_detector_command(
    data_root: Annotated[
        Path, typer.Argument(help="Dataset with vehicle_boxes.csv (e.g. from `vreid synth`).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write.")],
    detector: Annotated[
        str, typer.Option(help="torchvision detector architecture.")
    ] = "fasterrcnn_mobilenet_v3_large_320_fpn",
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    max_images: Annotated[
        int | None, typer.Option(help="Use at most this many training images.")
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop after this many minutes and save.")
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Detector input size (shorter side); default: torchvision's."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and sampling.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Train a vehicle detector on true boxes (offline substitute for COCO weights); use the result
    with `vreid crop --weights FILE`."""
    from vreid.preprocess import train_detector

    result = train_detector(
        data_root,
        out,
        detector=detector,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        max_images=max_images,
        max_minutes=max_minutes,
        image_size=image_size,
        workers=workers,
        seed=seed,
        overwrite=overwrite,
        progress=sys.stderr.isatty(),
    )
    iou = "n/a" if result.held_out_iou is None else f"{result.held_out_iou:.3f}"
    Console().print(
        f"wrote {result.checkpoint} ({result.detector}, {result.epochs} epochs in "
        f"{result.seconds:.0f} s, last loss {result.history[-1]:.3f}); held-out mean IoU {iou}",
        highlight=False,
        soft_wrap=True,
    )


# ============================================================================================
# train / extract (issue 5): vreid train / vreid extract


# ============================================================================================
# attributes (issue 6): vreid train-attributes


# ============================================================================================
# retrieval (issue 4): vreid rank / vreid submission check


# ============================================================================================
# pipeline / demo / report (issue 8)


# ============================================================================================


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except VreidError as err:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
