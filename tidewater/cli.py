"""Output shared by the command-line entry points: notes and warnings through
`logging` (stderr, so stdout stays parseable), one-line errors, plain tables.

In a terminal a note is its text and a warning starts ``warning:``; anywhere else (a
cron log, CI) every note and warning also starts with its time, so a log file says
when each step happened. A failure ends with one line ``error: …`` that says what to
do next, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from tidewater.exceptions import TidewaterError

# The kit's packages log at INFO; libraries only what they warn about.
KIT_LOGGERS = ("tidewater", "loaders", "transform", "roles", "control", "demo_app", "events")
log = logging.getLogger("tidewater")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # never let output break a job
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING and not text.startswith(("warning:", "error:")):
            text = f"{record.levelname.lower()}: {text}"
        if not _is_terminal():
            text = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S%z')} {text}"
        return text


def _is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def configure_output() -> None:
    """Send the kit's log records to stderr in the format above (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(handler, _StderrHandler) for handler in root.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    for name in KIT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def fail(error: TidewaterError, *, code: int = 1) -> int:
    """Print a one-line error (no traceback) and return the exit code."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return code


def say(message: str) -> None:
    """A progress note for people (a log record at INFO; see the module's docstring)."""
    configure_output()
    log.info(message)


def warn(message: str) -> None:
    """A warning for people: something worked, but not as it should (WARNING)."""
    configure_output()
    log.warning(message)


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
