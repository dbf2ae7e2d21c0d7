"""Progress display for long jobs (rich): count, rate in items/s and ETA, on stderr."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``12.3 clips/s``."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.1f} {self.unit}/s", style="progress.data.speed")


def track(items: Iterable[T], total: int | None, description: str, unit: str = "items",
          enabled: bool = True, done: int = 0) -> Iterator[T]:
    """Yield from ``items`` while showing a progress bar with rate and ETA on stderr; ``done``: items of
    ``total`` finished before (a resumed job)."""
    if not enabled:
        yield from items
        return
    console = Console(file=sys.stderr)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(unit),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=done)
        for item in items:
            yield item
            progress.advance(task)
