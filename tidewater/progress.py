"""Progress in the terminal for long steps; silent when output is not a terminal."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any


class TableProgress:
    """Tables done and rows per second, drawn with rich when stderr is a TTY."""

    def __init__(self, total: int, *, description: str = "loading") -> None:
        self.total = total
        self.description = description
        self.rows = 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> TableProgress:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, rate="")
        return self

    def advance(self, result: Any) -> None:
        self.rows += getattr(result, "rows_read", 0)
        if self._progress is not None:
            elapsed = self._progress.tasks[0].elapsed or 0
            rate = f"{self.rows / elapsed:,.0f} rows/s" if elapsed else ""
            self._progress.update(
                self._task, advance=1, rate=rate, description=f"{self.description} {result.name}"
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
