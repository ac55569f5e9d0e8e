"""Run records: every job writes when it started and stopped, how long it took,
how it ended and why, into the warehouse's ``ops`` schema, where people and BI
tools can query them.

Records are written from the runner itself, on a connection of their own
(autocommit), so a failed load's rollback never takes its record with it. A job
whose process dies is found by the next run (its pid is gone) and marked failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import execute_values

from tidewater.db import ConnectFn, is_redshift
from tidewater.paths import PROJECT_ROOT

OPS_SCHEMA = "ops"

OPS_TABLES = (
    """
    create table if not exists ops.job_runs (
        run_id text primary key,
        job text not null,
        started_at timestamptz not null,
        finished_at timestamptz,
        duration_s double precision,
        status text not null,
        error_class text,
        error_message text,
        rows_loaded bigint,
        host text not null,
        pid integer not null,
        code_revision text,
        details jsonb not null default '{}',
        pipeline_run_id text
    )
    """,
    """
    create table if not exists ops.table_loads (
        run_id text not null,
        batch_id text not null,
        source_name text not null,
        table_name text not null,
        load_mode text not null,
        status text not null,
        started_at timestamptz not null,
        duration_s double precision not null,
        rows_read bigint not null,
        rows_inserted bigint not null,
        rows_updated bigint not null,
        rows_deleted bigint not null,
        rows_reread bigint not null,
        mark_before timestamptz,
        mark_after timestamptz,
        attempts integer not null,
        error_class text,
        error_message text,
        primary key (run_id, source_name, table_name)
    )
    """,
    """
    create table if not exists ops.dbt_node_runs (
        run_id text not null,
        unique_id text not null,
        resource_type text not null,
        node_name text not null,
        status text not null,
        started_at timestamptz,
        completed_at timestamptz,
        execution_time_s double precision,
        rows_affected bigint,
        message text,
        primary key (run_id, unique_id)
    )
    """,
    """
    create table if not exists ops.audit_marks (
        relation_name text primary key,
        audited_through timestamptz not null,
        code_fingerprint text not null,
        run_id text not null,
        recorded_at timestamptz not null
    )
    """,
    "create index if not exists job_runs_job_started on ops.job_runs (job, started_at)",
    "create index if not exists job_runs_started on ops.job_runs (started_at)",
)

# Columns added after the tables were first shipped: added where missing, so existing
# warehouses upgrade (and an up-to-date one is not altered). How long a load held the
# source (its snapshot and read locks), and whether its late commits are provably
# safe ('proven', 'held: …', 'unproven: …', 'off'; null for bulk loads). The
# invocation a job belongs to (null in rows written before it existed: each of those
# counts as an invocation of its own).
OPS_COLUMNS = (
    ("job_runs", "pipeline_run_id", "text"),
    ("table_loads", "source_held_s", "double precision"),
    ("table_loads", "late_commit_safety", "text"),
)

MISSING_COLUMNS = """
select wanted.table_name, wanted.column_name
from unnest(%(tables)s::text [], %(columns)s::text []) as wanted (table_name, column_name)
where not exists (
    select from information_schema.columns as existing
    where existing.table_schema = 'ops'
        and existing.table_name = wanted.table_name
        and existing.column_name = wanted.column_name
)
"""
# Indexes on columns that OPS_COLUMNS may have just added.
OPS_INDEXES = (
    "create index if not exists job_runs_pipeline_run on ops.job_runs (pipeline_run_id)",
)

# Redshift has no jsonb, no `create index`, no `add column if not exists` and no
# arrays as parameters: the same tables with Redshift's types (JSON as text), the
# missing columns found in information_schema, and no indexes (Redshift sorts and
# zone-maps instead).
REDSHIFT_OPS_TABLES = tuple(
    statement.replace("jsonb", "character varying(65535)").replace(
        " text", " character varying(65535)"
    )
    for statement in OPS_TABLES
    if "create index" not in statement
)
OPS_COLUMNS_PRESENT = """
select table_name, column_name from information_schema.columns where table_schema = 'ops'
"""
REDSHIFT_MARK_ORPHANS = """
update ops.job_runs
set status = 'failed', error_class = 'terminal', finished_at = coalesce(finished_at, getdate()),
    error_message = 'the process stopped without recording an end (killed or crashed)'
