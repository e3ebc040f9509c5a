"""The ``vreid`` command line: a thin layer over the Python API (each command calls one function).

Errors caused by input (:class:`~vreid.core.errors.VreidError`) are printed on one line and exit with
status 2; ``vreid --debug …`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from vreid.core.errors import VreidError

if TYPE_CHECKING:
    from vreid.core.config import Config

app = typer.Typer(
    name="vreid",
    help="Vehicle re-identification: synthetic data, cropping, GLAMOR training, re-ranking, AIC submissions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    rich_markup_mode=None,
)
console = Console(stderr=True)
_state = {"debug": False}

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE|PRESET",
        help="YAML config file or built-in preset (vreid config list); default: the paper's values.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config key: --set train.lr=1e-4 (repeatable).",
    ),
]
CandidatesOpt = Annotated[
    int | None,
    typer.Option(
        "--candidates",
        min=0,
        help="faiss indexes: d(query, ·) from a top-L search of this many candidates "
        "(default 1000; 0: a full pass over the gallery).",
    ),
]


def _version(value: bool) -> None:
    if value:
        from vreid import __version__

        typer.echo(f"vreid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _state["debug"] = debug


def _config(config: str | None, set_: list[str] | None, **flags: Any) -> Config:
    """The run's settings: the config file or preset, then the command's flags (each a shorthand
    for the config key it names, ``data__root`` → ``data.root``; ``None`` = not given), then
    ``--set``. Every command reads its settings through here, so defaults live only in the config."""
    from vreid.core.config import load_config

    values = {k.replace("__", "."): v for k, v in flags.items()}
    return load_config(config, set_ or [], values=values)


# ============================================================================================
# data (issue 2): vreid data info / vreid data check
from vreid.data.records import ReidDataset  # noqa: E402  (light: no torch)

data_app = typer.Typer(help="Inspect and check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="data.format: auto, aic20, aic20-sim, aic21, aic21-sim, veri776, vehicleid or folder.",
    ),
]
TestSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--test-size", help="data.vehicleid_test_size: VehicleID test list 800, 1600, 2400."
    ),
]
DrawOpt = Annotated[
    int | None, typer.Option("--draw", help="data.vehicleid_draw: VehicleID gallery draw 0-9.")
]
CsvOpt = Annotated[
    Path | None, typer.Option("--csv", help="data.folder_csv: folder layout's per-image label CSV.")
]

FollowLinksOpt = Annotated[
    bool | None,
    typer.Option(
        "--follow-links/--no-follow-links",
        help="data.follow_links: read images reached through symbolic links that leave the root.",
    ),
]


def _dataset_for_cli(
    root: Path,
    format: str | None,
    test_size: int | None,
    draw: int | None,
    csv: Path | None,
    config: str | None,
    set_: list[str] | None,
    follow_links: bool | None = None,
) -> ReidDataset:
    from vreid.data import load_from_config

    cfg = _config(
        config,
        set_,
        data__root=root,
        data__format=format,
        data__vehicleid_test_size=test_size,
        data__vehicleid_draw=draw,
        data__folder_csv=csv,
        data__follow_links=follow_links,
    )
    return load_from_config(cfg.data)


@data_app.command("info")
def data_info(
    root: Annotated[Path, typer.Argument(help="Dataset root folder (data.root).")],
    format: FormatOpt = None,
    test_size: TestSizeOpt = None,
    draw: DrawOpt = None,
    csv: CsvOpt = None,
    follow_links: FollowLinksOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Detect the format and print ids, images, cameras, tracks and attribute coverage per split."""
    from rich.table import Table

    from vreid.data.inspect import summarize

    dataset = _dataset_for_cli(root, format, test_size, draw, csv, config, set_, follow_links)
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
    root: Annotated[Path, typer.Argument(help="Dataset root folder (data.root).")],
    format: FormatOpt = None,
    test_size: TestSizeOpt = None,
    csv: CsvOpt = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Threads (default: CPU count).")
    ] = None,
    follow_links: FollowLinksOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Read the labels, then open, verify and decode every image; exit 1 if any is corrupt."""
    from vreid.data.inspect import check_images

    dataset = _dataset_for_cli(root, format, test_size, None, csv, config, set_, follow_links)
    records = list(dataset)
    bad = check_images(records, workers=workers, progress=sys.stderr.isatty())
    out = Console()
    if not bad:
        out.print(
            f"{dataset.root} ({dataset.format}): all {len(records)} images are readable",
            highlight=False,
            soft_wrap=True,
        )
        return
    for item in bad:
        out.print(f"corrupt: {item.path}: {item.reason}", highlight=False, soft_wrap=True)
    out.print(f"{len(bad)} of {len(records)} images are corrupt", highlight=False)
    raise typer.Exit(1)


# ============================================================================================
# synth (issue 3): vreid synth
def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise typer.BadParameter(f"{text!r}: expected WIDTHxHEIGHT, e.g. 256x256")
    return int(parts[0]), int(parts[1])


@app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Argument(help="Output folder (gets real/ and simulation/).")],
    preset: Annotated[
        str | None, typer.Option(help="synth.preset: tiny (seconds), demo, aic20-scale.")
    ] = None,
    ids: Annotated[
        int | None, typer.Option(help="synth.ids: real identities (train + test).")
    ] = None,
    cameras: Annotated[int | None, typer.Option(help="synth.cameras: real cameras.")] = None,
    seed: Annotated[int | None, typer.Option(help="synth.seed: same seed, same bytes.")] = None,
    size: Annotated[str | None, typer.Option(help="synth.size as WIDTHxHEIGHT.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Rendering processes; default: one per core.")
    ] = None,
    report: Annotated[
        bool,
        typer.Option(
            "--report", help="Also compute the colour-histogram calibration and a contact sheet."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing, non-empty OUT.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate a synthetic vehicle re-id dataset in the AIC layout (the synth config section)."""
    import json
    import time

    from vreid.synth import generate_from_config

    cfg = _config(
        config,
        set_,
        synth__preset=preset,
        synth__ids=ids,
        synth__cameras=cameras,
        synth__seed=seed,
        synth__size=list(_parse_size(size)) if size is not None else None,
    )
    start = time.perf_counter()
    root = generate_from_config(out, cfg.synth, workers=workers, progress=True, overwrite=overwrite)
    info = json.loads((root / "synth.json").read_text(encoding="utf-8"))
    n = sum(info["images"].values())
    secs = time.perf_counter() - start
    console.print(
        f"wrote {n} images ({', '.join(f'{k} {v}' for k, v in info['images'].items())}) of "
        f"{info['ids']} real + {info['sim_ids']} "
        f"simulation identities to {root} in {secs:.1f} s ({n / secs:.0f} images/s)"
    )
    if report:
        from vreid.workflows.calibration import calibration_report

        numbers = calibration_report(root)
        console.print(
            f"colour-histogram baseline on real/ query→gallery: mAP {numbers['colour_hist_mAP']:.1%}, "
            f"rank-1 {numbers['colour_hist_rank1']:.1%} (chance mAP {numbers['chance_mAP']:.1%}); "
            f"inside the true boxes mAP {numbers.get('colour_hist_box_mAP', float('nan')):.1%}; "
            f"contact sheet: {root / 'contact_sheet.png'}"
        )


