"""Redshift paths without a cluster: generated SQL (parsed by sqlfluff's redshift
dialect) and S3 staging against a local S3-compatible server (moto)."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator

import psycopg2
import pytest
import sqlfluff
from psycopg2 import sql

from loaders import redshift
from loaders.catalog import Column, read_source_columns
from loaders.extract import build_query
from tests.loaders.conftest import execute

COLUMNS = (
    Column("order_id", "bigint", "bigint"),
    Column("status", "order_status", "text"),
    Column("total", "numeric(12,2)", "numeric(12,2)"),
    Column("payload", "jsonb", "jsonb"),
    Column("session_id", "uuid", "uuid"),
    Column("tags", "text[]", "text[]"),
    Column("updated_at", "timestamp with time zone", "timestamp with time zone"),
)


@pytest.fixture
def pg(source_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(source_dsn)
    yield conn
    conn.close()


def parses_as_redshift(statement: str) -> None:
    sqlfluff.parse(statement, dialect="redshift")  # raises if Redshift syntax is violated


@pytest.mark.parametrize(
    ("postgres", "expected"),
    [
        ("bigint", "bigint"),
        ("text", "character varying(65535)"),
        ("jsonb", "super"),
        ("uuid", "character(36)"),
        ("text[]", "super"),
        ("numeric(12,2)", "numeric(12,2)"),
        ("numeric", "numeric(38,10)"),
        ("timestamp with time zone", "timestamp with time zone"),
        ("tsvector", "character varying(65535)"),
        ("bytea", "varbyte(1024000)"),
    ],
)
def test_source_types_map_to_redshift_types(postgres: str, expected: str) -> None:
    assert redshift.redshift_type(postgres) == expected


def test_raw_table_ddl_is_redshift_sql(pg) -> None:
    statement = redshift.create_raw_table(
        "raw_app", "orders", COLUMNS, sort_key="updated_at"
    ).as_string(pg)
    assert '"status" character varying(65535)' in statement
    assert '"payload" super' in statement
    assert 'sortkey ("updated_at")' in statement
    assert "_loaded_at timestamptz not null default getdate()" in statement
    parses_as_redshift(statement)


def test_copy_from_manifest_reads_gzip_csv_with_the_null_marker(pg) -> None:
    statement = redshift.copy_from_manifest(
        sql.Identifier("_tidewater_stage"),
        [column.name for column in COLUMNS],
        manifest_url="s3://bucket/app/orders/batch-1/manifest.json",
        iam_role="arn:aws:iam::123456789012:role/loader",
        region="eu-west-1",
    ).as_string(pg)
    assert statement.startswith('copy "_tidewater_stage" ("order_id", "status"')
    assert "from 's3://bucket/app/orders/batch-1/manifest.json'" in statement
    assert "iam_role 'arn:aws:iam::123456789012:role/loader' manifest" in statement
    assert "format as csv null as" in statement and "gzip" in statement
    parses_as_redshift(statement)


def test_merge_is_null_safe_without_is_distinct_from(pg) -> None:
    statements = [
        s.as_string(pg)
        for s in redshift.merge(
            sql.Identifier("raw_app", "orders"),
            "_tidewater_stage",
            [column.name for column in COLUMNS],
            ["order_id"],
            "batch-1",
        )
    ]
    update, insert = statements
    assert "is distinct from" not in update
    assert '"raw_app"."orders"."order_id" = "stage"."order_id"' in update
    assert '("raw_app"."orders"."status" is null and "stage"."status" is not null)' in update
    assert "where not exists (select 1 from" in insert
    for statement in statements:
        parses_as_redshift(statement)


def test_unload_quotes_the_query_as_a_literal(pg) -> None:
    paid = sql.SQL("status = {}").format(sql.Literal("paid"))
    query, params = build_query("public", "orders", COLUMNS[:2], extra_filter=paid)
    statement = redshift.unload(
        pg.cursor().mogrify(query, params).decode(),
        s3_prefix="s3://bucket/unload/orders/",
        iam_role="arn:aws:iam::1:role/r",
    ).as_string(pg)
    assert statement.startswith(
        """unload ('select "order_id", cast("status" as text) as "status" """
    )
    assert "where (true) and (status = ''paid'')') to 's3://bucket/unload/orders/'" in statement
    assert "manifest" in statement and "gzip" in statement
    parses_as_redshift(statement)


