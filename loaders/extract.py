"""Reading from the source: one consistent snapshot per table, queries built as
select → filter on the cursor, and rows streamed out with COPY."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from loaders.catalog import Column

# Read before the snapshot is taken (see `open_snapshot`): the start of the oldest
# transaction still open in this database, and whether other sessions are hidden.
OLDEST_OPEN_TRANSACTION = """
select
    clock_timestamp() as read_at,
    min(xact_start) filter (where pid <> pg_backend_pid()) as oldest_open_start,
    count(*) filter (where query = '<insufficient privilege>') as hidden_sessions
from pg_stat_activity
where datname = current_database()
    and backend_type = 'client backend'
"""


@dataclass(frozen=True)
class Snapshot:
    """What was known about concurrent writers when the read snapshot was taken.

    Any row not visible in the snapshot but committed later carries a cursor value
    at or above ``safe_from`` (its transaction had not started, or started at
    ``oldest_open_start`` or later).
    """

    read_at: datetime
    oldest_open_start: datetime | None
    hidden_sessions: int
    source_deletes: int | None = None

    @property
    def safe_from(self) -> datetime:
        if self.oldest_open_start is None:
            return self.read_at
        return min(self.read_at, self.oldest_open_start)


def open_snapshot(
    conn: psycopg2.extensions.connection, *, relation: tuple[str, str] | None = None
) -> Snapshot:
    """Look at open transactions, then start a repeatable-read, read-only transaction.

    The look happens first, in its own statement outside the snapshot, so a writer
    that commits in between is either seen as open or is visible in the snapshot.
    With ``relation``, the table's delete counter is read there too: a delete it
    counts has ended before the snapshot, so a later run never skips one.
    """
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("set timezone = 'UTC'")
        cur.execute("set datestyle = 'ISO, YMD'")
        cur.execute("set intervalstyle = 'postgres'")
        cur.execute("set extra_float_digits = 3")
        cur.execute(OLDEST_OPEN_TRANSACTION)
        read_at, oldest, hidden = cur.fetchone()
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
    return Snapshot(
        read_at=read_at, oldest_open_start=oldest, hidden_sessions=hidden, source_deletes=counter
    )


def next_read_from(
    *, mark: datetime | None, snapshot: Snapshot, lag: timedelta, protect: bool
) -> datetime | None:
    """Where the read after this one starts (inclusive).

    With protection on, never past the start of a transaction that was open when
    this read's snapshot was taken; ``lag`` moves it further back for cursors the
    database does not stamp itself (application clocks).
    """
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
    cursor_column: str | None, read_from: datetime | None
) -> tuple[sql.Composable, dict]:
    """The where clause: inclusive at the mark, so ties are re-read, never skipped."""
    if cursor_column is None or read_from is None:
        return sql.SQL("true"), {}
    return (
        sql.SQL("{} >= %(read_from)s").format(sql.Identifier(cursor_column)),
        {"read_from": read_from},
    )


def build_query(
    schema: str,
    table: str,
    columns: Sequence[Column],
    *,
    cursor_column: str | None = None,
    read_from: datetime | None = None,
    extra_filter: sql.Composable | None = None,
) -> tuple[sql.Composed, dict]:
    """select → filter on the cursor (and any extra filter)."""
    condition, params = build_filter(cursor_column, read_from)
    if extra_filter is not None:
        condition = sql.SQL("({}) and ({})").format(condition, extra_filter)
    query = sql.SQL("select {columns} from {table} where {condition}").format(
        columns=select_columns(columns),
        table=sql.Identifier(schema, table),
        condition=condition,
    )
    return query, params


def window_stats(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    cursor_column: str,
    read_from: datetime | None,
    previous_mark: datetime | None,
) -> tuple[int, datetime | None, int]:
    """Rows in the read window, the largest cursor value, and how many sit at or
    below the previous mark (re-read at the boundary).

    For a first, full read only the maximum is asked for (an index lookup, where the
    cursor is indexed); the row count is then COPY's, and is returned as -1 here.
    """
    if read_from is None:
        cur.execute(
            sql.SQL("select max({}) from {}").format(
                sql.Identifier(cursor_column), sql.Identifier(schema, table)
            )
        )
        return -1, cur.fetchone()[0], 0
    condition, params = build_filter(cursor_column, read_from)
    cur.execute(
        sql.SQL(
            "select count(*), max({cursor}), "
            "count(*) filter (where {cursor} <= %(previous_mark)s) "
            "from {table} where {condition}"
        ).format(
            cursor=sql.Identifier(cursor_column),
            table=sql.Identifier(schema, table),
            condition=condition,
        ),
        {**params, "previous_mark": previous_mark},
    )
    count, maximum, reread = cur.fetchone()
    return count, maximum, reread


def copy_out(
    cur: psycopg2.extensions.cursor, query: sql.Composable, params: dict, sink: IO[bytes]
) -> None:
    """Stream the query's rows to ``sink`` in COPY text format."""
    bound = cur.mogrify(query, params).decode()
    cur.copy_expert(f"copy ({bound}) to stdout", sink)


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
