"""High-water marks, kept in the warehouse and committed in the same
transaction as the rows they cover."""

from __future__ import annotations

import json
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

# Columns added since the table was first shipped: added where missing, so existing
# warehouses upgrade (and an up-to-date one is not altered).
MARK_COLUMNS = (
    ("source_deletes", "bigint"),
    # the next read starts strictly after read_from (a final tie at the mark)
    ("read_after", "boolean not null default false"),
    # when the last read looked at the source's open transactions (null: no look that
    # saw them all), and those transactions, each with a lower bound of the cursor
    # values it may still commit: [{"id": "3/45", "since": "…" or null}, …]
    ("looked_at", "timestamptz"),
    ("open_transactions", "jsonb not null default '[]'"),
)

MARK_COLUMNS_PRESENT = """
select column_name from information_schema.columns
where table_schema = %(schema)s and table_name = 'high_water_marks'
"""

READ_MARK = sql.SQL(
    """
    select cursor_column, mark, read_from, source_deletes, read_after, looked_at,
        open_transactions
    from {schema}.high_water_marks
    where source_name = %(source)s and table_name = %(table)s
    """
).format(schema=sql.Identifier(STATE_SCHEMA))

WRITE_MARK = sql.SQL(
    """
    insert into {schema}.high_water_marks as marks (
        source_name, table_name, cursor_column, mark, read_from, batch_id, source_deletes,
        read_after, looked_at, open_transactions
    )
    values (
        %(source)s, %(table)s, %(cursor)s, %(mark)s, %(read_from)s, %(batch_id)s,
        %(source_deletes)s, %(read_after)s, %(looked_at)s, %(open_transactions)s
    )
    on conflict (source_name, table_name) do update set
        cursor_column = excluded.cursor_column,
        mark = excluded.mark,
        read_from = excluded.read_from,
        batch_id = excluded.batch_id,
        source_deletes = excluded.source_deletes,
        read_after = excluded.read_after,
        looked_at = excluded.looked_at,
        open_transactions = excluded.open_transactions,
        updated_at = now()
    """
).format(schema=sql.Identifier(STATE_SCHEMA))


# Redshift: no jsonb (the open transactions are JSON text), no `on conflict` (a mark
# is replaced by delete + insert in the load's transaction), no `add column if not
# exists` (the catalog is asked first).
REDSHIFT_CREATE_MARKS = sql.SQL(
    """
    create table if not exists {schema}.high_water_marks (
        source_name character varying(256) not null,
        table_name character varying(256) not null,
        cursor_column character varying(256) not null,
        mark timestamptz,
        read_from timestamptz,
        batch_id character varying(64) not null,
        source_deletes bigint,
        read_after boolean not null default false,
        looked_at timestamptz,
        open_transactions character varying(65535) not null default '[]',
        updated_at timestamptz not null default getdate(),
        primary key (source_name, table_name)
    )
    """
).format(schema=sql.Identifier(STATE_SCHEMA))
REDSHIFT_MARK_COLUMNS = tuple(
    (name, "character varying(65535) not null default '[]'" if name == "open_transactions" else d)
    for name, d in MARK_COLUMNS
)
REDSHIFT_DELETE_MARK = sql.SQL(
    "delete from {schema}.high_water_marks "
    "where source_name = %(source)s and table_name = %(table)s"
).format(schema=sql.Identifier(STATE_SCHEMA))
REDSHIFT_INSERT_MARK = sql.SQL(
    """
    insert into {schema}.high_water_marks (
        source_name, table_name, cursor_column, mark, read_from, batch_id, source_deletes,
        read_after, looked_at, open_transactions
    )
    values (
        %(source)s, %(table)s, %(cursor)s, %(mark)s, %(read_from)s, %(batch_id)s,
        %(source_deletes)s, %(read_after)s, %(looked_at)s, %(open_transactions)s
    )
    """
).format(schema=sql.Identifier(STATE_SCHEMA))


@dataclass(frozen=True)
class OpenTransaction:
    """A transaction open at a read, and the lowest cursor value its rows can carry
    (``since``; None when nothing bounds it: it was open before any recorded read and
    its start is hidden)."""

    transaction_id: str
    since: datetime | None