def test_rows_split_only_at_row_ends() -> None:
    rows = [b'1,"a\nmultiline, ""quoted"" value"\n', b"2,plain\n", b'3,"x\ny\nz"\n'] * 50
    parts = list(redshift.split_rows(iter(rows), part_bytes=100))
    assert len(parts) > 3
    assert b"".join(part for part, _ in parts) == b"".join(rows)
    assert sum(count for _, count in parts) == 150
    for part, _ in parts:
        assert part.endswith(b"\n")
        assert part.count(b'"') % 2 == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A local S3-compatible server (moto) and a client pointed at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="tidewater-stage")
    yield client
    server.stop()


def test_rows_stage_to_s3_as_gzip_parts_with_a_manifest_and_load_back(
    source_dsn: str, warehouse_dsn: str, s3
) -> None:
    execute(
        source_dsn,
        "create table notes (id int primary key, body text, tags text[], doc jsonb);"
        "insert into notes select g, case when g % 7 = 0 then null when g % 11 = 0 then '' "
        "else E'line one\\nline \"two\", with comma\\\\ and tab\\t ' || g end, "
        "array['a,b', null, 'c\"d'], jsonb_build_object('g', g) from generate_series(1, 3000) g",
    )
    conn = psycopg2.connect(source_dsn)
    try:
        with conn.cursor() as cur:
            columns = read_source_columns(cur, "public", "notes")
            query, params = build_query("public", "notes", columns)
            staged = redshift.stage_to_s3(
                cur,
                query,
                params,
                s3=s3,
                bucket="tidewater-stage",
                prefix="app/notes/b1",
                part_bytes=32_000,
            )
    finally:
        conn.close()
    assert staged.rows == 3000
    assert len(staged.parts) > 1
    manifest = redshift.read_manifest(s3, staged.manifest_url)
    assert manifest == [f"s3://tidewater-stage/{part['key']}" for part in staged.parts]
    first = s3.get_object(Bucket="tidewater-stage", Key=staged.parts[0]["key"])["Body"].read()
    assert len(first) == staged.parts[0]["bytes"]
    assert gzip.decompress(first).endswith(b"\n")

    # The same files (the shape UNLOAD writes too) stream into a PostgreSQL warehouse.
    execute(warehouse_dsn, "create table notes (id int, body text, tags text[], doc jsonb)")
    target = psycopg2.connect(warehouse_dsn)
    try:
        with target.cursor() as cur:
            loaded = redshift.copy_manifest_into_postgres(
                cur, sql.Identifier("notes"), ["id", "body", "tags", "doc"], s3, staged.manifest_url
            )
        target.commit()
    finally:
        target.close()
    assert loaded == 3000
    compare = "select cast(row(id, body, tags, doc) as text) from notes order by id"
    assert execute(source_dsn, compare) == execute(warehouse_dsn, compare)


def test_a_redshift_source_unloads_its_read_window_to_a_batch_prefix(pg) -> None:
    from datetime import UTC, datetime

    from loaders.config import SourceConfig, TableConfig
    from loaders.source_redshift import plan_unload

    source = SourceConfig(
        name="legacy", raw_schema="raw_legacy", source_schema="sales", dsn_env="X", kind="redshift"
    )
    table = TableConfig(
        name="orders", mode="incremental", cursor="updated_at", primary_key=("order_id",)
    )
    plan = plan_unload(
        pg.cursor(),
        source,
        table,
        (COLUMNS[0], COLUMNS[6]),
        read_from=datetime(2026, 1, 1, tzinfo=UTC),
        s3_staging="s3://bucket/stage",
        iam_role="arn:aws:iam::1:role/unload",
        batch_id="b7",
    )
    statement = plan.statement.as_string(pg)
    assert plan.manifest_url == "s3://bucket/stage/legacy/orders/b7/manifest"
    assert "where \"updated_at\" >= ''2026-01-01T00:00:00+00:00''::timestamptz" in statement
    assert "to 's3://bucket/stage/legacy/orders/b7/'" in statement
    parses_as_redshift(statement)


def test_redshift_source_columns_map_to_warehouse_types(source_dsn: str) -> None:
    """information_schema reads the same on Redshift and PostgreSQL."""
    from loaders.source_redshift import read_columns, warehouse_type

    execute(
        source_dsn,
        "create table legacy (id bigint, name varchar(40), amount numeric(12,2), note text)",
    )
    conn = psycopg2.connect(source_dsn)
    try:
        columns = read_columns(conn.cursor(), "public", "legacy")
    finally:
        conn.close()
    assert [(c.name, c.warehouse_type) for c in columns] == [
        ("id", "bigint"),
        ("name", "character varying(40)"),
        ("amount", "numeric(12,2)"),
        ("note", "text"),
    ]
    assert warehouse_type("super", None, None, None) == "jsonb"
