"""What a build reads, as one digest: when nothing changed, a transform has nothing to do.

The inputs of a full build are the dbt project's files (and dbt's version) and the raw
tables. Every write a load makes to a raw row — insert, update, delete mark, a keyless
table's replacement — stamps ``_loaded_at``, so the newest ``_loaded_at`` of each raw
table (one index probe each) says whether a table changed. After a green build is
published, its digest is kept in ``ops.transform_inputs``; the next transform compares
and, when they match, records that it had nothing to do instead of starting dbt.

Models over the ``ops`` tables (the pipeline's own run records) are refreshed by the
next build that has new data to build, not by a no-change cycle.
"""

from __future__ import annotations

import hashlib

import psycopg2.extensions
from psycopg2 import sql

RAW_TABLES = """
select columns.table_schema, columns.table_name
from information_schema.columns as columns
inner join information_schema.tables as tables
    on columns.table_schema = tables.table_schema and columns.table_name = tables.table_name
where columns.table_schema like 'raw\\_%%'
    and columns.column_name = '_loaded_at'
    and tables.table_type = 'BASE TABLE'
order by 1, 2
"""
KEEP_TABLE = """
create table if not exists ops.transform_inputs (
    digest text not null,
    run_id text not null,
    recorded_at timestamptz not null default now()
)
"""
LAST_DIGEST = "select digest from ops.transform_inputs order by recorded_at desc limit 1"


def input_digest(
    conn: psycopg2.extensions.connection, *, fingerprint: str, target_name: str
) -> str:
    """The digest of the project's code and the newest ``_loaded_at`` of every raw table."""
    digest = hashlib.sha256(f"{fingerprint}\0{target_name}\0".encode())
    with conn.cursor() as cur:
        cur.execute(RAW_TABLES)
        tables = cur.fetchall()
        if tables:
            cur.execute(
                sql.SQL(" union all ").join(
                    sql.SQL("select {}, cast(max(_loaded_at) as text) from {}").format(
                        sql.Literal(f"{schema}.{table}"), sql.Identifier(schema, table)
                    )
                    for schema, table in tables
                )
            )
            for name, newest in sorted(cur.fetchall()):
                digest.update(f"{name}={newest}\0".encode())
    return digest.hexdigest()[:32]


def last_published_digest(conn: psycopg2.extensions.connection) -> str | None:
    """The digest kept with the last green, published full build (None if there is none)."""
    with conn.cursor() as cur:
        cur.execute("select to_regclass('ops.transform_inputs') is not null")
        if not cur.fetchone()[0]:
            return None
        cur.execute(LAST_DIGEST)
        row = cur.fetchone()
    return row[0] if row else None


def keep_published_digest(conn: psycopg2.extensions.connection, digest: str, run_id: str) -> None:
    """Remember what a green, published full build read (only the newest row is read;
    the older ones are the history of what was built)."""
    with conn.cursor() as cur:
        cur.execute(KEEP_TABLE)
        cur.execute(
            "insert into ops.transform_inputs (digest, run_id) values (%s, %s)", (digest, run_id)
        )
