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
