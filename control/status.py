"""``invoke status``: what ran, when, for how long, with how many rows; success
rates, the last errors, freshness, and jobs trending slower than their history.

All of it is plain SQL over the ``ops`` tables (`control.queries`, shared with
`invoke report`), so a BI tool can ask the same."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

from control import queries
from tidewater.cli import print_table
from tidewater.db import connect
from tidewater.profile import Target

LAST_ERRORS = 5  # failed jobs listed


def collect_status(conn: Any, *, days: int = 7, limit: int = 10) -> dict[str, Any]:
    """Everything `invoke status` shows, as plain data (``--json`` prints it as is:
    times as ISO 8601, durations and ages in seconds)."""
    with conn.cursor() as cur:
        (ops,) = queries.fetch(cur, queries.HAS_OPS)
        if not ops["has_ops"]:
            return {"runs": [], "note": "no runs recorded yet; run `invoke load transform`"}

        def rows(query: str, **params: Any) -> list[dict[str, Any]]:
            return [
                {name: _plain(value) for name, value in row.items()}
                for row in queries.fetch(cur, query, **params)
            ]

        (streams,) = queries.fetch(cur, queries.HAS_EVENT_STREAMS)
        return {
            "pipeline_runs": rows(queries.RECENT_PIPELINE_RUNS, limit=limit, pipeline_only=False),
            "event_streams": rows(queries.EVENT_STREAMS) if streams["has_streams"] else [],
            "runs": rows(queries.RECENT_JOB_RUNS, limit=limit),
            "success_rate": rows(queries.SUCCESS_RATE, days=days),
            "last_errors": rows(queries.FAILURES, kinds=["job"], limit=LAST_ERRORS),
            "last_load": rows(queries.TABLE_LOADS_PER_RUN, days=None, runs=1),
            "freshness": rows(queries.FRESHNESS),
            "trending_slower": rows(queries.TRENDING_SLOWER),
        }


def _plain(value: Any) -> Any:
    """Numbers as numbers: PostgreSQL's numeric arrives as Decimal."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


# ------------------------------------------------------------------ for people


def human_duration(seconds: float | None) -> str:
    """``0.3 s``, ``3.2 s``, ``41 s``, ``3 min 05 s``, ``2 h 10 min``."""
    if seconds is None:
        return ""
    seconds = max(float(seconds), 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def human_age(seconds: float | None) -> str:
    """``just now``, ``40 s ago``, ``12 min ago``, ``5.2 h ago``, ``3 d ago``."""
    if seconds is None:
        return "never"
    seconds = max(float(seconds), 0.0)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def human_count(value: int | None) -> str:
    return "" if value is None else f"{int(value):,}"


def _one_line(text: str | None, width: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _jobs(jobs: list[dict[str, Any]] | None) -> str:
    """``load 41 s, dbt build 1 min 20 s, publish 0.3 s`` (failed jobs say so)."""
    parts = []
    for job in jobs or []:
        state = "" if job["status"] == "succeeded" else f" {job['status']}"
        parts.append(f"{job['job']}{state} {human_duration(job['duration_s'])}".rstrip())
    return ", ".join(parts)


Section = tuple[str, list[str], list[list[str]]]


def status_sections(status: dict[str, Any]) -> list[Section]:
    """The text tables `invoke status` prints: (title, headers, rows), all strings."""
    return [
        (
            "Recent runs (one row per invocation, newest first)",
            ["run", "started", "took", "status", "jobs", "rows", "error"],
            [
                [
                    run["pipeline_run_id"],
                    human_age(run["age_s"]),
                    human_duration(run["duration_s"]),
                    run["status"],
                    _jobs(run["jobs"]),
                    human_count(run["rows_loaded"]),
                    _one_line(run["error_message"], 80),
                ]
                for run in status["pipeline_runs"]
            ],
        ),
        (
            "Success rate, last 7 days",
            ["job", "runs", "succeeded", "success"],
            [
                [
                    row["job"],
                    human_count(row["runs"]),
                    human_count(row["succeeded"]),
                    f"{row['success_pct']:g} %",
                ]
                for row in status["success_rate"]
            ],
        ),
        (
            "Last load, per table",
            ["table", "mode", "status", "read", "inserted", "updated", "deleted", "took"],
            [
                [row["table_name"], row["load_mode"], row["status"]]
                + [human_count(row[key]) for key in LOAD_COUNTS]
                + [human_duration(row["duration_s"])]
                for row in status["last_load"]
            ],
        ),
        (
            "Event streams (behind the tail, dead letters)",
            [
                "stream",
                "kind",
                "behind",
                "behind by",
                "stored",
                "dead letters",
                "events/s",
                "updated",
            ],
            [
                [
                    row["stream"],
                    row["kind"],
                    human_count(row["lag_messages"]),
                    human_duration(row["lag_seconds"]),
                    human_count(row["events_stored"]),
                    human_count(row["dead_letters"]),
                    f"{row['events_per_s'] or 0:,.0f}",
                    human_age(row["age_s"]),
                ]
                for row in status.get("event_streams", [])
            ],
        ),
        (
            "Freshness (last successful load)",
            ["table", "last loaded"],
            [[row["table_name"], human_age(row["age_s"])] for row in status["freshness"]],
        ),
        (
            "Last errors",
            ["when", "job", "run", "class", "message"],
            [
                [
                    human_age(row["age_s"]),
                    row["name"],
                    row["pipeline_run_id"] or "",
                    row["error_class"] or "",
                    _one_line(row["error_message"]),
                ]
                for row in status["last_errors"]
            ],
        ),
        (
            "Early warning: slower than their own history",
            ["job", "last run took", "median of the 20 before"],
            [
                [row["job"], human_duration(row["last_s"]), human_duration(row["median_s"])]
                for row in status["trending_slower"]
            ],
        ),
    ]


LOAD_COUNTS = ("rows_read", "rows_inserted", "rows_updated", "rows_deleted")
RIGHT_ALIGNED = frozenset({"took", "rows", "runs", "succeeded", "success", "read", "inserted"})
RIGHT_ALIGNED |= {"updated", "deleted", "last run took", "median of the 20 before"}
RIGHT_ALIGNED |= {"behind", "behind by", "stored", "dead letters", "events/s"}


def _print_rich(sections: list[Section]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, headers, rows in sections:
        if not rows:
            console.print(f"\n[bold]{title}[/bold]\n  (none)")
            continue
        table = Table(title=title, title_justify="left", title_style="bold")
        for header in headers:
            table.add_column(header, justify="right" if header in RIGHT_ALIGNED else "left")
        for row in rows:
            style = "red" if "failed" in row else None
            table.add_row(*row, style=style)
        console.print()
        console.print(table)


def _print_plain(sections: list[Section]) -> None:
    for title, headers, rows in sections:
        print(f"\n{title}")
        if not rows:
            print("  (none)")
            continue
        print_table(headers, rows)


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def print_status(target: Target, *, as_json: bool = False) -> None:
    """Print the status: rich tables in a terminal, plain aligned text otherwise
    (cron logs), or JSON with ``as_json``."""
    conn = connect(target, what=f"the warehouse (target {target.name})")
    try:
        status = collect_status(conn)
    finally:
        conn.close()
    if as_json:
        print(json.dumps(status, default=_json_default, indent=2))
        return
    if not status["runs"]:
        print(status.get("note", "no runs"))
        return
    sections = status_sections(status)
    if sys.stdout.isatty():
        _print_rich(sections)
    else:
        _print_plain(sections)
