"""Writing to the warehouse: create and evolve raw tables, stage rows with COPY,
merge by primary key, and record deletes. Everything here runs inside the
caller's transaction; nothing commits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Literal

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from loaders.catalog import METADATA_COLUMNS, Column, is_widening, read_warehouse_columns
from loaders.exceptions import LoaderError, NonUniqueKey, SchemaConflict

STAGE = "_tidewater_stage"
KEY_STAGE = "_tidewater_stage_keys"


@dataclass(frozen=True)
class RawTable:
    """A raw table in the warehouse and the source columns it follows."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    dropped: tuple[str, ...] = ()
    # Declared secondary indexes (`TableConfig.indexes`), each a tuple of columns.
    indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


class MissingSchema(LoaderError):
    def __init__(self, schema: str) -> None:
        self.schema = schema
        super().__init__(
            f"schema {schema} does not exist in the warehouse and the ETL user may not create "
            f"it; declare it in roles/roles.yml and run `invoke roles --apply`"
        )


def ensure_schema(cur: Cursor, schema: str) -> None:
    """Create the raw schema in the caller's transaction, so a failed first load leaves
    none behind. Tables of one source load in parallel: while another first load has
    created the schema but not yet committed, this one waits for it; when it commits,
    the schema is there (the duplicate is rolled back to a savepoint), and when it
    rolls back, this one creates it."""
    cur.execute("select 1 from pg_namespace where nspname = %s", (schema,))
    if cur.fetchone():
        return
    cur.execute("select has_database_privilege(current_database(), 'CREATE')")
    if not cur.fetchone()[0]:
        raise MissingSchema(schema)
    cur.execute("savepoint tidewater_schema")
    try:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    except psycopg2.errors.UniqueViolation:
        cur.execute("rollback to savepoint tidewater_schema")
    else:
        cur.execute("release savepoint tidewater_schema")


# Rows written without a batch id take the load transaction's (`begin`).
SESSION_BATCH_ID = sql.SQL("current_setting('tidewater.batch_id', true)")


def prepare_raw_table(
    cur: Cursor,
    schema: str,
    name: str,
    columns: Sequence[Column],
    primary_key: Sequence[str],
    *,
    batch_id: str | None = None,
) -> tuple[RawTable, bool]:
    """Create the raw table, or evolve it to follow the source.

    New source columns are added; dropped ones stay (null from then on); a widening
    type change widens; anything else raises `SchemaConflict` before a row is written.
    Returns the table and whether it was created now.

    A table created with ``batch_id`` takes it as the constant default of
    ``_batch_id`` until `settle_batch_default`: a first load's COPY evaluates the
    default once per row, and ``current_setting()`` on 5 million rows costs about a
    fifth of the COPY's time (README, "Performance").
    """
    existing = read_warehouse_columns(cur, schema, name)
    if not existing:
        definitions = [
            sql.SQL("{} {}").format(sql.Identifier(column.name), sql.SQL(column.warehouse_type))
            for column in columns
        ]
        definitions += [
            sql.SQL("_loaded_at timestamptz not null default now()"),
            sql.SQL("_batch_id text default {}").format(
                SESSION_BATCH_ID if batch_id is None else sql.Literal(batch_id)
            ),
            sql.SQL("_deleted_at timestamptz"),
        ]
        cur.execute(
            sql.SQL("create table {} ({})").format(
                sql.Identifier(schema, name), sql.SQL(", ").join(definitions)
            )
        )
        return RawTable(schema, name, tuple(columns), tuple(primary_key)), True

    qualified = f"{schema}.{name}"
    for column in columns:
        current = existing.get(column.name)
        if current is None:
            cur.execute(
                sql.SQL("alter table {} add column {} {}").format(
                    sql.Identifier(schema, name),
                    sql.Identifier(column.name),
                    sql.SQL(column.warehouse_type),
                )
            )
        elif current != column.warehouse_type:
            if not is_widening(current, column.warehouse_type):
                raise SchemaConflict(qualified, column.name, current, column.warehouse_type)
            cur.execute(
                sql.SQL("alter table {} alter column {} type {}").format(
                    sql.Identifier(schema, name),
                    sql.Identifier(column.name),
                    sql.SQL(column.warehouse_type),
                )
            )
    source_names = {column.name for column in columns}
    dropped = tuple(
        column
        for column in existing
        if column not in source_names and column not in METADATA_COLUMNS
    )
    return RawTable(schema, name, tuple(columns), tuple(primary_key), dropped), False


