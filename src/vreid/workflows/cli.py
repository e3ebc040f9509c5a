"""The ``vreid`` command line: a thin layer over the Python API (each command calls one function).

Errors caused by input (:class:`~vreid.core.errors.VreidError`) are printed on one line and exit with
status 2; ``vreid --debug …`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vreid.core.errors import VreidError

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
from vreid.data.records import ReidDataset  # noqa: E402  (light: no torch)

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
TestSizeOpt = Annotated[
    int, typer.Option("--test-size", help="VehicleID: test list 800, 1600 or 2400.")
]
DrawOpt = Annotated[int, typer.Option("--draw", help="VehicleID: gallery draw 0-9.")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Folder layout: per-image label CSV.")]


def _load_for_cli(
    root: Path, format: str, test_size: int, draw: int, csv: Path | None
) -> ReidDataset:
    from vreid.data import load_with_options

    return load_with_options(root, format, test_size=test_size, draw=draw, csv=csv)


@data_app.command("info")
def data_info(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    format: FormatOpt = "auto",
    test_size: TestSizeOpt = 800,
    draw: DrawOpt = 0,
    csv: CsvOpt = None,
) -> None:
    """Detect the format and print ids, images, cameras, tracks and attribute coverage per split."""
    from rich.table import Table

    from vreid.data.inspect import summarize

    dataset = _load_for_cli(root, format, test_size, draw, csv)
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
    test_size: TestSizeOpt = 800,
    csv: CsvOpt = None,
    workers: Annotated[int | None, typer.Option(help="Threads (default: CPU count).")] = None,
) -> None:
    """Read the labels, then open, verify and decode every image; exit 1 if any is corrupt."""
    from vreid.data.inspect import check_images

    dataset = _load_for_cli(root, format, test_size, 0, csv)
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
        str, typer.Option(help="Size preset: tiny (seconds), demo, aic20-scale.")
    ] = "demo",
    ids: Annotated[
        int | None, typer.Option(help="Real identities (train + test); default: the preset's.")
    ] = None,
    cameras: Annotated[
        int | None, typer.Option(help="Real cameras; default: the preset's.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 0,
    size: Annotated[str, typer.Option(help="Image size WIDTHxHEIGHT.")] = "256x256",
    workers: Annotated[
        int | None, typer.Option(help="Rendering processes; default: one per core.")
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
) -> None:
    """Generate a synthetic vehicle re-id dataset in the AIC layout."""
    import json
    import time

    from vreid.synth import generate

    start = time.perf_counter()
    root = generate(
        out,
        preset=preset,
        ids=ids,
        cameras=cameras,
        seed=seed,
        size=_parse_size(size),
        workers=workers,
        progress=True,
        overwrite=overwrite,
    )
    info = json.loads((root / "synth.json").read_text(encoding="utf-8"))
    n = sum(info["images"].values())
    secs = time.perf_counter() - start
    console.print(
        f"wrote {n} images ({info['images']}) of {info['ids']} real + {info['sim_ids']} "
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
    from vreid.core.config import load_config
    from vreid.inference.crop import crop_dataset, crop_folder

    full = load_config(config, set_ or [])
    cfg = full.crop
    kwargs = {
        "detector": detector if detector is not None else cfg.detector,
        "weights": weights if weights is not None else cfg.weights,
        "margin": margin if margin is not None else cfg.margin,
        "min_score": min_score if min_score is not None else cfg.min_score,
        "device": device if device is not None else full.runtime.device,
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
    init_from: Annotated[
        Path | None,
        typer.Option(help="Start from this train-detector checkpoint (train longer, adapt)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and sampling.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    resume: Annotated[
        bool,
        typer.Option(help="Continue the killed or stopped training of --out (same options)."),
    ] = False,
    amp: Annotated[str, typer.Option(help="Mixed precision: off, bf16, fp16 (CUDA).")] = "off",
) -> None:
    """Train a vehicle detector on true boxes (offline substitute for COCO weights); use the result
    with `vreid crop --weights FILE`. After every epoch OUT-training/ (beside OUT) keeps what
    --resume continues from."""
    from vreid.engine.detector import train_detector

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
        init_from=init_from,
        workers=workers,
        seed=seed,
        overwrite=overwrite,
        progress=sys.stderr.isatty(),
        resume=resume,
        amp=amp,
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
    from vreid.core.config import load_config
    from vreid.engine.reid import train

    cfg = load_config(config, set_ or [])
    result = train(cfg, out, resume=resume, init_from=init_from, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        best = f", best mAP {100 * result.best_map:.2f}%" if result.best_map is not None else ""
        epochs = f"{result.epochs} epoch" + ("s" if result.epochs != 1 else "")
        typer.echo(f"trained {epochs}{best}; checkpoints in {result.out_dir / 'checkpoints'}")


@app.command("extract")
def extract_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `vreid train`.")],
    data_root: Annotated[Path, typer.Argument(help="Dataset root, or a plain folder of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for <split>.npy files.")],
    splits: Annotated[
        str, typer.Option("--splits", help="Comma-separated dataset splits to extract.")
    ] = "query,gallery",
    data_format: Annotated[str, typer.Option("--format", help="Dataset format.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    flip: Annotated[bool, typer.Option("--flip", help="Average with mirrored images.")] = False,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Image-loading workers.")] = 2,
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
) -> None:
    """Write retrieval features DIR/<split>.npy + DIR/<split>.names.txt for dataset splits.

    A DATA_ROOT holding image files directly (a plain folder) gives DIR/images.npy, the names being
    the images' paths relative to the folder.
    """
    from vreid.core.artefacts import refuse_overwrite
    from vreid.core.errors import DatasetError
    from vreid.data.files import is_image_name
    from vreid.data.image_datasets import image_paths
    from vreid.data.records import ImageRecord
    from vreid.inference.extract import Extractor, extract_split

    if not data_root.is_dir():
        raise DatasetError(f"{data_root}: not a directory")
    plain = any(is_image_name(p.name) for p in data_root.iterdir() if p.is_file())
    if plain:
        paths = image_paths(data_root)
        jobs = {
            "images": [
                ImageRecord(path=p, name=p.relative_to(data_root).as_posix(), split="images")
                for p in paths
            ]
        }
    else:
        from vreid.data import load_dataset

        dataset = load_dataset(data_root, data_format)
        wanted = [s.strip() for s in splits.split(",") if s.strip()]
        missing = [s for s in wanted if not dataset.splits.get(s)]
        if missing:
            have = ", ".join(s for s, r in dataset.splits.items() if r) or "none"
            raise DatasetError(
                f"{data_root}: no {', '.join(missing)} split (splits with images: {have}); "
                "choose others with --splits"
            )
        jobs = {s: dataset.splits[s] for s in wanted}
    if attributes:
        from vreid.inference.attributes import extract_attribute_features

        for split, records in jobs.items():
            files = extract_attribute_features(
                checkpoint,
                records,
                out,
                split,
                device=device,
                batch_size=batch_size,
                num_workers=workers,
                progress=not quiet,
                overwrite=overwrite,
            )
            typer.echo(f"{split}: {len(records)} images → " + ", ".join(map(str, files.values())))
        return
    for split in jobs:
        refuse_overwrite(out / f"{split}.npy", overwrite=overwrite)
    extractor = Extractor(
        checkpoint,
        device=device,
        batch_size=batch_size,
        flip=flip,
        num_workers=workers,
        progress=not quiet,
    )
    for split, records in jobs.items():
        path = extract_split(extractor, records, out / split)
        typer.echo(f"{split}: {len(records)} images → {path} ({extractor.feature_dim}-d)")


@app.command("search")
def search_cmd(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(
            help="Checkpoints of `vreid train`; several are ensembled (distances averaged)."
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
    top: Annotated[int, typer.Option("--top", min=1, help="Nearest images listed per query.")] = 10,
    rerank: Annotated[
        bool, typer.Option("--rerank/--no-rerank", help="k-reciprocal re-ranking per model.")
    ] = True,
    crop: Annotated[
        bool, typer.Option("--crop", help="Crop both sides with a vehicle detector first.")
    ] = False,
    detector_weights: Annotated[
        Path | None,
        typer.Option(
            "--detector-weights",
            help="With --crop: a `vreid train-detector` checkpoint or torchvision COCO file "
            "(default: COCO weights from torchvision's cache).",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    flip: Annotated[bool, typer.Option("--flip", help="Average with mirrored images.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Find the vehicles of the query images in a folder of other images (no dataset needed).

    Writes DIR/ranking.csv (query, rank, gallery image, distance), DIR/ranklists.png, the full
    distance matrix DIR/distances.npy and DIR/search.json (the settings).
    """
    from vreid.workflows.search import search_images

    result = search_images(
        checkpoints,
        query,
        gallery,
        out,
        top=top,
        rerank=rerank,
        crop=crop,
        detector_weights=detector_weights,
        device=device,
        flip=flip,
        progress=not quiet,
    )
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
    from vreid.core.config import load_config
    from vreid.engine.attributes import train_attributes

    cfg = load_config(config, set_ or [])
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
            "their .names.txt; several are ensembled."
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
        str | None, typer.Option("--format", help="Dataset format (default: data.format).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a previous result.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Re-rank, ensemble and track-average features of a split; write track2.txt and metrics."""
    from vreid.core.config import load_config
    from vreid.workflows.rank import rank_split

    cfg = load_config(config, set_ or [])
    result = rank_split(
        features,
        data,
        out,
        config=cfg,
        attribute_dir=attributes,
        data_format=data_format,
        overwrite=overwrite,
        progress=True,
    )
    for path in result.files:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    m = result.metrics
    if m is None:
        console.print(
            "no ground-truth ids for query and gallery: no mAP can be computed", soft_wrap=True
        )
        return
    console.print(
        f"{m['protocol']} protocol: mAP {m['mAP']:.4f}  rank-1 {m['rank1']:.4f}  "
        f"mINP {m['mINP']:.4f}  ({m['num_valid_queries']} queries, "
        f"{m['num_skipped_queries']} without a match skipped)",
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

    from vreid.workflows.report.html import results_table_rows

    out = Console()
    if not metrics:
        out.print(f"no metrics (the query/gallery split has no ground truth); run in {run_dir}")
        return
    table = Table(title=f"Results ({run_dir})")
    for col in ("Method", "mAP@100", "mAP full", "R1", "R5", "R10", "mINP"):
        table.add_column(col, justify="left" if col == "Method" else "right")
    for _, label, values in results_table_rows(metrics):
        table.add_row(label, *values)
    out.print(table)
    index = run_dir / "report" / "index.html"
    if index.is_file():
        out.print(f"report: {index}")


@app.command("pipeline")
def pipeline_cmd(
    config: Annotated[
        str, typer.Argument(help="YAML config file or preset name (demo, tiny, aic20, veri776).")
    ],
    from_stage: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Re-run from this stage (data, attributes, train, extract, "
            "distances, metadata, rerank, tracks, metrics, submission, report).",
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
    from vreid.core.config import load_config
    from vreid.workflows.pipeline import resolve_config, run_pipeline

    cfg = load_config(resolve_config(config), set_ or [])
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
    from vreid.core.config import load_config
    from vreid.workflows.pipeline import resolve_config, run_pipeline

    cfg = load_config(resolve_config("demo"), set_ or [])
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
    from vreid.core.config import config_to_yaml, load_config
    from vreid.workflows.pipeline import resolve_config

    typer.echo(config_to_yaml(load_config(resolve_config(name), set_ or [])), nl=False)


@config_app.command("list")
def config_list_cmd() -> None:
    """List the built-in presets."""
    from vreid.workflows.pipeline import list_presets

    for name, path in list_presets().items():
        typer.echo(f"{name}\t{path}")


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
