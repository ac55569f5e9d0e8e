"""``invoke status``: what ran, when, for how long, with how many rows; success
rates, the last errors, freshness, and jobs trending slower than their history.

All of it is plain SQL over the ``ops`` tables, so a BI tool can ask the same."""

from __future__ import annotations

import json
from typing import Any

from tidewater.cli import print_table
from tidewater.db import connect
from tidewater.profile import Target

RECENT_RUNS = """
select job, run_id, started_at, duration_s, status, rows_loaded, error_message
from ops.job_runs
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
select started_at, job, error_class, error_message
from ops.job_runs
where status = 'failed'
order by started_at desc
limit 5
"""

LAST_TABLE_LOADS = """
select source_name || '.' || table_name as table_name, load_mode, status, rows_read,
    rows_inserted, rows_updated, rows_deleted, round(duration_s::numeric, 2) as seconds
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
        as hours_ago
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
    """Everything `invoke status` shows, as plain data (``--json`` prints it as is)."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass('ops.job_runs') is not null")
        if not cur.fetchone()[0]:
            return {"runs": [], "note": "no runs recorded yet; run `invoke load transform`"}

        def rows(query: str, **params: Any) -> list[dict[str, Any]]:
            cur.execute(query, params)
            names = [column.name for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return {
            "runs": rows(RECENT_RUNS, limit=limit),
            "success_rate": rows(SUCCESS_RATE, days=days),
            "last_errors": rows(LAST_ERRORS),
            "last_load": rows(LAST_TABLE_LOADS),
            "freshness": rows(FRESHNESS),
            "trending_slower": rows(TRENDING_SLOWER),
        }


def _fmt(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.2f}"
    return value


def print_status(target: Target, *, as_json: bool = False) -> None:
    conn = connect(target, what=f"the warehouse (target {target.name})")
    try:
        status = collect_status(conn)
    finally:
        conn.close()
    if as_json:
        print(json.dumps(status, default=str, indent=2))
        return
    if not status["runs"]:
        print(status.get("note", "no runs"))
        return
    sections = [
        ("Recent runs", "runs"),
        ("Success rate, last 7 days", "success_rate"),
        ("Last load, per table", "last_load"),
        ("Freshness (last successful load)", "freshness"),
        ("Last errors", "last_errors"),
        ("Early warning: slower than their own history", "trending_slower"),
    ]
    for title, key in sections:
        print(f"\n{title}")
        rows = status[key]
        if not rows:
            print("  (none)")
            continue
        headers = list(rows[0])
        print_table(headers, [[_fmt(row[h]) for h in headers] for row in rows])