# ============================================================================================
# crop (issue 7): vreid crop / vreid train-detector

# The detector settings (the crop config section) of `vreid crop`, shared by `vreid search --crop`.
CropDetectorOpt = Annotated[
    str | None,
    typer.Option(
        "--detector",
        help="crop.detector: torchvision detector, e.g. maskrcnn_resnet50_fpn_v2, "
        "fasterrcnn_resnet50_fpn_v2, fasterrcnn_mobilenet_v3_large_fpn "
        "(default: the checkpoint's).",
    ),
]
_CROP_WEIGHTS_HELP = (
    "crop.weights: torchvision COCO weights file or `vreid train-detector` checkpoint "
    "(default: COCO weights from torchvision's cache)."
)
CropMarginOpt = Annotated[
    float | None,
    typer.Option("--margin", help="crop.margin: margin per side, fraction of the box."),
]
CropMinScoreOpt = Annotated[
    float | None,
    typer.Option(
        "--min-score",
        help="crop.min_score: ignore less confident detections (none left: image kept whole).",
    ),
]
_CROP_BATCH_HELP = "crop.batch_size: images per detector call."


def _crop_flags(
    detector: str | None,
    weights: Path | None,
    margin: float | None,
    min_score: float | None,
    batch_size: int | None,
) -> dict[str, Any]:
    """The crop config keys the detector options set (``None``: not given)."""
    return {
        "crop__detector": detector,
        "crop__weights": weights,
        "crop__margin": margin,
        "crop__min_score": min_score,
        "crop__batch_size": batch_size,
    }