def settle_batch_default(cur: Cursor, table: RawTable) -> None:
    """Give ``_batch_id`` the session's batch id as its default again (after a table
    created with a constant one took its first rows)."""
    cur.execute(
        sql.SQL("alter table {} alter column _batch_id set default {}").format(
            table.identifier, SESSION_BATCH_ID
        )
    )


def index_name(table: str, suffix: str) -> str:
    """``<table>__<suffix>``, shortened with a hash to PostgreSQL's 63 bytes, so the
    names of two indexes on a long-named table never truncate to the same one."""
    name = f"{table}__{suffix}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.md5(table.encode()).hexdigest()[:8]
    keep = 63 - len(suffix) - len(digest) - 3
    return f"{table.encode()[:keep].decode(errors='ignore')}_{digest}__{suffix}"


# For the load's transaction: index builds may use parallel workers (0 where the
# server has none to give; its own cap, max_parallel_workers, still applies).
PARALLEL_INDEX_BUILDS = """
select set_config(
    'max_parallel_maintenance_workers',
    cast(least(cast(current_setting('max_parallel_workers') as int), 4) as text),
    true
)
"""


def ensure_indexes(cur: Cursor, table: RawTable) -> None:
    """The key index merges need, one on ``_loaded_at`` (incremental dbt models and
    freshness checks read the rows loaded after a mark, a few among millions), and
    the declared ones (`declared_index_name`); a declared index no longer declared is
    dropped. Built after a table's first COPY, which is cheaper than maintaining them
    row by row; a catalog lookup afterwards, unless the declaration changed.

    The ``_loaded_at`` index stays a btree: a BRIN index would build in half the time
    on a first load, but it cannot answer ``max(_loaded_at)`` (the transform's input
    digest, a seq scan instead) and, once merges update rows scattered over the
    table, ``_loaded_at > mark`` matches most block ranges (README, "Performance").
    Builds use parallel workers, as many as the server's ``max_parallel_workers``
    allows (up to 4), for this transaction only; PostgreSQL decides per table
    whether they pay."""
    cur.execute(PARALLEL_INDEX_BUILDS)
    cur.execute(
        sql.SQL("create index if not exists {} on {} (_loaded_at)").format(
            sql.Identifier(index_name(table.name, "tidewater_loaded_at")), table.identifier
        )
    )
    if table.primary_key:
        cur.execute(
            sql.SQL("create unique index if not exists {} on {} ({})").format(
                sql.Identifier(index_name(table.name, "tidewater_pk")),
                table.identifier,
                sql.SQL(", ").join(map(sql.Identifier, table.primary_key)),
            )
        )
    declared = {declared_index_name(table.name, columns): columns for columns in table.indexes}
    cur.execute(
        "select i.relname from pg_index as x "
        "inner join pg_class as i on i.oid = x.indexrelid "
        "where x.indrelid = to_regclass(%s) and position(%s in i.relname) > 0",
        (table.identifier.as_string(cur), f"__{DECLARED_INDEX}_"),
    )
    existing = {name for (name,) in cur.fetchall()}
    for name in sorted(existing - set(declared)):
        cur.execute(sql.SQL("drop index {}").format(sql.Identifier(table.schema, name)))
    for name, columns in sorted(declared.items()):
        if name not in existing:
            cur.execute(
                sql.SQL("create index {} on {} ({})").format(
                    sql.Identifier(name),
                    table.identifier,
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                )
            )


DECLARED_INDEX = "tidewater_ix"


