"""The SQL over the ``ops`` tables that `invoke status` and `invoke report` read.

Each query is written once, as a named constant, and both readers use it: the
recent pipeline runs, the table loads per run, freshness and failures. Values go
in as bound parameters; every query is plain SQL, so a BI tool can ask the same.
"""

from __future__ import annotations

from typing import Any


def fetch(cur: Any, query: str, **params: Any) -> list[dict[str, Any]]:
    """Run one of these queries on a cursor: its rows as dicts by column name."""
    cur.execute(query, params or None)
    names = [column.name for column in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# Whether the run records exist yet (a fresh warehouse has none), and the
# server's clock, which every age on the page is measured against.
HAS_OPS = """
select to_regclass('ops.job_runs') is not null
    and to_regclass('ops.table_loads') is not null
    and to_regclass('ops.dbt_node_runs') is not null as has_ops,
    now() as now
"""

RECENT_JOB_RUNS = """
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
# With pipeline_only, invocations whose jobs were all skipped (the pipeline was
# busy) or were role changes are left out: the report's "last run".
RECENT_PIPELINE_RUNS = """
with recent as (
    select distinct coalesce(pipeline_run_id, run_id) as pipeline_run_id
    from (
        select pipeline_run_id, run_id
        from ops.job_runs
        where not %(pipeline_only)s or (status <> 'skipped' and job not like 'roles %%')
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
            'job', job, 'run_id', run_id, 'status', status, 'duration_s', duration_s,
            'started_at', started_at, 'finished_at', finished_at, 'rows_loaded', rows_loaded
        ) order by started_at, job) as jobs,
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

# The table loads of the newest finished load runs, oldest run first: `status`
# shows the last run's (runs = 1), the report a grid of the last few. days = null
# reaches back without limit.
TABLE_LOADS_PER_RUN = """
with runs as (
    select jobs.run_id, jobs.started_at
    from ops.job_runs as jobs
    where jobs.status not in ('running', 'skipped')
        and (%(days)s::integer is null
            or jobs.started_at > now() - make_interval(days => %(days)s::integer))
        and exists (select from ops.table_loads as loads where loads.run_id = jobs.run_id)
    order by jobs.started_at desc
    limit %(runs)s
)

select runs.run_id, runs.started_at as run_started_at,
    loads.source_name || '.' || loads.table_name as table_name, loads.load_mode, loads.status,
    loads.rows_read, loads.rows_inserted, loads.rows_updated, loads.rows_deleted,
    loads.rows_reread, loads.rows_inserted + loads.rows_updated + loads.rows_deleted
        as rows_written,
    loads.duration_s
from runs
inner join ops.table_loads as loads on loads.run_id = runs.run_id
order by runs.started_at, table_name
"""

# Per table: its last successful load and how long ago that was (null when it
# never loaded successfully).
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

# Event streams (the `events` package keeps ops.event_streams current in every
# batch's transaction): how far behind the tail each consumer is, dead letters, rate.
HAS_EVENT_STREAMS = "select to_regclass('ops.event_streams') is not null as has_streams"
EVENT_STREAMS = """
select source_name || '.' || stream as stream, kind, position, tail, lag_messages, lag_seconds,
    events_stored, duplicates, dead_letters, events_per_s,
    extract(epoch from now() - updated_at) as age_s
from ops.event_streams
order by 1
"""

# Failed jobs, table loads and dbt nodes, newest first; `kinds` (a list, or null
# for all) picks which: `job`, `load`, or a dbt resource type such as `model`.
# Each part is cut to the limit first, so the newest failed jobs come off the
# job_runs_started index, and a part `kinds` leaves out is not read at all.
FAILURES = """
select started_at, extract(epoch from now() - started_at) as age_s, kind, name,
    pipeline_run_id, error_class, error_message
from (
    (
        select started_at, 'job' as kind, job as name, pipeline_run_id, error_class,
            error_message
        from ops.job_runs
        where status = 'failed'
            and (%(kinds)s::text[] is null or 'job' = any(%(kinds)s::text[]))
        order by started_at desc
        limit %(limit)s
    )
    union all
    (
        select loads.started_at, 'load', loads.source_name || '.' || loads.table_name,
            jobs.pipeline_run_id, loads.error_class, loads.error_message
        from ops.table_loads as loads
        left join ops.job_runs as jobs on jobs.run_id = loads.run_id
        where loads.status = 'failed'
            and (%(kinds)s::text[] is null or 'load' = any(%(kinds)s::text[]))
        order by loads.started_at desc
        limit %(limit)s
    )
    union all
    (
        select coalesce(nodes.started_at, jobs.started_at), nodes.resource_type,
            nodes.node_name, jobs.pipeline_run_id, nodes.status, nodes.message
        from ops.dbt_node_runs as nodes
        left join ops.job_runs as jobs on jobs.run_id = nodes.run_id
        where nodes.status in ('error', 'fail', 'runtime error')
            and (%(kinds)s::text[] is null or nodes.resource_type = any(%(kinds)s::text[]))
        order by 1 desc nulls last
        limit %(limit)s
    )
) as failures
order by started_at desc nulls last, kind, name
limit %(limit)s
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

# ------------------------------------------------------------ the report alone

# The table loads and dbt nodes of the last run's jobs, for its Gantt chart.
RUN_TABLE_LOADS = """
select run_id, source_name || '.' || table_name, started_at,
    started_at + make_interval(secs => duration_s), status,
    rows_inserted + rows_updated + rows_deleted
from ops.table_loads
where run_id = any(%(run_ids)s)
order by started_at, 2
"""

RUN_DBT_NODES = """
select run_id, resource_type, node_name, started_at, completed_at, status, rows_affected
from ops.dbt_node_runs
where run_id = any(%(run_ids)s) and started_at is not null and completed_at is not null
    and status <> 'no-op'
order by started_at, node_name
"""

RUNTIME_TREND = """
select job, started_at, duration_s, status
from ops.job_runs
where status in ('succeeded', 'failed') and duration_s is not null
    and started_at > now() - make_interval(days => %(days)s)
order by job, started_at
"""

RUNS_PER_DAY = """
select (started_at at time zone 'UTC')::date as day,
    count(*) filter (where status = 'failed'),
    count(*)
from ops.job_runs
where status <> 'running' and started_at > now() - make_interval(days => %(days)s)
group by 1
order by 1
"""
