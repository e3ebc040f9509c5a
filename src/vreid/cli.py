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