def declared_index_name(table: str, columns: Sequence[str]) -> str:
    """``<table>_<digest>__tidewater_ix_<column>``: one short column spelled out, else
    a digest of the columns (names stay within 63 bytes and never collide)."""
    spelled = columns[0] if len(columns) == 1 else ""
    if not spelled or len(spelled.encode()) > 24:
        spelled = hashlib.md5("\0".join(columns).encode()).hexdigest()[:12]
    return index_name(table, f"{DECLARED_INDEX}_{spelled}")


def create_stage(
    cur: Cursor, table: RawTable, *, name: str = STAGE, keys_only: bool = False
) -> None:
    """A temporary table shaped like the source columns, dropped at commit."""
    columns = [c for c in table.columns if not keys_only or c.name in table.primary_key]
    cur.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(name)))
    cur.execute(
        sql.SQL("create temporary table {} ({}) on commit drop").format(
            sql.Identifier(name),
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.warehouse_type))
                for c in columns
            ),
        )
    )


NULL_MARKER = r"\N"
# Bytes per read of a COPY's input (psycopg2 reads 8 KiB at a time by default).
COPY_CHUNK = 1 << 18


def copy_in(
    cur: Cursor,
    target: sql.Composable,
    columns: Sequence[str],
    source: IO[bytes],
    *,
    format: Literal["text", "csv", "binary"] = "text",
) -> int:
    """COPY rows from ``source`` into ``target``; returns the row count.

    ``format``: PostgreSQL's COPY text format, its binary format (from a PostgreSQL
    source of the same major version, every column of the target's type), or CSV with
    ``\\N`` as NULL (what Redshift's UNLOAD writes)."""
    options = sql.SQL("")
    if format == "csv":
        options = sql.SQL(" with (format csv, null {})").format(sql.Literal(NULL_MARKER))
    elif format == "binary":
        options = sql.SQL(" with (format binary)")
    statement = sql.SQL("copy {} ({}) from stdin{}").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns)), options
    )
    cur.copy_expert(statement.as_string(cur), source, size=COPY_CHUNK)
    return cur.rowcount


def _key_match(table: RawTable, left: str, right: str) -> sql.Composable:
    return sql.SQL(" and ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(key), sql.Identifier(right), sql.Identifier(key)
        )
        for key in table.primary_key
    )


def _comparable(column: Column, alias: str) -> sql.Composable:
    reference = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column.name))
    if column.comparable:
        return reference
    return sql.SQL("cast({} as text)").format(reference)


def check_unique_keys(cur: Cursor, table: RawTable, *, where: str, stage: str = STAGE) -> None:
    """Fail when the stage holds one key with different contents.

    The stage is one consistent read of the source, so two different rows under one
    key mean the declared key is not unique there; which one is right cannot be
    known, and merging would keep one and drop the others without a word. The same
    row read twice (a view over overlapping parts) is one row, and passes.

    Raises:
        NonUniqueKey: naming the key columns, one example value and how many keys.
    """
    keys = sql.SQL(", ").join(map(sql.Identifier, table.primary_key))
    row = sql.SQL("md5(cast(row({}) as text))").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    )
    cur.execute(
        sql.SQL(
            "select {example}, versions, count(*) over () from ("
            "select {keys}, count(distinct {row}) as versions from {stage} "
            "group by {keys} having count(distinct {row}) > 1) as duplicated "
            "order by versions desc limit 1"
        ).format(
            example=sql.SQL(", ").join(
                sql.SQL("cast({} as text)").format(sql.Identifier(key)) for key in table.primary_key
            ),
            keys=keys,
            row=row,
            stage=sql.Identifier(stage),
        )
    )
    found = cur.fetchone()
    if found is not None:
        *example, versions, count = found
        raise NonUniqueKey(where, table.primary_key, example, int(versions), int(count))