@app.command("crop")
def crop_command(
    src: Annotated[Path, typer.Argument(help="Dataset root (or any folder with --folder).")],
    dst: Annotated[
        Path, typer.Argument(help="Output root: new, empty, or an earlier crop output.")
    ],
    detector: CropDetectorOpt = None,
    weights: Annotated[Path | None, typer.Option("--weights", help=_CROP_WEIGHTS_HELP)] = None,
    margin: CropMarginOpt = None,
    min_score: CropMinScoreOpt = None,
    device: Annotated[
        str | None, typer.Option(help="runtime.device: auto, cpu, cuda, cuda:N.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help=_CROP_BATCH_HELP)] = None,
    workers: Annotated[int, typer.Option(min=0, help="Image-decoding worker processes.")] = 0,
    format: Annotated[str, typer.Option("--format", "-f", help="Dataset format of SRC.")] = "auto",
    folder: Annotated[
        bool, typer.Option("--folder", help="SRC is a plain folder of images, not a dataset.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Crop every image of a dataset to its vehicle (paper 3.2.1); DST reads back as the same dataset.

    Resumable: run the same command again to finish an interrupted run.
    """
    from vreid.inference.crop import crop_dataset, crop_folder, crop_settings

    cfg = _config(
        config,
        set_,
        **_crop_flags(detector, weights, margin, min_score, batch_size),
        runtime__device=device,
    )
    kwargs = {
        **crop_settings(cfg.crop),
        "device": cfg.runtime.device,
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
        str | None, typer.Option(help="detector.architecture: torchvision detector.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="detector.epochs: passes over the training images.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="detector.batch_size.")] = None,
    lr: Annotated[float | None, typer.Option(help="detector.lr: AdamW learning rate.")] = None,
    device: Annotated[
        str | None, typer.Option(help="runtime.device: auto, cpu, cuda, cuda:N.")
    ] = None,
    max_images: Annotated[
        int | None, typer.Option(help="detector.max_images: at most this many training images.")
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="detector.max_minutes: stop after this long and save.")
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="detector.image_size: input size (shorter side); default torchvision's."),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(help="Start from this train-detector checkpoint (train longer, adapt)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Image-decoding worker processes.")] = 0,
    seed: Annotated[int | None, typer.Option(help="detector.seed.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    resume: Annotated[
        bool,
        typer.Option(help="Continue the killed or stopped training of --out (same options)."),
    ] = False,
    amp: Annotated[
        str | None, typer.Option(help="detector.amp: mixed precision off, bf16, fp16 (CUDA).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a vehicle detector on true boxes (offline substitute for COCO weights); use the result
    with `vreid crop --weights FILE`. After every epoch OUT-training/ (beside OUT) keeps what
    --resume continues from."""
    from vreid.engine.detector import train_detector

    cfg = _config(
        config,
        set_,
        detector__architecture=detector,
        detector__epochs=epochs,
        detector__batch_size=batch_size,
        detector__lr=lr,
        detector__max_images=max_images,
        detector__max_minutes=max_minutes,
        detector__image_size=image_size,
        detector__seed=seed,
        detector__amp=amp,
        runtime__device=device,
    )
    d = cfg.detector
    result = train_detector(
        data_root,
        out,
        detector=d.architecture,
        epochs=d.epochs,
        batch_size=d.batch_size,
        lr=d.lr,
        weight_decay=d.weight_decay,
        device=cfg.runtime.device,
        max_images=d.max_images,
        max_minutes=d.max_minutes,
        image_size=d.image_size,
        init_from=init_from,
        workers=workers,
        seed=d.seed,
        overwrite=overwrite,
        progress=sys.stderr.isatty(),
        resume=resume,
        amp=d.amp,
    )
    iou = "n/a" if result.held_out_iou is None else f"{result.held_out_iou:.3f}"
    epochs = f"{result.epochs} epoch" + ("s" if result.epochs != 1 else "")
    Console().print(
        f"wrote {result.checkpoint} ({result.detector}, {epochs} in "
        f"{result.seconds:.0f} s, last loss {result.history[-1]:.3f}); held-out mean IoU {iou}",
        highlight=False,
        soft_wrap=True,
    )


# ============================================================================================
# train / extract (issue 5): vreid train / vreid extract


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (never overwritten).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="Start from this checkpoint with a fresh classifier."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a re-id model (GLAMOR by default) on data.root; torchrun for several GPUs."""
    from vreid.engine.reid import train

    cfg = _config(config, set_)
    result = train(cfg, out, resume=resume, init_from=init_from, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f", best mAP {100 * result.best_map:.2f}%" if result.best_map is not None else ""
        epochs = f"{result.epochs} epoch" + ("s" if result.epochs != 1 else "")
        typer.echo(
            f"trained {epochs}{best}; checkpoints in {result.out_dir / 'checkpoints'} "
            f"({result.inference_checkpoint.name}: weights for inference, "
            f"{result.last_checkpoint.name}: to resume)"
        )


@app.command("extract")
def extract_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `vreid train`.")],
    data_root: Annotated[Path, typer.Argument(help="Dataset root, or a plain folder of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for <split>.npy files.")],
    splits: Annotated[
        str, typer.Option("--splits", help="Comma-separated dataset splits to extract.")
    ] = "query,gallery",
    data_format: Annotated[str | None, typer.Option("--format", help="data.format.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="runtime.device: auto, cpu, cuda, cuda:N.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="train.batch_size_eval.")
    ] = None,
    flip: Annotated[
        bool | None,
        typer.Option("--flip/--no-flip", help="train.eval_flip: average with mirrored images."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="train.num_workers: loader workers.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    attributes: Annotated[
        bool,
        typer.Option(
            "--attributes",
            help="CHECKPOINT is an attribute model (`vreid train-attributes`): write DIR/{color,"
            "type}/<split>.npy head features and DIR/{color,type}_probs/<split>.npy probabilities.",
        ),
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write retrieval features DIR/<split>.npy + DIR/<split>.names.txt for dataset splits.

    A DATA_ROOT holding image files directly (a plain folder) gives DIR/images.npy, the names being
    the images' paths relative to the folder.
    """
    from vreid.workflows.extract import extract_to

    cfg = _config(
        config,
        set_,
        data__format=data_format,
        runtime__device=device,
        train__batch_size_eval=batch_size,
        train__eval_flip=flip,
        train__num_workers=workers,
    )
    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    written = extract_to(
        cfg,
        checkpoint,
        data_root,
        out,
        splits=wanted,
        attributes=attributes,
        overwrite=overwrite,
        progress=not quiet,
    )
    for split, files in written.items():
        typer.echo(f"{split}: → " + ", ".join(map(str, files)))


@app.command("search")
def search_cmd(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(
            help="Checkpoints of `vreid train`; several are ensembled (retrieval.ensemble_weights)."
        ),
    ],
    query: Annotated[
        Path, typer.Option("--query", "-q", help="An image file or a folder of query images.")
    ],
    gallery: Annotated[
        Path, typer.Option("--gallery", "-g", help="Folder of images to search (recursively).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Run directory (a non-empty one is kept: DIR-2 is used)."),
    ] = Path("runs/search"),
    attributes: Annotated[
        Path | None,
        typer.Option(
            "--attributes",
            help="Attribute model (checkpoints/attributes.pt of `vreid train-attributes`): its "
            "colour/type features are the re-ranking metadata (retrieval.gamma_type/gamma_colour).",
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, help="Nearest images listed per query (retrieval.top)."),
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option("--rerank/--no-rerank", help="k-reciprocal re-ranking (retrieval.rerank)."),
    ] = None,
    crop: Annotated[
        bool | None,
        typer.Option(
            "--crop/--no-crop", help="Crop both sides with a vehicle detector first (crop.enabled)."
        ),
    ] = None,
    detector: CropDetectorOpt = None,
    detector_weights: Annotated[
        Path | None, typer.Option("--detector-weights", help=_CROP_WEIGHTS_HELP)
    ] = None,
    margin: CropMarginOpt = None,
    min_score: CropMinScoreOpt = None,
    crop_batch_size: Annotated[
        int | None, typer.Option("--crop-batch-size", help=_CROP_BATCH_HELP)
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N (runtime.device).")
    ] = None,
    flip: Annotated[
        bool | None,
        typer.Option("--flip/--no-flip", help="Average with mirrored images (train.eval_flip)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Find the vehicles of the query images in a folder of other images (no dataset needed).

    Runs the retrieval chain of `vreid rank` with the settings of --config/--set; each option names
    the config key it sets (an option given wins over the config). Writes DIR/ranking.csv (query,
    rank, gallery image, distance), DIR/ranklists.png, the full distance matrix DIR/distances.npy
    and DIR/search.json (the settings). Says what each model was trained on and, with --crop, how
    many images were cropped (a warning when the detector found no vehicle in most of them).
    The detector options are those of `vreid crop` (the crop config section).
    """
    from vreid.models.checkpoint import describe_training
    from vreid.workflows.search import crop_warning, search_images

    cfg = _config(
        config,
        set_,
        retrieval__top=top,
        retrieval__rerank=rerank,
        crop__enabled=crop,
        **_crop_flags(detector, detector_weights, margin, min_score, crop_batch_size),
        runtime__device=device,
        train__eval_flip=flip,
    )
    result = search_images(
        checkpoints,
        query,
        gallery,
        out,
        config=cfg,
        attribute_checkpoint=attributes,
        progress=not quiet,
    )
    for model in result.models:
        typer.echo(f"model {model['label']}: {describe_training(model['trained_on'])}")
    if result.crops is not None:
        typer.echo(
            "cropped: "
            + "; ".join(
                f"{side} {c['cropped']} of {c['images']} (kept whole {c['whole']})"
                for side, c in result.crops.items()
            )
        )
        warning = crop_warning(result.crops)
        if warning:
            console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    typer.echo(
        f"{len(result.queries)} queries × {len(result.gallery)} gallery images → "
        f"{result.out_dir / 'ranking.csv'}, {result.out_dir / 'ranklists.png'}"
    )


# ============================================================================================
# attributes (issue 6): vreid train-attributes


@app.command("train-attributes")
def train_attributes_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (never overwritten).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the killed run in --out.")
    ] = False,
) -> None:
    """Train the colour/type attribute model (re-id step, then softmax fine-tuning of both heads)
    on attributes.data_root (or data.sim_root); report held-out colour and type accuracy."""
    from vreid.engine.attributes import no_better_than_majority, train_attributes

    cfg = _config(config, set_)
    result = train_attributes(cfg, out, progress=not quiet, resume=resume)
    metrics = result.metrics or {}
    reid = (metrics.get("reid") or {}).get("held_out_reid") or {}
    if "mAP" in reid:
        typer.echo(f"re-id step: held-out mAP {100 * reid['mAP']:.1f}%")
    for head, label in (("color", "colour"), ("type", "type")):
        report = metrics.get(head)
        if report and report.get("accuracy") is not None:
            typer.echo(
                f"{label}: held-out accuracy {100 * report['accuracy']:.1f}% (balanced "
                f"{100 * report['balanced_accuracy']:.1f}%) on {report['images']} images; "
                f"majority class {100 * report['majority_baseline']:.1f}%, chance "
                f"{100 * report['uniform_chance']:.1f}%"
                + (
                    " — no better than always guessing the majority class"
                    if no_better_than_majority(
                        report["accuracy"], report["majority_baseline"], report["images"]
                    )
                    else ""
                )
            )
    if not result.heads_trained:
        typer.echo("no colour/type labels: only the re-id step was trained")
    typer.echo(f"checkpoint: {result.checkpoint}")


# ============================================================================================
# retrieval (issue 4): vreid rank / vreid submission check
submission_app = typer.Typer(help="Check AIC track2.txt submissions.", no_args_is_help=True)
app.add_typer(submission_app, name="submission")


@app.command("rank")
def rank_cmd(
    features: Annotated[
        list[Path],
        typer.Argument(
            help="Feature directories (one per model), each with query.npy / gallery.npy and "
            "their .names.txt; several are ensembled (retrieval.ensemble_weights, in this order)."
        ),
    ],
    data: Annotated[Path, typer.Option("--data", "-d", help="Dataset root (query/gallery split).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    attributes: Annotated[
        Path | None,
        typer.Option(
            "--attributes",
            help="Attribute feature directory (<dir>/type/, <dir>/color/) for metadata distances.",
        ),
    ] = None,
    data_format: Annotated[
        str | None, typer.Option("--format", help="Dataset format (data.format).")
    ] = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, help="Gallery images per query listed (retrieval.top)."),
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option("--rerank/--no-rerank", help="k-reciprocal re-ranking (retrieval.rerank)."),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N (runtime.device).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a previous result.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run the retrieval chain on features of a split (re-ranking, metadata, ensemble, track
    averaging); write every row's distances, track2.txt and the metrics of every row.

    Settings come from --config/--set; each option names the config key it sets (an option given
    wins over the config).
    """
    from vreid.workflows.rank import rank_split

    cfg = _config(
        config,
        set_,
        retrieval__top=top,
        retrieval__rerank=rerank,
        runtime__device=device,
        data__format=data_format,
    )
    result = rank_split(
        features,
        data,
        out,
        config=cfg,
        attribute_dir=attributes,
        overwrite=overwrite,
        progress=True,
    )
    for path in result.files:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    m = result.final_metrics
    if m is None:
        console.print(
            "no ground-truth ids for query and gallery: no mAP can be computed", soft_wrap=True
        )
        return
    console.print(
        f"{result.final}, {m['protocol']} protocol: mAP@{m['max_rank']} {m['mAP']:.4f}  "
        f"rank-1 {m['rank1']:.4f}  mINP {m['mINP']:.4f}  full mAP {m['full']['mAP']:.4f}  "
        f"({m['num_valid_queries']} queries, {m['num_skipped_queries']} without a match skipped)",
        highlight=False,
        soft_wrap=True,
    )


@submission_app.command("check")
def submission_check_cmd(
    file: Annotated[Path, typer.Argument(help="The track2.txt to check.")],
    queries: Annotated[int, typer.Option("--queries", "-q", help="Number of query images.")],
    gallery: Annotated[int, typer.Option("--gallery", "-g", help="Number of gallery images.")],
) -> None:
    """Check line count and that every line holds 100 distinct 1-based gallery indices."""
    from vreid.retrieval.submission import check_submission

    ranks = check_submission(file, queries, gallery)
    console.print(
        f"{file}: ok ({ranks.shape[0]} lines × {ranks.shape[1]} gallery indices)",
        highlight=False,
        soft_wrap=True,
    )


# ============================================================================================
# pipeline / demo / report (issue 8)
config_app = typer.Typer(help="The built-in config presets.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _print_results(metrics: dict | None, run_dir: Path) -> None:
    from rich.table import Table

    from vreid.workflows.report.html import map_header, results_table_rows, run_labels

    out = Console()
    if not metrics:
        out.print(f"no metrics (the query/gallery split has no ground truth); run in {run_dir}")
        return
    table = Table(title=f"Results ({run_dir})")
    for col in ("Method", map_header(metrics), "mAP full", "R1", "R5", "R10", "mINP"):
        table.add_column(col, justify="left" if col == "Method" else "right")
    for _, label, values in results_table_rows(metrics, run_labels(run_dir)):
        table.add_row(label, *values)
    out.print(table)
    index = run_dir / "report" / "index.html"
    if index.is_file():
        out.print(f"report: {index}")


@app.command("pipeline")
def pipeline_cmd(
    config: Annotated[
        str, typer.Argument(help="YAML config file or built-in preset name (vreid config list).")
    ],
    from_stage: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Re-run from this stage (data, attributes, train, extract, "
            "distances, metrics, submission, report).",
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Run directory (default: runs/<pipeline.name>)."),
    ] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run every stage; stages whose artefacts are up to date are skipped, an interrupted run resumes."""
    from vreid.workflows.pipeline import run_pipeline

    cfg = _config(config, set_)
    run_dir = run_dir or Path("runs") / cfg.pipeline.name
    result = run_pipeline(cfg, run_dir, from_stage=from_stage, progress=not quiet)
    _print_results(result["metrics"], run_dir)


@app.command("demo")
def demo_cmd(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Run directory.")] = Path("runs/demo"),
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """The demo: synthetic data (generated into data/demo when absent), both GLAMORs, the report."""
    from vreid.workflows.pipeline import run_pipeline

    cfg = _config("demo", set_)
    result = run_pipeline(cfg, run_dir, progress=not quiet)
    _print_results(result["metrics"], run_dir)


@app.command("tune")
def tune_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of `vreid pipeline`.")],
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Tune γ_type, γ_colour, k1, k2, λ and the ensemble weights on validation identities (held
    out of training: train.val_fraction), then re-run the retrieval with the chosen values.

    Runs RUN_DIR's pipeline again with tune.enabled=true (grids: the tune config section; --set
    tune.k1=[10,20] …); finished stages are reused. The test split is never used to choose.
    """
    from vreid.workflows.pipeline import run_pipeline

    cfg = _config(str(run_dir / "config.yaml"), [*(set_ or []), "tune.enabled=true"])
    result = run_pipeline(cfg, run_dir, progress=not quiet)
    _print_results(result["metrics"], run_dir)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of `vreid pipeline`.")],
) -> None:
    """(Re)build RUN_DIR/report/index.html from the run's artefacts."""
    from vreid.workflows.report import build_report

    typer.echo(str(build_report(run_dir)))


@config_app.command("show")
def config_show_cmd(
    name: Annotated[str, typer.Argument(help="Preset name or YAML file.")],
    set_: SetOpt = None,
) -> None:
    """Print a preset (or file) resolved with the defaults and --set overrides."""
    from vreid.core.config import config_to_yaml

    typer.echo(config_to_yaml(_config(name, set_)), nl=False)


@config_app.command("list")
def config_list_cmd() -> None:
    """List the built-in presets."""
    from vreid.core.config import list_presets

    for name, path in list_presets().items():
        typer.echo(f"{name}\t{path}")


# ============================================================================================
# export (issue "The real user's path", part 2): vreid export CKPT --out model.onnx


@app.command("export")
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `vreid train`.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The ONNX file to write (name ending in .onnx).")
    ],
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version.")] = 20,
    batch: Annotated[
        int, typer.Option("--batch", help="Images in the onnxruntime-vs-torch check.")
    ] = 8,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUT (and its .json).")
    ] = False,
) -> None:
    """Export CHECKPOINT's re-id model to ONNX (dynamic batch) and verify it with onnxruntime.

    The features of onnxruntime and torch are compared on a batch of the checkpoint's input size;
    the numbers are printed and written to OUT.json. `vreid.Extractor` and `vreid search` take the
    .onnx file in place of the checkpoint.
    """
    from vreid.workflows.export import export_onnx

    result = export_onnx(checkpoint, out, opset=opset, batch=batch, overwrite=overwrite)
    typer.echo(result.summary())


# index (search that scales): vreid index build / vreid index add / vreid query / vreid serve
index_app = typer.Typer(
    help="A persistent gallery index: build it once, add images, query it.", no_args_is_help=True
)
app.add_typer(index_app, name="index")


@index_app.command("build")
def index_build_cmd(
    source: Annotated[
        Path, typer.Argument(help="A folder of images, or with --format a dataset root.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The index folder to create.")],
    checkpoints: Annotated[
        list[Path],
        typer.Option("--checkpoint", "-m", help="A re-id checkpoint (repeat for an ensemble)."),
    ],
    attributes: Annotated[
        Path | None, typer.Option("--attributes", help="Attribute model checkpoint (metadata).")
    ] = None,
    data_format: FormatOpt = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split to index.")] = "gallery",
    float16: Annotated[
        bool, typer.Option("--float16/--float32", help="Store features as float16.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Neighbour lists: exact (torch, all pairs) or faiss (PQ fast scan re-scored "
            "exactly: for galleries of 10⁵–10⁶ images; pip install 'vreid[faiss]').",
        ),
    ] = "exact",
    neighbours: Annotated[
        int, typer.Option("--neighbours", min=2, help="Neighbours kept per gallery item (K).")
    ] = 40,
    crop: Annotated[
        bool | None, typer.Option("--crop/--no-crop", help="Detector cropping (crop.enabled).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="runtime.device.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Build an index: features of every model, attribute features, neighbour lists, manifest.

    An interrupted build resumes when run again with the same arguments."""
    from vreid.workflows.index import build_index

    cfg = _config(config, set_, crop__enabled=crop, runtime__device=device)
    rep = build_index(
        source,
        out,
        checkpoints,
        config=cfg,
        attribute_checkpoint=attributes,
        data_format=data_format,
        split=split,
        float16=float16,
        backend=backend,
        neighbours=neighbours,
        progress=not quiet,
    )
    recall = {
        m: ", ".join(f"{k} {v:.3f}" for k, v in i.items() if "recall@" in k)
        for m, i in rep.neighbours.items()
        if "recall@100" in i
    }
    extra = f"; recall vs exact search (faiss): {recall}" if recall else ""
    typer.echo(f"{rep.count} images indexed in {rep.seconds:.1f} s → {rep.root}{extra}")


@index_app.command("add")
def index_add_cmd(
    index: Annotated[Path, typer.Argument(help="An index folder of `vreid index build`.")],
    more: Annotated[Path, typer.Argument(help="A folder of images, or with --format a dataset.")],
    data_format: FormatOpt = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split to add.")] = "gallery",
    device: Annotated[str | None, typer.Option("--device", help="runtime.device.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Append images to an index (its checkpoints and settings) and update the neighbour lists."""
    from vreid.workflows.index import add_to_index

    cfg = _config(config, set_, runtime__device=device)
    rep = add_to_index(
        index, more, config=cfg, data_format=data_format, split=split, progress=not quiet
    )
    typer.echo(f"{rep.added} images added in {rep.seconds:.1f} s; {rep.count} in {rep.root}")


@index_app.command("remove")
def index_remove_cmd(
    index: Annotated[Path, typer.Argument(help="An index folder of `vreid index build`.")],
    targets: Annotated[
        list[str],
        typer.Argument(help="Gallery ids, image paths or folders (every item under it)."),
    ],
    device: Annotated[str | None, typer.Option("--device", help="runtime.device.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Remove items from an index: their rows dropped, the lists that held them recomputed."""
    from vreid.workflows.index import remove_from_index

    cfg = _config(config, set_, runtime__device=device)
    rep = remove_from_index(index, targets, config=cfg)
    typer.echo(f"{-rep.added} images removed in {rep.seconds:.1f} s; {rep.count} in {rep.root}")


@app.command("query")
def query_cmd(
    index: Annotated[Path, typer.Argument(help="An index folder of `vreid index build`.")],
    images: Annotated[Path, typer.Argument(help="A query image or a folder of them.")],
    top: Annotated[
        int | None, typer.Option("--top", min=1, help="Hits per query (retrieval.top).")
    ] = None,
    rerank: Annotated[
        bool | None, typer.Option("--rerank/--no-rerank", help="retrieval.rerank.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    candidates: CandidatesOpt = None,
    device: Annotated[str | None, typer.Option("--device", help="runtime.device.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The nearest gallery images of each query image, through the retrieval chain (re-ranking
    online against the index's neighbour lists)."""
    import dataclasses
    import json

    from vreid.workflows.index import Searcher, query_images

    cfg = _config(
        config, set_, retrieval__top=top, retrieval__rerank=rerank, runtime__device=device
    )
    paths = query_images(images)
    searcher = Searcher(index, config=cfg, candidates=candidates)
    for path, hits in zip(paths, searcher.search(paths), strict=True):
        if as_json:
            typer.echo(
                json.dumps({"query": str(path), "hits": [dataclasses.asdict(h) for h in hits]})
            )
            continue
        typer.echo(f"{path}")
        for rank, h in enumerate(hits, start=1):
            typer.echo(
                f"  {rank:4d}  {h.distance:.4f}  cam {h.camera:3d}  track {h.track:5d}  {h.name}"
            )


@app.command("serve")
def serve_cmd(
    index: Annotated[Path, typer.Argument(help="An index folder of `vreid index build`.")],
    host: Annotated[str, typer.Option("--host", help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="VREID_TOKEN", help="Access token (required off loopback)."),
    ] = None,
    candidates: CandidatesOpt = None,
    device: Annotated[str | None, typer.Option("--device", help="runtime.device.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """A local web page to search the index (drop an image, page through the ranked gallery) and
    a JSON API (POST /api/query)."""
    from vreid.workflows.serve import serve

    cfg = _config(config, set_, runtime__device=device)
    serve(index, host=host, port=port, token=token, config=cfg, candidates=candidates)


# ============================================================================================


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except VreidError as err:
        if _state["debug"]:
            raise
        _fail(str(err))
    except OSError as err:
        # The machine said no (read-only folder, full disk, a file where a folder should be …):
        # one line naming the path and the cause, as for bad input.
        if _state["debug"]:
            raise
        where = " → ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
        cause = err.strerror or str(err)
        _fail(f"{where}: {cause}" if where else cause)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
