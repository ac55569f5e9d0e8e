"""One pipeline run at a time.

The main job is usually started by a timer; when a run outlasts the interval the
next one must not run beside it. The lock is a PostgreSQL session advisory lock
in the warehouse (not a lock file), held by the process that runs the chain
until it exits, so it is released even when that process is killed.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg2.extensions

from tidewater.db import connect
from tidewater.exceptions import TidewaterError
from tidewater.profile import Target
from tidewater.runs import ensure_ops_tables, pipeline_run_id

LOCK_KEY = "tidewater.pipeline"
# Loaders hold this advisory lock shared for each table's load transaction;
# a transform holds it exclusively while dbt reads raw (see `raw_settled`).
RAW_LOCK_KEY = "tidewater.raw"
_held: dict[str, psycopg2.extensions.connection] = {}


class PipelineBusy(TidewaterError):
    def __init__(self, holder: str, waited_s: float) -> None:
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"another pipeline run is in progress ({holder}); waited {waited_s:.0f}s. "
            "This run was recorded as skipped; it will catch up on the next one "
            "(raise --wait to queue behind long runs)"
        )


def _holder(conn: psycopg2.extensions.connection) -> str:
    with conn.cursor() as cur:
        cur.execute(
            "select coalesce(activity.application_name, '?') || ' pid ' || activity.pid "
            "|| ' since ' || to_char(activity.backend_start, 'YYYY-MM-DD HH24:MI:SS') "
            "from pg_locks as locks "
            "inner join pg_stat_activity as activity on activity.pid = locks.pid "
            "where locks.locktype = 'advisory' and locks.granted "
            "and locks.objid = hashtext(%s)::oid limit 1",
            (LOCK_KEY,),
        )
        row = cur.fetchone()
    return row[0] if row else "holder unknown"


def acquire(target: Target, *, job: str, wait_s: float = 0.0) -> None:
    """Take the pipeline lock for this process, waiting up to ``wait_s``.

    Idempotent within a process (`invoke load transform` takes it once). When the
    lock stays taken, records the run as skipped and raises `PipelineBusy`.
    """
    if target.dsn() in _held:
        return
    conn = connect(
        target,
        what=f"the warehouse (target {target.name})",
        autocommit=True,
        application_name=f"tidewater {job} (pipeline lock)",
    )
    started = time.monotonic()
    while True:
        with conn.cursor() as cur:
            cur.execute("select pg_try_advisory_lock(hashtext(%s))", (LOCK_KEY,))
            if cur.fetchone()[0]:
                _held[target.dsn()] = conn
                return
        waited = time.monotonic() - started
        if waited >= wait_s:
            holder = _holder(conn)
            _record_skipped(conn, job, holder)
            conn.close()
            raise PipelineBusy(holder, waited)
        time.sleep(min(1.0, max(0.05, wait_s - waited)))


def release(target: Target) -> None:
    conn = _held.pop(target.dsn(), None)
    if conn is not None:
        conn.close()  # closing the session releases its advisory locks


def _record_skipped(conn: psycopg2.extensions.connection, job: str, holder: str) -> None:
    ensure_ops_tables(conn)
    now = datetime.now(UTC)
    with conn.cursor() as cur:
        cur.execute(
            "insert into ops.job_runs (run_id, job, started_at, finished_at, duration_s, status, "
            "error_class, error_message, host, pid, pipeline_run_id) values (%s, %s, %s, %s, 0, "
            "'skipped', 'transient', %s, %s, %s, %s)",
            (
                uuid.uuid4().hex[:12],
                job,
                now,
                now,
                f"another pipeline run is in progress ({holder})",
                socket.gethostname(),
                os.getpid(),
                pipeline_run_id(),
            ),
        )


@contextmanager
def raw_settled(target: Target) -> Iterator[None]:
    """Keep loads out of raw while dbt reads it.

    Waits for every load transaction in flight to commit, and makes new ones
    wait, so that when dbt runs every raw row with a `_loaded_at` at or below
    what it sees is visible: incremental models can start right after the
    newest `_loaded_at` they hold (no time window re-reads the previous load).
    PostgreSQL only; Redshift has no advisory locks (use `lookback_minutes`).
    """
    if target.type != "postgres":
        yield
        return
    conn = connect(
        target,
        what=f"the warehouse (target {target.name})",
        autocommit=True,
        application_name="tidewater transform (raw lock)",
    )
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(hashtext(%s))", (RAW_LOCK_KEY,))
        yield
    finally:
        conn.close()  # closing the session releases the lock
