"""How the ``agentq`` commands print: times and tables, the same in every command."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

import click


def when(moment: datetime | str | None) -> str:
    """A time (or the API's ISO text of one) as the lists show it: UTC, to the second; ``-``
    for none."""
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Print ``rows`` under ``headers``, in columns as wide as their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