def merge_stage(
    cur: Cursor,
    table: RawTable,
    batch_id: str,
    *,
    stage: str = STAGE,
    newest_by: str | None = None,
) -> tuple[int, int]:
    """Upsert the stage into the raw table by primary key: new keys are inserted,
    changed rows updated, unchanged rows not written at all.

    One ``insert … on conflict do update … where changed`` probes the key index per
    staged row, so the cost follows the rows staged, not the size of the raw table.
    A stage holding the same key twice keeps the row with the newest ``newest_by``
    (callers run `check_unique_keys` first, unless the source guarantees the key, so
    such rows are identical).
    Columns dropped at the source keep their old values in rows that do not change,
    and become null in rows written from then on.

    Returns (inserted, updated).
    """
    value_columns = [c for c in table.columns if c.name not in table.primary_key]
    assignments = [
        sql.SQL("{} = excluded.{}").format(sql.Identifier(c.name), sql.Identifier(c.name))
        for c in value_columns
    ]
    assignments += [sql.SQL("{} = null").format(sql.Identifier(column)) for column in table.dropped]
    assignments += [
        sql.SQL("_loaded_at = now()"),
        sql.SQL("_batch_id = excluded._batch_id"),
        sql.SQL("_deleted_at = null"),
    ]
    changed = [
        sql.SQL("{} is distinct from {}").format(
            _comparable(c, "target"), _comparable(c, "excluded")
        )
        for c in value_columns
    ]
    changed.append(sql.SQL("target._deleted_at is not null"))
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    keys = sql.SQL(", ").join(map(sql.Identifier, table.primary_key))
    newest = (
        sql.SQL(", {} desc nulls last").format(sql.Identifier(newest_by))
        if newest_by
        else sql.SQL("")
    )
    cur.execute(
        sql.SQL(
            "with merged as ("
            "insert into {table} as target ({names}, _batch_id) "
            "select distinct on ({keys}) {names}, %(batch_id)s from {stage} "
            "order by {keys}{newest} "
            "on conflict ({keys}) do update set {assignments} where {changed} "
            "returning xmax = 0 as is_insert) "
            "select count(*) filter (where is_insert), count(*) filter (where not is_insert) "
            "from merged"
        ).format(
            table=table.identifier,
            names=names,
            keys=keys,
            newest=newest,
            stage=sql.Identifier(stage),
            assignments=sql.SQL(", ").join(assignments),
            changed=sql.SQL(" or ").join(changed),
        ),
        {"batch_id": batch_id},
    )
    inserted, updated = cur.fetchone()
    return int(inserted), int(updated)


def mark_missing_deleted(
    cur: Cursor,
    table: RawTable,
    batch_id: str,
    *,
    keys: str,
    within: sql.Composable | None = None,
) -> int:
    """Set ``_deleted_at`` on live raw rows whose key is not in the ``keys`` table
    (restricted to ``within``, a condition on the raw table)."""
    condition = within if within is not None else sql.SQL("true")
    cur.execute(
        sql.SQL(
            "update {table} as target set _deleted_at = now(), _loaded_at = now(), "
            "_batch_id = %(batch_id)s "
            "where target._deleted_at is null and ({condition}) "
            "and not exists (select from {keys} as stage where {match})"
        ).format(
            table=table.identifier,
            condition=condition,
            keys=sql.Identifier(keys),
            match=_key_match(table, "target", "stage"),
        ),
        {"batch_id": batch_id},
    )
    return cur.rowcount


def replace_if_changed(cur: Cursor, table: RawTable, batch_id: str) -> tuple[int, int]:
    """Bulk load of a table without a primary key: replace the raw rows with the
    stage when (and only when) the contents differ. Returns (inserted, deleted)."""
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    fingerprint = sql.SQL(
        "select count(*), coalesce(sum(hashtext(cast(row({names}) as text))::numeric), 0) "
        "from {relation} {where}"
    )
    cur.execute(fingerprint.format(names=names, relation=sql.Identifier(STAGE), where=sql.SQL("")))
    staged = cur.fetchone()
    cur.execute(
        fingerprint.format(
            names=names, relation=table.identifier, where=sql.SQL("where _deleted_at is null")
        )
    )
    if cur.fetchone() == staged:
        return 0, 0
    cur.execute(sql.SQL("delete from {}").format(table.identifier))
    deleted = cur.rowcount
    cur.execute(
        sql.SQL("insert into {} ({}, _batch_id) select {}, %(batch_id)s from {}").format(
            table.identifier, names, names, sql.Identifier(STAGE)
        ),
        {"batch_id": batch_id},
    )
    return cur.rowcount, deleted
