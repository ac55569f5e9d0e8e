"""One pipeline run at a time, and no transform reading raw while a load writes it.

The main job is usually started by a timer; when a run outlasts the interval the
next one must not run beside it. The locks are table locks on small tables in
``ops`` (not advisory locks, which any login may take, and not lock files):

- ``ops.pipeline_lock``: the chain holds it ``EXCLUSIVE`` for the whole run, in a
  transaction of its own connection, so it is released even when the process is
  killed.
- ``ops.raw_lock``: each table's load transaction holds it ``SHARE`` (loads run
  side by side); a transform holds it ``EXCLUSIVE`` while dbt reads raw.
- ``ops.table_locks``: one row per raw table, row-locked by its load (two loads of
  one table never run at once).
- ``ops.ddl_lock``: ``SHARE ROW EXCLUSIVE`` while a run creates raw schemas.

Every mode used needs ``UPDATE`` (or ``DELETE``/``TRUNCATE``/``MAINTAIN``) on the table,
which only the ETL side has: a reader of ``ops`` may take ``ACCESS SHARE`` (by
reading it), which conflicts with none of them, so a dashboard or an analyst can
neither stop nor hang the pipeline. Every wait is bounded (``lock_timeout``), and
the message names who holds the lock.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from tidewater.db import connect, is_redshift
from tidewater.exceptions import TidewaterError
from tidewater.profile import Target
from tidewater.runs import OPS_SCHEMA, ensure_ops_tables, pipeline_run_id

PIPELINE_LOCK = "pipeline_lock"
RAW_LOCK = "raw_lock"
TABLE_LOCKS = "table_locks"
DDL_LOCK = "ddl_lock"
LockMode = Literal["SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE"]
# How long a load or a transform waits for the raw lock or a table's lock.
DEFAULT_LOCK_TIMEOUT_S = 600.0
LOCK_TABLES = (
    sql.SQL(
        "create table if not exists {}.{} (note text); comment on table {}.{} is "
        "'tidewater: locked EXCLUSIVE by the pipeline run in progress; never holds rows'"
    ).format(*[sql.Identifier(OPS_SCHEMA), sql.Identifier(PIPELINE_LOCK)] * 2),
    sql.SQL(
        "create table if not exists {}.{} (note text); comment on table {}.{} is "
        "'tidewater: locked SHARE by each table load, EXCLUSIVE by a transform; never holds rows'"
    ).format(*[sql.Identifier(OPS_SCHEMA), sql.Identifier(RAW_LOCK)] * 2),
    sql.SQL(
        "create table if not exists {}.{} (note text); comment on table {}.{} is "
        "'tidewater: locked SHARE ROW EXCLUSIVE while raw schemas are created; never holds rows'"
    ).format(*[sql.Identifier(OPS_SCHEMA), sql.Identifier(DDL_LOCK)] * 2),
    sql.SQL(
        "create table if not exists {}.{} (raw_table text primary key, "
        "locked_at timestamptz not null, locked_by text not null)"
    ).format(sql.Identifier(OPS_SCHEMA), sql.Identifier(TABLE_LOCKS)),
)
# Who holds a lock on a relation (other than us). A reader without
# pg_read_all_stats sees other users' sessions without their details: "unknown".
LOCK_HOLDERS = """
select
    coalesce(activity.usename, 'unknown user'),
    coalesce(nullif(activity.application_name, ''), 'unknown application'),
    locks.pid,
    coalesce(to_char(activity.xact_start at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')
        || ' UTC', 'an unknown time')
from pg_locks as locks
left join pg_stat_activity as activity on activity.pid = locks.pid
where locks.locktype = 'relation'
    and locks.relation = to_regclass(%(relation)s)
    and locks.granted
    and locks.pid <> pg_backend_pid()
    and locks.mode = any(%(modes)s)
order by activity.xact_start nulls last, locks.pid
"""
# A load's row in ops.table_locks (the lock two loads of one raw table take in turn).
TAKE_TABLE_LOAD = sql.SQL(
    "insert into {} as locks (raw_table, locked_at, locked_by) "
    "values (%(tidewater_raw_table)s, now(), current_user) on conflict (raw_table) do update "
    "set locked_at = excluded.locked_at, locked_by = excluded.locked_by"
).format(sql.Identifier(OPS_SCHEMA, TABLE_LOCKS))
# Both locks of a load in one round trip: the session's lock_timeout is kept in a
# transaction-local setting of our own while the locks are waited for, then restored.
HOLD_LOAD = """
{begin}savepoint tidewater_lock;
select
    set_config('tidewater.lock_timeout', current_setting('lock_timeout'), true),
    set_config('lock_timeout', %(tidewater_lock_timeout)s, true);
lock table {raw_lock} in share mode{nowait};
{take_table_load};
select set_config('lock_timeout', current_setting('tidewater.lock_timeout'), true);
release savepoint tidewater_lock;
{then}
"""
_held: dict[str, psycopg2.extensions.connection] = {}
# Connections that found the lock tables in place (a table created in a transaction
# that may still roll back is not remembered): a load or event batch per transaction
# then checks once per connection, not once per transaction.
_have_lock_tables: weakref.WeakSet[psycopg2.extensions.connection] = weakref.WeakSet()

# Redshift (server_version 8.0.2) has no lock modes, no NOWAIT, no lock_timeout, no
# savepoints, no row locks and no pg_locks: its `LOCK` is always exclusive (readers and
# writers of the table wait), the wait is bounded by `statement_timeout` around it,
# and the holders are read from svv_transactions.
REDSHIFT_LOCK_TABLES = tuple(
    sql.SQL("create table if not exists {}.{} (note character varying(256))").format(
        sql.Identifier(OPS_SCHEMA), sql.Identifier(name)
    )
    for name in (PIPELINE_LOCK, RAW_LOCK, DDL_LOCK)
)
REDSHIFT_LOCK_HOLDERS = """
select
    coalesce(trim(transactions.txn_owner), 'unknown user'),
    transactions.pid,
    coalesce(to_char(transactions.txn_start, 'YYYY-MM-DD HH24:MI:SS') || ' UTC',
        'an unknown time')
from svv_transactions as transactions
where transactions.relation = (
    select relation.oid
    from pg_class as relation
    inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
    where namespace.nspname = %(schema)s and relation.relname = %(table)s
)
    and transactions.granted
    and transactions.pid <> pg_backend_pid()
order by transactions.txn_start, transactions.pid
"""


def describe_holders_redshift(cur: psycopg2.extensions.cursor, schema: str, table: str) -> str:
    """Who holds a lock on ``schema.table`` on Redshift (svv_transactions). Runs after
    the waiting transaction was rolled back (Redshift has no savepoints)."""
    try:
        cur.execute(REDSHIFT_LOCK_HOLDERS, {"schema": schema, "table": table})
        rows = cur.fetchall()
    except psycopg2.Error:
        cur.connection.rollback()
        rows = []
    if not rows:
        return "held by an unknown session"
    return "held by " + "; ".join(f"{user} (pid {pid}) since {since}" for user, pid, since in rows)


def lock_redshift(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    *,
    timeout_s: float,
    what: str,
) -> None:
    """Redshift's ``LOCK schema.table`` in the current transaction, held until it ends.

    Redshift's LOCK has no modes and no timeout: it is always exclusive, so other
    sessions' reads and writes of the table wait too, and it would wait for the
    holder forever. The wait is bounded by ``statement_timeout`` (at least 1 ms, so
    a wait of 0 fails at once); when it runs out the whole transaction is rolled
    back (no savepoints) and `LockTimeout` names the holders.
    """
    started = time.monotonic()
    cur.execute("select current_setting('statement_timeout')")
    previous = cur.fetchone()[0]
    cur.execute(sql.SQL("set statement_timeout to {}").format(sql.Literal(_wait_ms(timeout_s))))
    try:
        cur.execute(sql.SQL("lock {}").format(sql.Identifier(schema, table)))
    except psycopg2.errors.QueryCanceled:
        cur.connection.rollback()
        holder = describe_holders_redshift(cur, schema, table)
        raise LockTimeout(what, holder, time.monotonic() - started) from None
    cur.execute(sql.SQL("set statement_timeout to {}").format(sql.Literal(previous)))


def ensure_lock_tables_redshift(cur: psycopg2.extensions.cursor) -> None:
    """The lock tables in ``ops`` on Redshift (a load locks its raw table itself)."""
    cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(OPS_SCHEMA)))
    for statement in REDSHIFT_LOCK_TABLES:
        cur.execute(statement)


class PipelineBusy(TidewaterError):
    def __init__(self, holder: str, waited_s: float) -> None:
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"another pipeline run is in progress ({holder}); waited {waited_s:.0f}s. "
            "This run was recorded as skipped; it will catch up on the next one "
            "(raise --wait to queue behind long runs)"
        )


class LockTimeout(TidewaterError):
    """A bounded wait for one of the pipeline's locks ran out. Transient: the
    loaders retry it (``pgcode`` is PostgreSQL's lock_not_available)."""

    pgcode = "55P03"

    def __init__(self, lock: str, holder: str, waited_s: float) -> None:
        self.lock = lock
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(
            f"gave up waiting for {lock} after {waited_s:.0f}s ({holder}); it is released "
            "when that run ends; raise TIDEWATER_LOCK_TIMEOUT to wait longer"
        )


def lock_timeout_s() -> float:
    """``TIDEWATER_LOCK_TIMEOUT`` (seconds), else 600."""
    value = os.environ.get("TIDEWATER_LOCK_TIMEOUT")
    try:
        return float(value) if value else DEFAULT_LOCK_TIMEOUT_S
    except ValueError:
        raise TidewaterError(
            f"TIDEWATER_LOCK_TIMEOUT={value!r} is not a number of seconds; fix or unset it"
        ) from None


def _wait_ms(timeout_s: float) -> int:
    """A wait in whole milliseconds for ``lock_timeout``/``statement_timeout``, at least
    1: to PostgreSQL 0 means no limit at all, to ``TIDEWATER_LOCK_TIMEOUT`` no wait."""
    return max(1, int(timeout_s * 1000))


def _qualified(table: str) -> str:
    return f"{OPS_SCHEMA}.{table}"


def describe_holders(
    cur: psycopg2.extensions.cursor, table: str, modes: tuple[str, ...] = ("ExclusiveLock",)
) -> str:
    """Who holds ``ops.<table>`` in one of ``modes``: user, application, pid and since
    when (the start of the holder's transaction, which took the lock)."""
    cur.execute(LOCK_HOLDERS, {"relation": _qualified(table), "modes": list(modes)})
    rows = cur.fetchall()
    if not rows:
        return "held by an unknown session"
    described = [f"{user} ({app}, pid {pid}) since {since}" for user, app, pid, since in rows]
    return "held by " + "; ".join(described)


def ensure_lock_tables(cur: psycopg2.extensions.cursor) -> None:
    """Create the lock tables in ``ops`` if missing. Inside a transaction, a
    concurrent creator is tolerated (the table is there once it commits)."""
    if is_redshift(cur.connection):
        ensure_lock_tables_redshift(cur)
        return
    if cur.connection in _have_lock_tables:
        return
    cur.execute(
        "select count(*) from unnest(%s::text[]) as name where to_regclass(name) is null",
        ([_qualified(name) for name in (PIPELINE_LOCK, RAW_LOCK, TABLE_LOCKS, DDL_LOCK)],),
    )
    if not cur.fetchone()[0]:
        _have_lock_tables.add(cur.connection)
        return
    in_transaction = not cur.connection.autocommit
    statements: list[sql.Composable] = list(LOCK_TABLES)
    cur.execute("select 1 from pg_namespace where nspname = %s", (OPS_SCHEMA,))
    if cur.fetchone() is None:
        statements.insert(
            0, sql.SQL("create schema if not exists {}").format(sql.Identifier(OPS_SCHEMA))
        )
    for statement in statements:
        if in_transaction:
            cur.execute("savepoint tidewater_lock_tables")
        try:
            cur.execute(statement)
        except (psycopg2.errors.UniqueViolation, psycopg2.errors.DuplicateTable):
            if not in_transaction:
                continue
            cur.execute("rollback to savepoint tidewater_lock_tables")
        if in_transaction:
            cur.execute("release savepoint tidewater_lock_tables")


def _take(
    cur: psycopg2.extensions.cursor,
    table: str,
    mode: LockMode,
    *,
    timeout_s: float,
    what: str,
) -> None:
    """``LOCK TABLE ops.<table> IN <mode> MODE`` in the current transaction, waiting at
    most ``timeout_s`` (0: not at all); raises `LockTimeout` naming the holder.
    On Redshift: `lock_redshift` (no modes: exclusive)."""
    if is_redshift(cur.connection):
        lock_redshift(cur, OPS_SCHEMA, table, timeout_s=timeout_s, what=what)
        return
    started = time.monotonic()
    # Round trips are what a lock per batch costs: several statements share one.
    cur.execute("savepoint tidewater_lock; select current_setting('lock_timeout')")
    previous = cur.fetchone()[0]
    statement = sql.SQL("{}lock table {}.{} in {} mode{}").format(
        sql.SQL("select set_config('lock_timeout', %s, true); " if timeout_s > 0 else ""),
        sql.Identifier(OPS_SCHEMA),
        sql.Identifier(table),
        sql.SQL(mode),
        sql.SQL("" if timeout_s > 0 else " nowait"),
    )
    try:
        cur.execute(statement, (f"{_wait_ms(timeout_s)}ms",) if timeout_s > 0 else None)
    except psycopg2.errors.LockNotAvailable:
        cur.execute("rollback to savepoint tidewater_lock")
        conflicting = {
            "SHARE": ("ExclusiveLock",),
            "SHARE ROW EXCLUSIVE": ("ShareRowExclusiveLock",),
            "EXCLUSIVE": ("ShareLock", "ExclusiveLock"),
        }[mode]
        holder = describe_holders(cur, table, conflicting)
        raise LockTimeout(what, holder, time.monotonic() - started) from None
    cur.execute(
        "select set_config('lock_timeout', %s, true); release savepoint tidewater_lock",
        (previous,),
    )


def hold_raw_shared(cur: psycopg2.extensions.cursor) -> None:
    """For a table's load transaction: no transform reads raw until it commits
    (see `raw_settled`). Waits at most ``TIDEWATER_LOCK_TIMEOUT`` for a transform."""
    ensure_lock_tables(cur)
    _take(cur, RAW_LOCK, "SHARE", timeout_s=lock_timeout_s(), what="the raw lock (ops.raw_lock)")


def hold_ddl(cur: psycopg2.extensions.cursor) -> None:
    """For a transaction that creates raw schemas and the mark table: one at a time."""
    ensure_lock_tables(cur)
    _take(
        cur,
        DDL_LOCK,
        "SHARE ROW EXCLUSIVE",
        timeout_s=lock_timeout_s(),
        what="the schema lock (ops.ddl_lock)",
    )


def hold_table_load(cur: psycopg2.extensions.cursor, raw_table: str) -> None:
    """For a table's load transaction: two loads of one raw table never run at once
    (a row lock in ``ops.table_locks``, which only the ETL side may write)."""
    ensure_lock_tables(cur)
    started = time.monotonic()
    cur.execute("savepoint tidewater_lock; select current_setting('lock_timeout')")
    previous = cur.fetchone()[0]
    try:
        cur.execute(
            sql.SQL(
                "select set_config('lock_timeout', %(tidewater_lock_timeout)s, true); {}"
            ).format(TAKE_TABLE_LOAD),
            {
                "tidewater_lock_timeout": f"{_wait_ms(lock_timeout_s())}ms",
                "tidewater_raw_table": raw_table,
            },
        )
    except psycopg2.errors.LockNotAvailable:
        cur.execute("rollback to savepoint tidewater_lock")
        raise _table_load_timeout(cur, raw_table, started) from None
    cur.execute(
        "select set_config('lock_timeout', %s, true); release savepoint tidewater_lock",
        (previous,),
    )


def _table_load_timeout(
    cur: psycopg2.extensions.cursor, raw_table: str, started: float
) -> LockTimeout:
    # A row lock shows in pg_locks only as its table's lock: name every loader.
    holder = describe_holders(cur, TABLE_LOCKS, ("RowExclusiveLock",))
    return LockTimeout(
        f"the load lock of {raw_table} (ops.table_locks)",
        holder.replace("held by", "held by one of", 1),
        time.monotonic() - started,
    )


def hold_load(
    cur: psycopg2.extensions.cursor,
    raw_table: str,
    *,
    then: sql.Composable | None = None,
    params: Mapping[str, Any] | None = None,
    begin: bool = False,
) -> None:
    """`hold_raw_shared` and `hold_table_load` in ONE round trip (a batch of events
    takes them every few milliseconds), followed in the same round trip by ``then``
    (named ``params``), whose rows the cursor then holds; ``begin``: open the
    transaction in that round trip too (on a connection in autocommit mode). Waits
    as those do and raises the same `LockTimeout` (the transaction left open, rolled
    back to before the locks); the previous ``lock_timeout`` is restored."""
    if is_redshift(cur.connection):
        if begin:
            cur.execute("begin")
        hold_raw_shared(cur)
        hold_table_load(cur, raw_table)
        if then is not None:
            cur.execute(then, params)
        return
    ensure_lock_tables(cur)
    timeout_s = lock_timeout_s()
    started = time.monotonic()
    statement = sql.SQL(HOLD_LOAD).format(
        begin=sql.SQL("begin;\n" if begin else ""),
        raw_lock=sql.Identifier(OPS_SCHEMA, RAW_LOCK),
        nowait=sql.SQL("" if timeout_s > 0 else " nowait"),
        take_table_load=TAKE_TABLE_LOAD,
        then=then if then is not None else sql.SQL(""),
    )
    values = {
        **(params or {}),
        "tidewater_lock_timeout": f"{_wait_ms(timeout_s)}ms",
        "tidewater_raw_table": raw_table,
    }
    try:
        cur.execute(statement, values)
    except psycopg2.errors.LockNotAvailable as exc:
        cur.execute("rollback to savepoint tidewater_lock")
        if TABLE_LOCKS in (exc.diag.context or ""):
            raise _table_load_timeout(cur, raw_table, started) from None
        holder = describe_holders(cur, RAW_LOCK, ("ExclusiveLock",))
        raise LockTimeout(
            "the raw lock (ops.raw_lock)", holder, time.monotonic() - started
        ) from None


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
    try:
        ensure_ops_tables(conn)
        with conn.cursor() as cur:
            ensure_lock_tables(cur)
        conn.autocommit = False
        with conn.cursor() as cur:
            # This transaction stays open (idle) for the whole run: it holds the lock.
            if not is_redshift(cur.connection):  # Redshift has no idle timeout to lift
                cur.execute("set idle_in_transaction_session_timeout = 0")
            cur.execute("set statement_timeout = 0")
            _take(cur, PIPELINE_LOCK, "EXCLUSIVE", timeout_s=wait_s, what="the pipeline lock")
    except LockTimeout as busy:
        conn.rollback()
        conn.autocommit = True
        _record_skipped(conn, job, busy.holder)
        conn.close()
        raise PipelineBusy(busy.holder, time.monotonic() - started) from None
    except BaseException:
        conn.close()
        raise
    _held[target.dsn()] = conn


def holds(target: Target) -> bool:
    """Whether this process holds the pipeline lock of the target's warehouse."""
    return target.dsn() in _held


def release(target: Target) -> None:
    conn = _held.pop(target.dsn(), None)
    if conn is not None:
        conn.close()  # ending the session ends its transaction and its locks


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

    Waits (at most ``TIDEWATER_LOCK_TIMEOUT``) for every load transaction in flight
    to commit, and makes new ones wait, so that when dbt runs every raw row with a
    `_loaded_at` at or below what it sees is visible: incremental models can start
    right after the newest `_loaded_at` they hold (no time window re-reads the
    previous load). PostgreSQL only; Redshift reads a lookback window instead
    (``lookback_minutes``). A login that may not take the lock (an analyst's dev
    build) reads raw as it is.
    """
    if target.type != "postgres":
        yield
        return
    conn = connect(
        target,
        what=f"the warehouse (target {target.name})",
        application_name="tidewater transform (raw lock)",
    )
    try:
        with conn.cursor() as cur:
            cur.execute("set idle_in_transaction_session_timeout = 0")
            cur.execute(
                "select exists (select 1 from pg_namespace where nspname = %s "
                "and has_schema_privilege(oid, 'CREATE'))",
                (OPS_SCHEMA,),
            )
            if cur.fetchone()[0]:
                ensure_lock_tables(cur)
            cur.execute(
                "select to_regclass(%(name)s) is not null "
                "and has_table_privilege(to_regclass(%(name)s), 'UPDATE')",
                {"name": _qualified(RAW_LOCK)},
            )
            if cur.fetchone()[0]:
                _take(
                    cur,
                    RAW_LOCK,
                    "EXCLUSIVE",
                    timeout_s=lock_timeout_s(),
                    what="the raw lock (ops.raw_lock)",
                )
        yield
    finally:
        conn.close()  # ending the session ends its transaction and the lock
