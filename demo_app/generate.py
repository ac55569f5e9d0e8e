"""Create the demo app: a fresh ``public`` schema filled with deterministic rows."""

from __future__ import annotations

from pathlib import Path

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from demo_app.bulk import copy_chunks
from demo_app.exceptions import InvalidOption
from demo_app.rows import COLUMNS, Sizes, Synthesizer
from tidewater.db import connect

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
SCHEMA = "public"

# (table, id column) of every bigserial the generator fills with explicit ids.
SERIAL_KEYS: tuple[tuple[str, str], ...] = (
    ("customers", "customer_id"),
    ("products", "product_id"),
    ("orders", "order_id"),
    ("order_items", "order_item_id"),
    ("payments", "payment_id"),
    ("events", "event_id"),
)

RESET_SEQUENCE = """
select setval(pg_get_serial_sequence(%(table)s, %(column)s), coalesce(max({column}), 1),
    max({column}) is not null)
from {table}
"""

# Secondary indexes (not backing a constraint) of the demo app's tables: built
# after the bulk load, which is several times faster than maintaining them per row.
SECONDARY_INDEXES = """
select index_class.relname, pg_get_indexdef(index_.indexrelid)
from pg_index as index_
inner join pg_class as index_class on index_class.oid = index_.indexrelid
inner join pg_class as table_class on table_class.oid = index_.indrelid
where table_class.relnamespace = %(schema)s::regnamespace
    and not exists (select from pg_constraint where pg_constraint.conindid = index_.indexrelid)
order by index_class.relname
"""


def create_app(dsn: str, *, scale: float = 1.0, seed: int = 42) -> dict[str, int]:
    """Drop and recreate the ``public`` schema of ``dsn`` and fill it with demo data.

    The same seed and scale give identical rows, byte for byte, timestamps
    included: every time is an offset from a fixed anchor (``rows.ANCHOR``).

    Args:
        dsn: libpq connection string of the app database; everything in its
            ``public`` schema is dropped.
        scale: 1 is about 1,000 customers, 3,000 orders and 25,000 events; counts
            grow linearly (products with the square root); 200 gives 5M events.
        seed: selects the data set.

    Returns:
        Rows written per table.

    Raises:
        InvalidOption: scale or seed out of range.
        tidewater.exceptions.ConnectionFailed: the database cannot be reached.
    """
    sizes = Sizes.for_scale(scale)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidOption("seed", seed, "an integer")
    synthesizer = Synthesizer(seed=seed, sizes=sizes)
    conn = connect(dsn, what="the demo app database", application_name="tidewater-demo-app")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("set local search_path to public")
            cur.execute("set local maintenance_work_mem to '256MB'")
            _skip_foreign_key_checks(cur)
            _reset_schema(cur)
            deferred = _drop_secondary_indexes(cur)
            _fill(cur, synthesizer)
            for statement in deferred:
                cur.execute(statement)
            _reset_sequences(cur)
        conn.autocommit = True
        with conn.cursor() as cur:
            for table in COLUMNS:
                cur.execute(sql.SQL("analyze {}").format(sql.Identifier(SCHEMA, table)))
    finally:
        conn.close()
    return dict(synthesizer.counts)


def _skip_foreign_key_checks(cur: Cursor) -> None:
    """Replica mode: no per-row foreign key checks (the rows are consistent by
    construction) and no user triggers. Needs superuser or ``SET`` on the
    parameter; without it the load is just slower."""
    cur.execute("savepoint replica_role")
    try:
        cur.execute("set local session_replication_role to replica")
    except psycopg2.errors.InsufficientPrivilege:
        cur.execute("rollback to savepoint replica_role")
    cur.execute("release savepoint replica_role")


def _reset_schema(cur: Cursor) -> None:
    cur.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(SCHEMA)))
    cur.execute(sql.SQL("create schema {}").format(sql.Identifier(SCHEMA)))
    # As in a fresh database: everybody may look up objects in public.
    cur.execute(sql.SQL("grant usage on schema {} to public").format(sql.Identifier(SCHEMA)))
    cur.execute(SCHEMA_SQL.read_text())


def _drop_secondary_indexes(cur: Cursor) -> list[str]:
    """Drop the indexes no constraint needs; return the statements that rebuild them."""
    cur.execute(SECONDARY_INDEXES, {"schema": SCHEMA})
    found = cur.fetchall()
    for name, _ in found:
        cur.execute(sql.SQL("drop index {}").format(sql.Identifier(SCHEMA, name)))
    return [definition for _, definition in found]


def _fill(cur: Cursor, synthesizer: Synthesizer) -> None:
    for table in ("countries", "products", "customers"):
        copy_chunks(cur, table, COLUMNS[table], synthesizer.chunks(table), freeze=True)
    for batch in synthesizer.order_batches():
        for table in ("orders", "order_items", "payments"):
            lines = getattr(batch, table)
            copy_chunks(cur, table, COLUMNS[table], ["".join(lines)], freeze=True)
    copy_chunks(cur, "events", COLUMNS["events"], synthesizer.chunks("events"), freeze=True)


def _reset_sequences(cur: Cursor) -> None:
    """Point every id sequence past the largest id, so the app's inserts continue."""
    for table, column in SERIAL_KEYS:
        statement = sql.SQL(RESET_SEQUENCE).format(
            table=sql.Identifier(SCHEMA, table), column=sql.Identifier(column)
        )
        cur.execute(statement, {"table": f"{SCHEMA}.{table}", "column": column})
