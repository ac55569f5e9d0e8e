"""What a load prints: the per-table summary (plain aligned text, or JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from events.consumer import StreamResult
from loaders.pipeline import TableResult
from tidewater.cli import print_table

REREAD_NOTE = (
    "re-read: rows read again on purpose, not changes: those at or below the previous mark "
    "(ties, and rows of transactions still open at the last read or within `lag`) and, with "
    "detect_deletes, whole key ranges whose count or checksum differed; unchanged rows are "
    "not written, so only inserted/updated/deleted changed the warehouse"
)


def print_load_summary(results: list[TableResult], *, as_json: bool) -> None:
    ordered = sorted(results, key=lambda r: r.name)
    if as_json:
        print(
            json.dumps(
                [{k: v for k, v in asdict(r).items() if k != "failure"} for r in ordered],
                default=str,
            )
        )
        return
    print_table(
        [
            "table",
            "mode",
            "status",
            "read",
            "inserted",
            "updated",
            "deleted",
            "re-read",
            "mark after",
            "seconds",
        ],
        [
            [
                r.name,
                r.mode,
                r.status,
                r.rows_read,
                r.inserted,
                r.updated,
                r.deleted,
                r.reread,
                r.mark_after.isoformat(timespec="seconds") if r.mark_after else "",
                f"{r.duration_s:.2f}",
            ]
            for r in ordered
        ],
    )
    print(REREAD_NOTE)


def print_stream_summary(results: Sequence[StreamResult], *, as_json: bool) -> None:
    """What draining each event stream did."""
    if as_json:
        print(json.dumps([asdict(r) for r in results], default=str))
        return
    print_table(
        ["stream", "kind", "status", "stored", "duplicates", "dead letters", "position", "seconds"],
        [
            [
                f"{r.source}.{r.stream}",
                r.kind,
                r.status,
                r.stored,
                r.duplicates,
                r.dead_letters,
                r.position,
                f"{r.seconds:.2f}",
            ]
            for r in results
        ],
    )
