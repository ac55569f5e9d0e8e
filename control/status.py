"""``invoke status``: what ran, when, for how long, with how many rows; success
rates, the last errors, freshness, and jobs trending slower than their history.

All of it is plain SQL over the ``ops`` tables, so a BI tool can ask the same."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

from tidewater.cli import print_table
from tidewater.db import connect
from tidewater.profile import Target

RECENT_RUNS = """
select job, run_id, pipeline_run_id, started_at, duration_s, status, rows_loaded,
    error_message, extract(epoch from now() - started_at) as age_s
from ops.job_runs
order by started_at desc
limit %(limit)s
"""

# One row per invocation (`invoke load transform` = load + dbt build + publish):
# the jobs sharing a pipeline_run_id. Rows from before that column existed, or
# written without it, are an invocation each. Only invocations with a job among
# the newest ones are grouped, so a year of history costs nothing extra.
RECENT_PIPELINE_RUNS = """
with recent as (
    select distinct coalesce(pipeline_run_id, run_id) as pipeline_run_id
    from (
        select pipeline_run_id, run_id
        from ops.job_runs
        order by started_at desc
        limit %(limit)s * 20
    ) as newest_jobs
),

jobs as (
    select recent.pipeline_run_id as invocation, job_runs.*
    from recent
    inner join ops.job_runs on job_runs.pipeline_run_id = recent.pipeline_run_id
    union all
    select recent.pipeline_run_id as invocation, job_runs.*
    from recent
    inner join ops.job_runs
        on job_runs.run_id = recent.pipeline_run_id and job_runs.pipeline_run_id is null
),

invocations as (
    select invocation,
        min(started_at) as started_at,
        max(coalesce(finished_at, now())) as finished_at,
        case when bool_or(status = 'running') then 'running'
            when bool_or(status = 'failed') then 'failed'
            when bool_and(status = 'skipped') then 'skipped'
            else 'succeeded' end as status,
        sum(rows_loaded) as rows_loaded,
        json_agg(json_build_object(
            'job', job, 'run_id', run_id, 'status', status, 'duration_s', duration_s
        ) order by started_at) as jobs,
        (array_agg(job || ': ' || error_message order by started_at desc)
            filter (where status = 'failed'))[1] as error_message
    from jobs
    group by invocation
)

select invocation as pipeline_run_id, started_at,
    extract(epoch from finished_at - started_at) as duration_s,
    extract(epoch from now() - started_at) as age_s,
    status, rows_loaded, jobs, error_message
from invocations
order by started_at desc
limit %(limit)s
"""

SUCCESS_RATE = """
select job,
    count(*) as runs,
    count(*) filter (where status = 'succeeded') as succeeded,
    round(100.0 * count(*) filter (where status = 'succeeded') / count(*), 1) as success_pct
from ops.job_runs
where started_at > now() - make_interval(days => %(days)s) and status <> 'running'
group by job
order by job
"""

LAST_ERRORS = """
select started_at, extract(epoch from now() - started_at) as age_s, job, pipeline_run_id,
    error_class, error_message
from ops.job_runs
where status = 'failed'
order by started_at desc
limit 5
"""

LAST_TABLE_LOADS = """
select source_name || '.' || table_name as table_name, load_mode, status, rows_read,
    rows_inserted, rows_updated, rows_deleted, rows_reread, duration_s
from ops.table_loads
where run_id = (
    select run_id from ops.job_runs where job = 'load' and status <> 'running'
    order by started_at desc limit 1
)
order by 1
"""

FRESHNESS = """
select source_name || '.' || table_name as table_name,
    max(started_at) filter (where status = 'succeeded') as last_loaded_at,
    extract(epoch from now() - max(started_at) filter (where status = 'succeeded')) / 3600.0
        as hours_ago,
    extract(epoch from now() - max(started_at) filter (where status = 'succeeded')) as age_s
from ops.table_loads
group by 1
order by 1
"""

# A job is trending slower when its last run took over 1.5x the median of its
# previous 20 successful runs (and at least a second more).
TRENDING_SLOWER = """
with ranked as (
    select job, duration_s,
        row_number() over (partition by job order by started_at desc) as position
    from ops.job_runs
    where status = 'succeeded'
),

history as (
    select job, percentile_cont(0.5) within group (order by duration_s) as median_s
    from ranked
    where position between 2 and 21
    group by job
    having count(*) >= 3
)

select ranked.job, ranked.duration_s as last_s, history.median_s
from ranked
inner join history on history.job = ranked.job
where ranked.position = 1
    and ranked.duration_s > 1.5 * history.median_s
    and ranked.duration_s - history.median_s > 1
order by ranked.job
"""


def collect_status(conn: Any, *, days: int = 7, limit: int = 10) -> dict[str, Any]:
    """Everything `invoke status` shows, as plain data (``--json`` prints it as is:
    times as ISO 8601, durations and ages in seconds)."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass('ops.job_runs') is not null")
        if not cur.fetchone()[0]:
            return {"runs": [], "note": "no runs recorded yet; run `invoke load transform`"}

        def rows(query: str, **params: Any) -> list[dict[str, Any]]:
            cur.execute(query, params)
            names = [column.name for column in cur.description]
            return [
                {name: _plain(value) for name, value in zip(names, row, strict=True)}
                for row in cur.fetchall()
            ]

        return {
            "pipeline_runs": rows(RECENT_PIPELINE_RUNS, limit=limit),
            "runs": rows(RECENT_RUNS, limit=limit),
            "success_rate": rows(SUCCESS_RATE, days=days),
            "last_errors": rows(LAST_ERRORS),
            "last_load": rows(LAST_TABLE_LOADS),
            "freshness": rows(FRESHNESS),
            "trending_slower": rows(TRENDING_SLOWER),
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
                    row["job"],
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
