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
from vreid.datasets.records import ReidDataset  # noqa: E402  (light: no torch)

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
    from vreid.datasets import load_with_options

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

    from vreid.datasets.inspect import summarize

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
    from vreid.datasets.inspect import check_images

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


# ============================================================================================
# crop (issue 7): vreid crop / vreid train-detector


# ============================================================================================
# train / extract (issue 5): vreid train / vreid extract


# ============================================================================================
# attributes (issue 6): vreid train-attributes


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
    from vreid.config import load_config
    from vreid.retrieval.ranking import rank_split

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
