"""High-water marks, kept in the warehouse and committed in the same
transaction as the rows they cover."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

STATE_SCHEMA = "ops"

CREATE_MARKS = sql.SQL(
    """
    create table if not exists {schema}.high_water_marks (
        source_name text not null,
        table_name text not null,
        cursor_column text not null,
        mark timestamptz,
        read_from timestamptz,
        batch_id text not null,
        source_deletes bigint,
        updated_at timestamptz not null default now(),
        primary key (source_name, table_name)
    )
    """
).format(schema=sql.Identifier(STATE_SCHEMA))

UPGRADE_MARKS = sql.SQL(
    "alter table {schema}.high_water_marks add column if not exists source_deletes bigint"
).format(schema=sql.Identifier(STATE_SCHEMA))

READ_MARK = sql.SQL(
    """
    select cursor_column, mark, read_from, source_deletes from {schema}.high_water_marks
    where source_name = %(source)s and table_name = %(table)s
    """
).format(schema=sql.Identifier(STATE_SCHEMA))

WRITE_MARK = sql.SQL(
    """
    insert into {schema}.high_water_marks as marks
        (source_name, table_name, cursor_column, mark, read_from, batch_id, source_deletes)
    values (
        %(source)s, %(table)s, %(cursor)s, %(mark)s, %(read_from)s, %(batch_id)s,
        %(source_deletes)s
    )
    on conflict (source_name, table_name) do update set
        cursor_column = excluded.cursor_column,
        mark = excluded.mark,
        read_from = excluded.read_from,
        batch_id = excluded.batch_id,
        source_deletes = excluded.source_deletes,
        updated_at = now()
    where (marks.cursor_column, marks.mark, marks.read_from, marks.source_deletes)
        is distinct from (
            excluded.cursor_column, excluded.mark, excluded.read_from, excluded.source_deletes
        )
    """
).format(schema=sql.Identifier(STATE_SCHEMA))


@dataclass(frozen=True)
class Mark:
    """Where the next incremental read starts.

    ``mark`` is the largest cursor value loaded so far; ``read_from`` is where the
    next read begins (inclusive). ``read_from`` is below ``mark`` when a write
    transaction was still open at the last read: such a transaction stamps its rows
    with its own start time, which may be below ``mark`` by the time it commits.
    """

    cursor_column: str
    mark: datetime | None
    read_from: datetime | None
    source_deletes: int | None = None  # the source's delete counter when last reconciled


def ensure_state_table(cur: Cursor) -> None:
    cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(STATE_SCHEMA)))
    cur.execute(CREATE_MARKS)
    cur.execute(UPGRADE_MARKS)


def read_mark(cur: Cursor, source: str, table: str) -> Mark | None:
    cur.execute(READ_MARK, {"source": source, "table": table})
    row = cur.fetchone()
    return Mark(*row) if row else None


def write_mark(cur: Cursor, source: str, table: str, mark: Mark, batch_id: str) -> None:
    cur.execute(
        WRITE_MARK,
        {
            "source": source,
            "table": table,
            "cursor": mark.cursor_column,
            "mark": mark.mark,
            "read_from": mark.read_from,
            "batch_id": batch_id,
            "source_deletes": mark.source_deletes,
        },
    )
