"""One table into a Redshift warehouse: the source is read in one snapshot and
staged in S3 as gzip CSV parts; one COPY from the manifest, the merge and the
high-water mark then run in one Redshift transaction (see `redshift.plan_load`)."""

from __future__ import annotations

import time

import psycopg2

from loaders.catalog import validate_table
from loaders.config import SourceConfig, TableConfig
from loaders.extract import build_query, next_read_from, open_snapshot, window_stats
from loaders.redshift import RedshiftLoad, plan_load, run_load, stage_to_s3
from loaders.results import ConnectFn, LoadOptions, TableResult
from loaders.results import aware as _aware
from loaders.sources.redshift import MissingStaging

READ_MARK = (
    "select mark, read_from from ops.high_water_marks where source_name = %s and table_name = %s"
)


def load_table_redshift(
    source: SourceConfig,
    table: TableConfig,
    *,
    connect_source: ConnectFn,
    connect_warehouse: ConnectFn,
    batch_id: str,
    options: LoadOptions,
) -> TableResult:
    import boto3

    if not options.s3_staging or not options.iam_role:
        raise MissingStaging
    result = TableResult(source.name, table.name, table.mode, batch_id)
    started = time.perf_counter()
    source_conn, warehouse_conn = connect_source(), connect_warehouse()
    try:
        src = source_conn.cursor()
        snapshot = open_snapshot(source_conn)
        columns = validate_table(src, source, table)
        read_from = None
        if table.mode == "incremental":
            with warehouse_conn.cursor() as cur:
                try:
                    cur.execute(READ_MARK, (source.name, table.name))
                    row = cur.fetchone()
                except psycopg2.errors.UndefinedTable:
                    row = None
                warehouse_conn.rollback()
            if row:
                result.mark_before, read_from = _aware(row[0]), _aware(row[1])
            assert table.cursor is not None
            result.rows_read, maximum, result.reread = window_stats(
                src, source.source_schema, table.name, table.cursor, read_from, result.mark_before
            )
            result.mark_after = max(
                filter(None, [result.mark_before, _aware(maximum)]), default=None
            )
        query, params = build_query(
            source.source_schema,
            table.name,
            columns,
            cursor_column=table.cursor if table.mode == "incremental" else None,
            read_from=read_from,
        )
        bucket, _, prefix = options.s3_staging.removeprefix("s3://").partition("/")
        staged = stage_to_s3(
            src,
            query,
            params,
            s3=boto3.client("s3"),
            bucket=bucket,
            prefix=f"{prefix.rstrip('/')}/{source.name}/{table.name}/{batch_id}",
        )
        if table.mode == "bulk":
            result.rows_read = staged.rows
        plan = plan_load(
            RedshiftLoad(
                source=source.name,
                raw_schema=source.raw_schema,
                table=table.name,
                columns=columns,
                primary_key=table.primary_key,
                cursor=table.cursor if table.mode == "incremental" else None,
                manifest_url=staged.manifest_url,
                iam_role=options.iam_role,
                batch_id=batch_id,
            ),
            mark=result.mark_after,
            read_from=next_read_from(
                mark=result.mark_after,
                snapshot=snapshot,
                lag=table.lag,
                protect=table.late_commit_protection,
            ),
        )
        run_load(warehouse_conn, plan)
        source_conn.rollback()
    finally:
        result.duration_s = time.perf_counter() - started
        source_conn.close()
        warehouse_conn.close()
    return result