@dataclass(frozen=True)
class Mark:
    """Where the next incremental read starts.

    ``mark`` is the largest cursor value loaded so far; ``read_from`` is where the
    next read begins (inclusive, or strictly after it with ``read_after``).
    ``read_from`` is below ``mark`` when a write transaction was still open at the
    last read: such a transaction stamps its rows with its own start time, which
    may be below ``mark`` by the time it commits. ``looked_at`` and
    ``open_transactions`` record that read's look at the source's open transactions
    (see `loaders.extract.plan_next_read`).
    """

    cursor_column: str
    mark: datetime | None
    read_from: datetime | None
    source_deletes: int | None = None  # the source's delete counter when last reconciled
    read_after: bool = False
    looked_at: datetime | None = None
    open_transactions: tuple[OpenTransaction, ...] = ()


def ensure_state_table(cur: Cursor) -> None:
    cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(STATE_SCHEMA)))
    cur.execute(CREATE_MARKS)
    cur.execute(MARK_COLUMNS_PRESENT, {"schema": STATE_SCHEMA})
    present = {name for (name,) in cur.fetchall()}
    for column, definition in MARK_COLUMNS:
        if column not in present:
            cur.execute(
                sql.SQL("alter table {} add column if not exists {} {}").format(
                    sql.Identifier(STATE_SCHEMA, "high_water_marks"),
                    sql.Identifier(column),
                    sql.SQL(definition),
                )
            )


def ensure_state_table_redshift(cur: Cursor) -> None:
    """`ensure_state_table` in Redshift's SQL."""
    cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(STATE_SCHEMA)))
    cur.execute(REDSHIFT_CREATE_MARKS)
    cur.execute(MARK_COLUMNS_PRESENT, {"schema": STATE_SCHEMA})
    present = {name for (name,) in cur.fetchall()}
    for column, definition in REDSHIFT_MARK_COLUMNS:
        if column not in present:
            cur.execute(
                sql.SQL("alter table {} add column {} {}").format(
                    sql.Identifier(STATE_SCHEMA, "high_water_marks"),
                    sql.Identifier(column),
                    sql.SQL(definition),
                )
            )


def read_mark(cur: Cursor, source: str, table: str) -> Mark | None:
    cur.execute(READ_MARK, {"source": source, "table": table})
    row = cur.fetchone()
    if not row:
        return None
    cursor_column, mark, read_from, source_deletes, read_after, looked_at, opened = row
    if isinstance(opened, str):  # Redshift keeps them as JSON text
        opened = json.loads(opened)
    return Mark(
        cursor_column,
        mark,
        read_from,
        source_deletes,
        bool(read_after),
        looked_at,
        tuple(
            OpenTransaction(
                str(entry["id"]),
                datetime.fromisoformat(entry["since"]) if entry.get("since") else None,
            )
            for entry in opened or []
        ),
    )


def write_mark(
    cur: Cursor, source: str, table: str, mark: Mark, batch_id: str, *, redshift: bool = False
) -> None:
    """Insert or replace a table's mark, in the caller's transaction (Redshift:
    delete + insert, which the transaction makes one change)."""
    params = _mark_params(source, table, mark, batch_id)
    if redshift:
        # Timestamps as ISO text: psycopg2 would bind them with PostgreSQL's `::` casts.
        params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
        cur.execute(REDSHIFT_DELETE_MARK, params)
        cur.execute(REDSHIFT_INSERT_MARK, params)
    else:
        cur.execute(WRITE_MARK, params)


def _mark_params(source: str, table: str, mark: Mark, batch_id: str) -> dict[str, object]:
    return {
        "source": source,
        "table": table,
        "cursor": mark.cursor_column,
        "mark": mark.mark,
        "read_from": mark.read_from,
        "batch_id": batch_id,
        "source_deletes": mark.source_deletes,
        "read_after": mark.read_after,
        "looked_at": mark.looked_at,
        "open_transactions": json.dumps(
            [
                {"id": t.transaction_id, "since": t.since.isoformat() if t.since else None}
                for t in mark.open_transactions
            ]
        ),
    }