where status = 'running' and host = %(host)s and pid not in %(alive)s
"""

# Every job of one invocation (`invoke load transform`: load, dbt build, publish)
# shares this id, also across the subprocesses the tasks start: the first entry
# point to need it sets the variable, and child processes inherit it.
PIPELINE_RUN_ENV = "TIDEWATER_PIPELINE_RUN_ID"


MARK_ORPHANS = """
update ops.job_runs
set status = 'failed', error_class = 'terminal', finished_at = coalesce(finished_at, now()),
    error_message = 'the process stopped without recording an end (killed or crashed)'
where status = 'running' and host = %(host)s and pid <> all(%(alive)s)
"""

# Waits between tries to write a record when the warehouse connection was lost (a
# restart, a crash and its recovery): about half a minute in all.
RECORD_RETRY_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

END_RUN = """
update ops.job_runs set finished_at = %s, duration_s = %s, status = %s,
    error_class = %s, error_message = %s, rows_loaded = %s, details = %s
where run_id = %s
"""


def code_revision() -> str | None:
    """The git commit the code runs from, if it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def durable(conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    """Make this session's commits wait for the WAL flush.

    A warehouse may run with ``synchronous_commit = off`` (the embedded server does,
    for load speed); a crash then forgets the last commits. Run records must survive
    the crash they describe, and flushing a record also flushes every commit before it
    (the loads it records). Redshift has no such setting, and needs none.
    """
    if not is_redshift(conn):
        with conn.cursor() as cur:
            cur.execute("set synchronous_commit to on")
        if not conn.autocommit:
            conn.commit()
    return conn


def ensure_ops_tables(conn: psycopg2.extensions.connection) -> None:
    """Create the ops tables if they are missing (idempotent)."""
    if is_redshift(conn):
        _ensure_ops_tables_redshift(conn)
        return
    with conn.cursor() as cur:
        cur.execute("select 1 from pg_namespace where nspname = %s", (OPS_SCHEMA,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("create schema {}").format(sql.Identifier(OPS_SCHEMA)))
        for statement in OPS_TABLES:
            cur.execute(statement)
        cur.execute(
            MISSING_COLUMNS,
            {
                "tables": [table for table, _, _ in OPS_COLUMNS],
                "columns": [column for _, column, _ in OPS_COLUMNS],
            },
        )
        missing = set(cur.fetchall())
        for table, column, column_type in OPS_COLUMNS:
            if (table, column) in missing:
                cur.execute(
                    sql.SQL("alter table {} add column if not exists {} {}").format(
                        sql.Identifier(OPS_SCHEMA, table),
                        sql.Identifier(column),
                        sql.SQL(column_type),
                    )
                )
        for statement in OPS_INDEXES:
            cur.execute(statement)
    if not conn.autocommit:
        conn.commit()


def _ensure_ops_tables_redshift(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(OPS_SCHEMA)))
        for statement in REDSHIFT_OPS_TABLES:
            cur.execute(statement)
        cur.execute(OPS_COLUMNS_PRESENT)
        present = set(cur.fetchall())
        for table, column, column_type in OPS_COLUMNS:
            if (table, column) not in present:
                cur.execute(
                    sql.SQL("alter table {} add column {} {}").format(
                        sql.Identifier(OPS_SCHEMA, table),
                        sql.Identifier(column),
                        sql.SQL(column_type.replace("text", "character varying(65535)")),
                    )
                )
    if not conn.autocommit:
        conn.commit()


def write_record(
    connect_fn: ConnectFn,
    write: Callable[[psycopg2.extensions.connection], None],
    *,
    what: str,
    conn: psycopg2.extensions.connection | None = None,
) -> bool:
    """Write a run record, reconnecting with backoff when the connection was lost.

    A load that failed because the warehouse restarted must still record how it
    ended, or the run reads "running" and later "killed or crashed". Never raises:
    when the record cannot be written, one line on stderr says so and what was lost.
    Returns whether it was written. ``conn`` (if given) is tried first, then closed.
    """
    from tidewater.cli import warn
    from tidewater.db import is_transient
    from tidewater.exceptions import TidewaterError

    error: BaseException | None = None
    for delay in RECORD_RETRY_DELAYS:
        time.sleep(delay)
        try:
            if conn is None or conn.closed:
                conn = connect_fn()
                conn.autocommit = True
                durable(conn)
            write(conn)
            return True
        except (psycopg2.Error, TidewaterError) as exc:
            error = exc
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
            conn = None
            if not is_transient(exc):
                break
        finally:
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
                conn = None
    reason = " ".join(str(error).split()) or error.__class__.__name__
    warn(f"could not record {what} in the warehouse's ops tables: {reason}")
    return False


def _error_class(error: BaseException) -> str:
    """``transient`` or ``terminal``; an error that knows its class (a failed load run,
    whose tables each failed one way or the other) says so itself."""
    from tidewater.db import is_transient

    known = getattr(error, "transient", None)
    if isinstance(known, bool):
        return "transient" if known else "terminal"
    return "transient" if is_transient(error) else "terminal"


def new_run_id() -> str:
    """A fresh, short run id."""
    return uuid.uuid4().hex[:12]


def pipeline_run_id() -> str:
    """The id shared by every job of this invocation (``TIDEWATER_PIPELINE_RUN_ID``).

    Set once per process tree: an `invoke` process sets it before running its jobs
    (an Airflow task sets the Airflow run id); a job started on its own (``tidewater
    load``) gets an id of its own, exported here so whatever it starts shares it.
    """
    value = os.environ.get(PIPELINE_RUN_ENV, "").strip()
    if not value:
        value = new_run_id()
        os.environ[PIPELINE_RUN_ENV] = value
    return value


def _alive_pids() -> list[int]:
    import psutil

    return [process.pid for process in psutil.process_iter()]


@dataclass
class JobRun:
    """A job in progress; ``rows`` and ``details`` are written at the end."""

    run_id: str
    job: str
    started_at: datetime
    rows: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    pipeline_run_id: str = ""


@contextmanager
def record_job(
    connect_fn: ConnectFn, job: str, *, run_id: str | None = None, create: bool = True
) -> Iterator[JobRun]:
    """Record a job's start now and its end when the block exits.

    An exception marks the run failed with its class (transient or terminal) and
    message, and is re-raised. `SystemExit(0)` counts as success. With
    ``create=False`` nothing is created: if the ops tables do not exist yet, the
    job runs unrecorded (the roles tool must not create what it manages).
    """
    run = JobRun(
        run_id=run_id or new_run_id(),
        job=job,
        started_at=datetime.now(UTC),
        pipeline_run_id=pipeline_run_id(),
    )
    conn = connect_fn()
    conn.autocommit = True
    durable(conn)
    if not create:
        with conn.cursor() as cur:
            cur.execute("select to_regclass('ops.job_runs') is not null")
            exists = cur.fetchone()[0]
        if not exists:
            conn.close()
            yield run
            return
    ensure_ops_tables(conn)
    host = socket.gethostname()
    with conn.cursor() as cur:
        if is_redshift(conn):
            cur.execute(REDSHIFT_MARK_ORPHANS, {"host": host, "alive": tuple(_alive_pids())})
        else:
            cur.execute(MARK_ORPHANS, {"host": host, "alive": _alive_pids()})
        cur.execute(
            "insert into ops.job_runs (run_id, job, started_at, status, host, pid, code_revision,"
            " pipeline_run_id) values (%s, %s, %s, 'running', %s, %s, %s, %s)",
            (
                run.run_id,
                job,
                run.started_at,
                host,
                os.getpid(),
                code_revision(),
                run.pipeline_run_id,
            ),
        )
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        yield run
    except BaseException as exc:
        error = exc
        raise
    finally:
        status, error_class, message = run.status, None, None
        if status == "running":
            status = "succeeded"
        elif status == "failed" and error is None:
            error_class, message = "terminal", json.dumps(run.details, default=str)
        if error is not None and not (isinstance(error, SystemExit) and not error.code):
            status = "skipped" if run.status == "skipped" else "failed"
            error_class = _error_class(error)
            if isinstance(error, KeyboardInterrupt):
                message = "interrupted"
            else:
                message = " ".join(str(error).split()) or error.__class__.__name__
        run.status = status
        seconds = time.perf_counter() - started
        _emit_job_metrics(job, status, seconds, run.rows)
        params = (
            datetime.now(UTC),
            seconds,
            status,
            error_class,
            message,
            run.rows,
            json.dumps(run.details, default=str),
            run.run_id,
        )

        def write(connection: psycopg2.extensions.connection) -> None:
            with connection.cursor() as cur:
                cur.execute(END_RUN, params)

        write_record(connect_fn, write, what=f"the end of run {run.run_id} ({job})", conn=conn)


def _emit_job_metrics(job: str, status: str, seconds: float, rows: int | None) -> None:
    from tidewater.metrics import metric_name, metrics

    sink = metrics()
    sink.timing(metric_name("job", job, "duration"), seconds * 1000)
    sink.incr(metric_name("job", job, status))
    if rows is not None:
        sink.gauge(metric_name("job", job, "rows"), rows)


def record_table_loads(
    conn: psycopg2.extensions.connection, run_id: str, results: Sequence[Any]
) -> None:
    """One row per table load, in one batched insert."""
    rows = [
        (
            run_id,
            r.batch_id,
            r.source,
            r.table,
            r.mode,
            r.status,
            r.started_at,
            r.duration_s,
            r.rows_read,
            r.inserted,
            r.updated,
            r.deleted,
            r.reread,
            r.mark_before,
            r.mark_after,
            r.attempts,
            r.error_class,
            r.error,
            getattr(r, "source_held_s", None),
            getattr(r, "late_commit_safety", None),
        )
        for r in results
    ]
    if not rows:
        return
    from tidewater.metrics import metric_name, metrics

    sink = metrics()
    for r in results:
        name = ("load", r.source, r.table)
        sink.timing(metric_name(*name, "duration"), r.duration_s * 1000)
        sink.incr(metric_name(*name, r.status))
        sink.incr(metric_name(*name, "rows_read"), r.rows_read)
        sink.incr(metric_name(*name, "rows_written"), r.inserted + r.updated + r.deleted)
    insert = (
        "insert into ops.table_loads (run_id, batch_id, source_name, table_name, load_mode, "
        "status, started_at, duration_s, rows_read, rows_inserted, rows_updated, rows_deleted,"
        " rows_reread, mark_before, mark_after, attempts, error_class, error_message,"
        " source_held_s, late_commit_safety) "
    )
    if is_redshift(conn):
        _replace_run_rows_redshift(conn, "ops.table_loads", run_id, insert + "values %s", rows)
        return
    with conn.cursor() as cur:
        execute_values(cur, insert + "values %s on conflict do nothing", rows)
    if not conn.autocommit:
        conn.commit()


def _replace_run_rows_redshift(
    conn: psycopg2.extensions.connection,
    table: str,
    run_id: str,
    insert: str,
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Redshift has no `on conflict`: a run's rows are deleted and inserted again in
    one transaction (a record written twice, after a lost connection, stays one)."""
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            schema, name = table.split(".")
            cur.execute(
                sql.SQL("delete from {} where run_id = %s").format(sql.Identifier(schema, name)),
                (run_id,),
            )
            execute_values(cur, insert, [_redshift_values(row) for row in rows])
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = autocommit


def _redshift_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Timestamps as ISO text: psycopg2 binds datetimes with PostgreSQL's `::` casts."""
    return tuple(value.isoformat() if isinstance(value, datetime) else value for value in row)


def record_dbt_results(
    conn: psycopg2.extensions.connection, run_id: str, run_results: dict[str, Any]
) -> int:
    """One row per dbt model, test, seed and snapshot from ``run_results.json``."""
    rows = []
    for result in run_results.get("results", []):
        unique_id = result.get("unique_id", "")
        timing = {t.get("name"): t for t in result.get("timing", [])}
        execute = timing.get("execute") or {}
        rows.append(
            (
                run_id,
                unique_id,
                unique_id.split(".")[0],
                unique_id.split(".")[-1] if "." in unique_id else unique_id,
                result.get("status"),
                execute.get("started_at"),
                execute.get("completed_at"),
                result.get("execution_time"),
                (result.get("adapter_response") or {}).get("rows_affected"),
                (result.get("message") or "")[:2000] or None,
            )
        )
    insert = (
        "insert into ops.dbt_node_runs (run_id, unique_id, resource_type, node_name, "
        "status, started_at, completed_at, execution_time_s, rows_affected, message) "
    )
    if rows and is_redshift(conn):
        _replace_run_rows_redshift(conn, "ops.dbt_node_runs", run_id, insert + "values %s", rows)
    elif rows:
        with conn.cursor() as cur:
            execute_values(cur, insert + "values %s on conflict do nothing", rows)
        if not conn.autocommit:
            conn.commit()
    return len(rows)
