"""Reading from the source: one consistent snapshot per table, queries built as
select → filter on the cursor, and rows streamed out with COPY."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import IO

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from loaders.catalog import Column
from loaders.state import OpenTransaction

# Read before the snapshot is taken (see `open_snapshot`), in one statement: every
# transaction open in this database, by its virtual transaction id, from pg_locks
# (readable by every login: each transaction holds a lock on its own virtual id from
# its first statement, whether or not it has written yet), with its start time where
# pg_stat_activity shows it (the login's own sessions, or every session with
# pg_read_all_stats). Prepared transactions have no virtual id; they are listed by
# their global id. ``statement_timestamp()`` is taken before any of it is read.
OPEN_TRANSACTIONS = """
with this_database as (
    select oid from pg_database where datname = current_database()
),

owners as (
    select distinct on (locks.virtualtransaction)
        locks.virtualtransaction as transaction_id,
        locks.pid
    from pg_locks as locks
    where locks.locktype = 'virtualxid'
        and locks.granted
        and locks.virtualxid = locks.virtualtransaction
        and locks.pid is distinct from pg_backend_pid()
),

open_transactions as (
    select owners.transaction_id, activity.xact_start
    from owners
    left join pg_stat_activity as activity on owners.pid = activity.pid
    -- a backend of this database (or one that just appeared) with a user: not
    -- autovacuum, which writes no rows
    where activity.pid is null
        or (
            activity.datid = (select oid from this_database)
            and activity.usesysid is not null
        )
    union all
    select 'prepared:' || prepared.gid, null
    from pg_prepared_xacts as prepared
    where prepared.database = current_database()
)

select
    statement_timestamp() as looked_at,
    pg_is_in_recovery() as in_recovery,
    coalesce(
        (select json_agg(json_build_array(transaction_id, xact_start)) from open_transactions),
        '[]'
    ) as open_transactions
"""

# When pg_locks cannot be read (a hardened server revoked it from PUBLIC): the start of
# the oldest open transaction that pg_stat_activity shows, and how many it hides.
OLDEST_OPEN_TRANSACTION = """
select
    statement_timestamp() as looked_at,
    pg_is_in_recovery() as in_recovery,
    min(xact_start) filter (where pid <> pg_backend_pid()) as oldest_open_start,
    count(*) filter (
        where query = '<insufficient privilege>' and usesysid is not null
    ) as hidden_sessions
