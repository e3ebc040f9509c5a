"""The one rich progress bar every long-running stage shows (on stderr, so stdout stays clean)."""

from __future__ import annotations

from typing import Any


def progress_bar(*, disable: bool = False, transient: bool = False) -> Any:
    """A rich ``Progress``: description, bar, done/total, a free ``info`` field, elapsed, time left.

    Tasks must be added with an ``info`` field: ``bar.add_task("crop", total=n, info="")``.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disable,
        transient=transient,
    )
