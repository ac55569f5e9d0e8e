"""What a build reads: when nothing changed, a transform has nothing to do; when a few
raw tables changed, it builds only what depends on them.

The inputs of a full build are the dbt project's files (and dbt's version) and the raw
tables. Every write a load makes to a raw row — insert, update, delete mark, a keyless
table's replacement — stamps ``_loaded_at``, so the newest ``_loaded_at`` of each raw
table (one index probe each) says whether a table changed. After a green build is
published, what it read is kept in ``ops.transform_inputs``: one digest of it all, the
project's fingerprint and each raw table's newest ``_loaded_at``. The next transform
compares: the same digest means nothing to do; the same project with some tables moved
means only those tables' descendants need building (:func:`changed_tables`); anything
else (other code, another dbt version, no record) means a full build.

Models over the ``ops`` tables (the pipeline's own run records) are refreshed by the
next build that has new data to build, not by a no-change cycle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

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
# Added after the first release: a row without them (or a build recorded before
# them) can only say "unchanged", never which tables changed. A row with
# ``published = false`` records a build as it starts (its code), published or not.
KEEP_COLUMNS = """
alter table ops.transform_inputs
    add column if not exists code text,
    add column if not exists raw_tables jsonb,
    add column if not exists published boolean not null default true
"""
INPUTS_COLUMNS = """
select column_name from information_schema.columns
where table_schema = 'ops' and table_name = 'transform_inputs'
    and column_name in ('code', 'raw_tables', 'published')
"""
LAST_INPUTS = """
select digest, code, raw_tables from ops.transform_inputs
where published
order by recorded_at desc limit 1
"""
LAST_ATTEMPT = "select code from ops.transform_inputs order by recorded_at desc limit 1"

# "raw_app.orders" -> the newest `_loaded_at` as text (None: the table is empty)
RawMarks = dict[str, str | None]


@dataclass(frozen=True)
class BuildInputs:
    """What a build reads: the code (project fingerprint and target) and every raw
    table's newest ``_loaded_at``; ``digest`` stands for both."""

    fingerprint: str
    target_name: str
    raw_tables: RawMarks

    @property
    def code(self) -> str:
        """The project's fingerprint and the target, as kept in ``ops.transform_inputs``."""
        return f"{self.fingerprint} {self.target_name}"

    @property
    def digest(self) -> str:
        digest = hashlib.sha256(f"{self.fingerprint}\0{self.target_name}\0".encode())
        for name, newest in sorted(self.raw_tables.items()):
            digest.update(f"{name}={newest}\0".encode())
        return digest.hexdigest()[:32]


@dataclass(frozen=True)
class PublishedInputs:
    """What the last green, published build read, as kept in ``ops.transform_inputs``."""

    digest: str
    code: str | None
    raw_tables: RawMarks | None


def read_inputs(
    conn: psycopg2.extensions.connection, *, fingerprint: str, target_name: str
) -> BuildInputs:
    """The project's code and the newest ``_loaded_at`` of every raw table, now."""
    marks: RawMarks = {}
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
            marks = dict(cur.fetchall())
    return BuildInputs(fingerprint=fingerprint, target_name=target_name, raw_tables=marks)


def _inputs_columns(cur: psycopg2.extensions.cursor) -> set[str] | None:
    """The later columns ``ops.transform_inputs`` has (None: no such table)."""
    cur.execute("select to_regclass('ops.transform_inputs') is not null")
    if not cur.fetchone()[0]:
        return None
    cur.execute(INPUTS_COLUMNS)
    return {name for (name,) in cur.fetchall()}


def last_published_inputs(conn: psycopg2.extensions.connection) -> PublishedInputs | None:
    """What the last green, published build read (None if there is no record)."""
    with conn.cursor() as cur:
        columns = _inputs_columns(cur)
        if columns is None:
            return None
        if columns == {"code", "raw_tables", "published"}:
            cur.execute(LAST_INPUTS)
        else:
            cur.execute(
                "select digest, null, null from ops.transform_inputs "
                "order by recorded_at desc limit 1"
            )
        row = cur.fetchone()
    if row is None:
        return None
    digest, code, raw_tables = row
    if isinstance(raw_tables, str):
        raw_tables = json.loads(raw_tables)
    return PublishedInputs(digest=digest, code=code, raw_tables=raw_tables)


def last_attempted_code(conn: psycopg2.extensions.connection) -> str | None:
    """The code of the last build that started, published or not (None: no record)."""
    with conn.cursor() as cur:
        if _inputs_columns(cur) != {"code", "raw_tables", "published"}:
            return None
        cur.execute(LAST_ATTEMPT)
        row = cur.fetchone()
    return None if row is None else row[0]


def _other_code_since(inputs: BuildInputs, attempted_code: str | None) -> bool:
    """Whether a build of other code started since the last published one: it may have
    replaced views (they are not built in a shadow schema) before it failed."""
    return attempted_code is not None and attempted_code != inputs.code


def nothing_to_do(
    inputs: BuildInputs, published: PublishedInputs | None, attempted_code: str | None
) -> bool:
    """The same code and raw tables as the last published build, and no build of
    other code since."""
    return (
        published is not None
        and inputs.digest == published.digest
        and not _other_code_since(inputs, attempted_code)
    )


def changed_tables(
    inputs: BuildInputs, published: PublishedInputs | None, attempted_code: str | None = None
) -> list[str] | None:
    """The raw tables (``raw_app.orders``) whose newest ``_loaded_at`` moved since the
    last published build, appeared or went; None when a full build is needed (no
    record, a record without the tables, other code or dbt version, or a build of
    other code started since: ``attempted_code``, see :func:`last_attempted_code`)."""
    if published is None or published.raw_tables is None or published.code != inputs.code:
        return None
    if _other_code_since(inputs, attempted_code):
        return None
    names = set(inputs.raw_tables) | set(published.raw_tables)
    return sorted(
        name
        for name in names
        if name not in inputs.raw_tables
        or name not in published.raw_tables
        or inputs.raw_tables[name] != published.raw_tables[name]
    )


def keep_published_inputs(
    conn: psycopg2.extensions.connection, inputs: BuildInputs, run_id: str
) -> None:
    """Remember what a green, published build read (only the newest row is read; the
    older ones are the history of what was built)."""
    _keep(conn, inputs, run_id, published=True)


def keep_build_attempt(
    conn: psycopg2.extensions.connection, inputs: BuildInputs, run_id: str
) -> None:
    """Remember that a build of this code starts (before dbt replaces anything)."""
    _keep(conn, inputs, run_id, published=False)


def _keep(
    conn: psycopg2.extensions.connection, inputs: BuildInputs, run_id: str, *, published: bool
) -> None:
    with conn.cursor() as cur:
        cur.execute(KEEP_TABLE)
        cur.execute(KEEP_COLUMNS)
        cur.execute(
            "insert into ops.transform_inputs (digest, run_id, code, raw_tables, published) "
            "values (%s, %s, %s, %s, %s)",
            (
                inputs.digest,
                run_id,
                inputs.code,
                json.dumps(inputs.raw_tables, sort_keys=True),
                published,
            ),
        )
