"""Small helpers shared by the command-line entry points."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tidewater.exceptions import TidewaterError


def fail(error: TidewaterError, *, code: int = 1) -> int:
    """Print a one-line error (no traceback) and return the exit code."""
    print(f"error: {error}", file=sys.stderr)
    return code


def say(message: str) -> None:
    """A progress note for people: stderr, so stdout stays parseable."""
    print(message, file=sys.stderr, flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table: readable in a terminal and in CI logs."""
    cells = [[str(h) for h in headers]] + [
        ["" if v is None else str(v) for v in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))
