"""Redshift as a source: ``UNLOAD`` the read window to S3 (gzip CSV parts and a
manifest), then stream the parts into the PostgreSQL warehouse with COPY and
merge them like any other load — rows, merge and high-water mark in one
warehouse transaction.

Redshift has no ``COPY … TO STDOUT`` and no ``pg_stat_activity`` transaction
starts, so the late-commit protection of PostgreSQL sources is replaced by the
table's ``lag`` (Redshift transactions are serializable; a writer's rows carry
the timestamps its application gives them). Declare a source as Redshift with
``meta.tidewater.kind: redshift`` and name the bucket in ``TIDEWATER_S3_STAGING``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

from loaders.catalog import Column
from loaders.exceptions import DeclarationError
from loaders.extract import build_query
from loaders.redshift import unload
from tidewater.lock import hold_table_load

if TYPE_CHECKING:
    from loaders.config import SourceConfig, TableConfig
    from loaders.pipeline import ConnectFn, LoadOptions, TableResult

# information_schema exists on Redshift; types are reported in PostgreSQL terms.
REDSHIFT_COLUMNS = """
select column_name, data_type, character_maximum_length, numeric_precision, numeric_scale
from information_schema.columns
where table_schema = %(schema)s and table_name = %(table)s
order by ordinal_position
"""

_WAREHOUSE_TYPES = {
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "real": "real",
    "double precision": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamp without time zone": "timestamp without time zone",
    "timestamp with time zone": "timestamp with time zone",
    "time without time zone": "time without time zone",
    "super": "jsonb",
    "varbyte": "bytea",
}


def warehouse_type(
    data_type: str, length: int | None, precision: int | None, scale: int | None
) -> str:
    """The PostgreSQL warehouse type for a Redshift column."""
    if data_type in ("character varying", "character"):
        return f"{data_type}({length})" if length else "text"
    if data_type == "numeric":
        return f"numeric({precision},{scale})" if precision else "numeric"
    return _WAREHOUSE_TYPES.get(data_type, "text")


def read_columns(cur: Any, schema: str, table: str) -> tuple[Column, ...]:
    cur.execute(REDSHIFT_COLUMNS, {"schema": schema, "table": table})
    columns = []
    for name, data_type, length, precision, scale in cur.fetchall():
        target = warehouse_type(data_type, length, precision, scale)
        # Redshift's own type name, so extraction casts nothing it need not
        columns.append(Column(name, target, target))
    return tuple(columns)


@dataclass(frozen=True)
class UnloadPlan:
    """What to run on Redshift for one table's read window."""

    statement: sql.Composed
    manifest_url: str


def plan_unload(
    source_cursor: Any,
    source: SourceConfig,
    table: TableConfig,
    columns: tuple[Column, ...],
    *,
    read_from: datetime | None,
    s3_staging: str,
    iam_role: str,
    batch_id: str,
) -> UnloadPlan:
    """``UNLOAD`` of select → filter on the cursor (inclusive) to a batch prefix."""
    query, params = build_query(
        source.source_schema,
        table.name,
        columns,
        cursor_column=table.cursor if table.mode == "incremental" else None,
        read_from=read_from,
    )
    prefix = f"{s3_staging.rstrip('/')}/{source.name}/{table.name}/{batch_id}/"
    statement = unload(
        source_cursor.mogrify(query, params).decode(), s3_prefix=prefix, iam_role=iam_role
    )
    return UnloadPlan(statement=statement, manifest_url=prefix + "manifest")


def load_table_from_redshift(
    source: SourceConfig,
    table: TableConfig,
    *,
    connect_source: ConnectFn,
    connect_warehouse: ConnectFn,
    batch_id: str,
    options: LoadOptions,
) -> TableResult:
    """One table from a Redshift source into the PostgreSQL warehouse."""
    import boto3

    from loaders.load import (
        STAGE,
        create_stage,
        ensure_indexes,
        ensure_schema,
        merge_stage,
        prepare_raw_table,
    )
    from loaders.pipeline import TableResult, _aware
    from loaders.redshift import copy_manifest_into_postgres
    from loaders.redshift_pipeline import MissingStaging
    from loaders.state import Mark, ensure_state_table, read_mark, write_mark

    if not options.s3_staging or not options.iam_role:
        raise MissingStaging
    result = TableResult(source.name, table.name, table.mode, batch_id)
    started = time.perf_counter()
    source_conn, warehouse_conn = connect_source(), connect_warehouse()
    try:
        src = source_conn.cursor()
        columns = read_columns(src, source.source_schema, table.name)
        if not columns:
            raise DeclarationError(
                f"{source.name}.{table.name}",
                f"no table {table.name!r} in schema {source.source_schema!r} of the Redshift source",
            )
        wh = warehouse_conn.cursor()
        hold_table_load(wh, f"{source.raw_schema}.{table.name}")
        ensure_schema(wh, source.raw_schema)
        ensure_state_table(wh)
        raw, created = prepare_raw_table(
            wh, source.raw_schema, table.name, columns, table.primary_key
        )
        previous = None if created else read_mark(wh, source.name, table.name)
        read_from = previous.read_from if previous else None
        result.mark_before = previous.mark if previous else None
        plan = plan_unload(
            src,
            source,
            table,
            columns,
            read_from=read_from,
            s3_staging=options.s3_staging,
            iam_role=options.iam_role,
            batch_id=batch_id,
        )
        unloaded_at = datetime.now(UTC)
        src.execute(plan.statement)
        create_stage(wh, raw)
        result.rows_read = copy_manifest_into_postgres(
            wh,
            sql.Identifier(STAGE),
            [c.name for c in columns],
            boto3.client("s3"),
            plan.manifest_url,
        )
        ensure_indexes(wh, raw)
        if raw.primary_key:
            result.inserted, result.updated = merge_stage(wh, raw, batch_id, newest_by=table.cursor)
        if table.mode == "incremental" and table.cursor:
            wh.execute(
                sql.SQL("select max({}) from {}").format(
                    sql.Identifier(table.cursor), sql.Identifier(STAGE)
                )
            )
            newest = _aware(wh.fetchone()[0])
            mark = max(filter(None, [result.mark_before, newest]), default=None)
            result.mark_after = mark
            upper = min(mark, unloaded_at) if mark else None
            write_mark(
                wh,
                source.name,
                table.name,
                Mark(table.cursor, mark, upper - table.lag if upper else None),
                batch_id,
            )
        warehouse_conn.commit()
    finally:
        result.duration_s = time.perf_counter() - started
        source_conn.close()
        warehouse_conn.close()
    return result