from pg_stat_activity
where datid = (select oid from pg_database where datname = current_database())
"""

# A transaction's start time is stamped a moment before its virtual id shows in
# pg_locks (microseconds, unless its backend is descheduled right then); bounds
# derived from "not open at a look" are moved back by this much.
CLOCK_MARGIN = timedelta(milliseconds=250)

Safety = str  # 'proven', 'held: …', 'unproven: …', 'off'


@dataclass(frozen=True)
class Snapshot:
    """What was known about concurrent writers when the read snapshot was taken.

    ``open_transactions`` maps every transaction open in the database at
    ``looked_at`` (just before the snapshot) to its start time, None where it is not
    shown. ``complete`` is False when the list could not be read (pg_locks revoked,
    or the source is a standby, whose primary's transactions cannot be seen);
    ``incomplete_reason`` says why.
    """

    looked_at: datetime
    open_transactions: dict[str, datetime | None]
    complete: bool = True
    incomplete_reason: str | None = None
    source_deletes: int | None = None

    @property
    def hidden(self) -> int:
        return sum(1 for start in self.open_transactions.values() if start is None)

    @property
    def safe_from(self) -> datetime:
        """The lowest start among the open transactions that show one (the look's
        time if none): the pg_read_all_stats view of concurrent writers."""
        starts = [start for start in self.open_transactions.values() if start is not None]
        return min([self.looked_at, *starts])


@dataclass(frozen=True)
class ReadWindow:
    """Where a read starts: ``cursor >= read_from``, or ``cursor > read_from`` when
    ``after``; None reads everything."""

    read_from: datetime | None
    after: bool = False


ALL_ROWS = ReadWindow(None)


@dataclass(frozen=True)
class NextRead:
    """The plan for the next read of a table, recorded with its mark."""

    window: ReadWindow
    looked_at: datetime | None
    open_transactions: tuple[OpenTransaction, ...]
    safety: Safety


def configure_session(
    conn: psycopg2.extensions.connection,
    *,
    lock_timeout: timedelta | None,
    statement_timeout: timedelta | None,
) -> None:
    """Session settings of every source connection: portable output formats, and
    timeouts, so a read never queues behind an application's exclusive lock (and
    makes everyone behind it wait) and never runs unbounded."""
    with conn.cursor() as cur:
        cur.execute("set timezone = 'UTC'")
        cur.execute("set datestyle = 'ISO, YMD'")
        cur.execute("set intervalstyle = 'postgres'")
        cur.execute("set extra_float_digits = 3")
        settings = {
            "lock_timeout": lock_timeout,
            "statement_timeout": statement_timeout,
            # a loader that stops between statements never keeps the source open
            "idle_in_transaction_session_timeout": statement_timeout,
        }
        for name, value in settings.items():
            milliseconds = int(value.total_seconds() * 1000) if value else 0
            cur.execute("select set_config(%s, %s, false)", (name, f"{milliseconds}ms"))


def look_at_open_transactions(cur: psycopg2.extensions.cursor) -> Snapshot:
    """Every transaction open in the source database now (autocommit; see
    OPEN_TRANSACTIONS). Falls back to pg_stat_activity alone where pg_locks is
    revoked; the result then says it is incomplete."""
    try:
        cur.execute(OPEN_TRANSACTIONS)
    except psycopg2.errors.InsufficientPrivilege:
        cur.execute(OLDEST_OPEN_TRANSACTION)
        looked_at, in_recovery, oldest, hidden = cur.fetchone()
        opened = {"oldest": oldest} if oldest is not None else {}
        opened.update({f"hidden:{n}": None for n in range(hidden)})
        # Every session shows its start: the look is complete without pg_locks.
        return Snapshot(
            looked_at,
            opened,
            complete=not hidden and not in_recovery,
            incomplete_reason=_STANDBY
            if in_recovery
            else "pg_locks cannot be read by the source login and pg_stat_activity hides "
            f"{hidden} session(s) of other logins (grant it select on pg_locks, or "
            "pg_read_all_stats)"
            if hidden
            else None,
        )
    looked_at, in_recovery, rows = cur.fetchone()
    opened = {
        str(transaction_id): _timestamp(start) if start is not None else None
        for transaction_id, start in rows
    }
    if in_recovery:
        return Snapshot(
            looked_at,
            opened,
            complete=False,
            incomplete_reason=_STANDBY,
        )
    return Snapshot(looked_at, opened)


_STANDBY = (
    "the source is a standby: transactions still open on its primary cannot be seen "
    "(point the loader at the primary, or accept the risk with "
    "late_commit_protection: false and a lag)"
)


def _timestamp(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def open_snapshot(
    conn: psycopg2.extensions.connection,
    *,
    relation: tuple[str, str] | None = None,
    lock_timeout: timedelta | None = None,
    statement_timeout: timedelta | None = None,
) -> Snapshot:
    """Look at open transactions, then start a repeatable-read, read-only transaction.

    The look happens first, in its own statement outside the snapshot, so a writer
    that commits in between is either seen as open or is visible in the snapshot.
    With ``relation``, the table's delete counter is read there too: a delete it
    counts has ended before the snapshot, so a later run never skips one.
    """
    conn.autocommit = True
    with conn.cursor() as cur:
        configure_session(conn, lock_timeout=lock_timeout, statement_timeout=statement_timeout)
        snapshot = look_at_open_transactions(cur)
        counter = None
        if relation is not None:
            with contextlib.suppress(psycopg2.Error):
                counter = deletes_counter(cur, *relation)
    conn.autocommit = False
    conn.set_session(
        isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True
    )
    with conn.cursor() as cur:
        cur.execute("select 1")  # takes the snapshot now
    return replace(snapshot, source_deletes=counter)


def plan_next_read(
    *,
    mark: datetime | None,
    snapshot: Snapshot,
    this_read: ReadWindow,
    previous_look: datetime | None,
    previously_open: tuple[OpenTransaction, ...],
    lag: timedelta,
    protect: bool,
) -> NextRead:
    """Where the read after this one starts, and why that loses no late commit.

    The argument. A row's cursor is stamped by the database when the row is
    written (``now()`` in a default or trigger: the writing transaction's start),
    so it is at or above the start of the transaction that wrote it. A row missing
    from this read's snapshot was written by a transaction T that had not committed
    when the snapshot was taken. Either T was open at the look just before the
    snapshot (``snapshot.open_transactions``: pg_locks lists every open
    transaction, with or without a transaction id, to every login), or T started
    after the look, so its rows carry cursor values at or above ``looked_at``. For
    each open T a lower bound ``since`` is known:

    - its start, where pg_stat_activity shows it (the login's own sessions, or all
      of them with pg_read_all_stats);
    - else, if T was already open at the previous read, the bound recorded then;
    - else T was not open at the previous read's look, so it started after it:
      the previous look's time;
    - else (no earlier read recorded a look: a first load, or the first run after
      an upgrade) nothing bounds it.

    ``bound`` = min(``looked_at``, every ``since``) minus `CLOCK_MARGIN` (a
    transaction's start is stamped a moment before its virtual id shows in
    pg_locks) is the lowest cursor value any row not yet visible can carry. The
    next read starts at min(mark, bound) - lag, inclusive. T stays in the record
    until a look no longer finds it (it ended: committed rows are then visible to
    the next snapshot, which still starts at or below its bound). The virtual ids
    are never reused while the server runs; after a restart a reused id inherits an
    older bound, which only reads more.

    Ties: when the bound lies above the mark (no open transaction could still write
    a row at the mark's value), every row at the mark is in this read, and the next
    read starts strictly after it, so a tie is re-read only while it can still grow.

    Where something is unbounded — a transaction of another login open since before
    any recorded read, or a look that cannot see every transaction (pg_locks
    revoked, a standby source) — the next read starts where this one did (the mark
    is held, never advanced) and the safety says so: 'held' when that is provably
    enough (this read read everything), 'unproven: …' otherwise.

    Args:
        mark: the largest cursor value loaded so far.
        snapshot: the look taken just before this read's snapshot.
        this_read: where this read started.
        previous_look: when the previous recorded read looked (None: no record).
        previously_open: the transactions open at that look, with their bounds.
        lag: extra margin for cursors set by application clocks.
        protect: late-commit protection (off: start at the mark minus lag).
    """
    if not protect:
        window = ReadWindow(mark - lag if mark is not None else None)
        return NextRead(window, None, (), "off")
    known = {t.transaction_id: t.since for t in previously_open}
    opened = []
    for transaction_id, start in sorted(snapshot.open_transactions.items()):
        if start is not None:
            since: datetime | None = start
        elif transaction_id in known:
            since = known[transaction_id]
        elif previous_look is not None and snapshot.complete:
            since = previous_look
        else:
            since = None
        opened.append(OpenTransaction(transaction_id, since))
    looked_at = snapshot.looked_at if snapshot.complete else None
    unbounded = [t for t in opened if t.since is None]
    if not snapshot.complete or unbounded:
        if snapshot.incomplete_reason:
            reason = snapshot.incomplete_reason
        elif not snapshot.complete:
            reason = "the open transactions could not all be seen"
        else:
            reason = (
                f"{len(unbounded)} transaction(s) of other logins were open before any "
                "recorded read and their start is hidden (grant pg_read_all_stats to the "
                "source login to see it)"
            )
        where = (
            "from the beginning"
            if this_read.read_from is None
            else f"at {this_read.read_from.isoformat()}"
        )
        if this_read.read_from is None and snapshot.complete:
            safety = f"held: {reason}; the next read starts {where} again"
        else:
            safety = f"unproven: {reason}; the next read stays {where}"
        return NextRead(this_read, looked_at, tuple(opened), safety)
    if mark is None:
        return NextRead(ReadWindow(None), looked_at, tuple(opened), "proven")
    bound = min([snapshot.looked_at, *(t.since for t in opened if t.since)]) - CLOCK_MARGIN
    if bound - lag > mark:
        return NextRead(ReadWindow(mark, after=True), looked_at, tuple(opened), "proven")
    window = ReadWindow(min(mark, bound) - lag)
    hidden = [t for t in opened if snapshot.open_transactions[t.transaction_id] is None]
    if hidden and window.read_from is not None and window.read_from < mark - lag:
        safety = (
            f"held: {len(hidden)} transaction(s) of other logins were open (start hidden); "
            f"the next read starts at {window.read_from.isoformat()}, where the earliest of "
            "them could have written"
        )
    else:
        safety = "proven"
    return NextRead(window, looked_at, tuple(opened), safety)


def next_read_from(
    *, mark: datetime | None, snapshot: Snapshot, lag: timedelta, protect: bool
) -> datetime | None:
    """Where the read after this one starts (inclusive), from this read's look alone:
    for warehouses that keep no record of earlier looks (Redshift)."""
    if mark is None:
        return None
    start = min(mark, snapshot.safe_from) if protect else mark
    return start - lag


def select_columns(columns: Sequence[Column]) -> sql.Composed:
    """The select list: user-defined types are cast to their portable form."""
    parts = []
    for column in columns:
        identifier = sql.Identifier(column.name)
        if column.cast_to_text:
            parts.append(
                sql.SQL("cast({} as {}) as {}").format(
                    identifier, sql.SQL(column.warehouse_type), identifier
                )
            )
        else:
            parts.append(identifier)
    return sql.SQL(", ").join(parts)


def build_filter(
    cursor_column: str | None, read_from: datetime | None, *, after: bool = False
) -> tuple[sql.Composable, dict]:
    """The where clause: inclusive at the start, so ties that can still grow are
    re-read, never skipped; strictly after it once the tie is final (``after``)."""
    if cursor_column is None or read_from is None:
        return sql.SQL("true"), {}
    return (
        sql.SQL("{} {} %(read_from)s").format(
            sql.Identifier(cursor_column), sql.SQL(">" if after else ">=")
        ),
        {"read_from": read_from},
    )


def build_query(
    schema: str,
    table: str,
    columns: Sequence[Column],
    *,
    cursor_column: str | None = None,
    read_from: datetime | None = None,
    read_after: bool = False,
    extra_filter: sql.Composable | None = None,
) -> tuple[sql.Composed, dict]:
    """select → filter on the cursor (and any extra filter)."""
    condition, params = build_filter(cursor_column, read_from, after=read_after)
    if extra_filter is not None:
        condition = sql.SQL("({}) and ({})").format(condition, extra_filter)
    query = sql.SQL("select {columns} from {table} where {condition}").format(
        columns=select_columns(columns),
        table=sql.Identifier(schema, table),
        condition=condition,
    )
    return query, params


def copy_out(
    cur: psycopg2.extensions.cursor,
    query: sql.Composable,
    params: dict,
    sink: IO[bytes],
    *,
    binary: bool = False,
) -> None:
    """Stream the query's rows to ``sink`` in COPY text (or binary) format."""
    bound = cur.mogrify(query, params).decode()
    options = " with (format binary)" if binary else ""
    cur.copy_expert(f"copy ({bound}) to stdout{options}", sink)


SOURCE_DELETES = """
select sum(stats.n_tup_del)
from pg_stat_all_tables as stats
where stats.relid = cast(%(relation)s as regclass)
    or stats.relid in (
        select tree.relid from pg_partition_tree(cast(%(relation)s as regclass)) as tree
    )
"""


def deletes_counter(cur: psycopg2.extensions.cursor, schema: str, table: str) -> int | None:
    """The source's cumulative count of deleted rows for a table (and its partitions),
    from the statistics collector; None for views or with statistics off."""
    relation = sql.Identifier(schema, table).as_string(cur)
    cur.execute(SOURCE_DELETES, {"relation": relation})
    value = cur.fetchone()[0]
    return int(value) if value is not None else None


def find_split_key(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    columns: Sequence[Column],
    primary_key: Sequence[str],
    *,
    cursor_column: str,
    read_from: datetime | None,
    read_after: bool = False,
) -> tuple[list[object], int, int] | None:
    """A key of the read window that holds different rows anywhere in the source.

    The staged window alone cannot show it when the other row lies below the mark
    (an old row whose key a new row repeats). Asked in the read's snapshot, only for
    keys the source does not enforce. Returns (example key values, how many
    different rows it holds, how many such keys), or None.
    """
    condition, params = build_filter(cursor_column, read_from, after=read_after)
    keys = sql.SQL(", ").join(map(sql.Identifier, primary_key))
    row = sql.SQL("md5(cast(row({}) as text))").format(
        sql.SQL(", ").join(sql.Identifier(column.name) for column in columns)
    )
    relation = sql.Identifier(schema, table)
    cur.execute(
        sql.SQL(
            "select {example}, versions, count(*) over () from ("
            "select {keys}, count(distinct {row}) as versions from {relation} "
            "where ({keys}) in (select {keys} from {relation} where {condition}) "
            "group by {keys} having count(distinct {row}) > 1) as split "
            "order by versions desc limit 1"
        ).format(
            example=sql.SQL(", ").join(
                sql.SQL("cast({} as text)").format(sql.Identifier(key)) for key in primary_key
            ),
            keys=keys,
            row=row,
            relation=relation,
            condition=condition,
        ),
        params,
    )
    found = cur.fetchone()
    if found is None:
        return None
    *example, versions, count = found
    return example, int(versions), int(count)
