"""Fixtures for loader tests: a source database with the demo app's schema, an
empty warehouse, and a helper that runs one load job between them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from loaders.config import SourceConfig, TableConfig, load_sources
from loaders.pipeline import LoadOptions, TableResult, connector, load_all

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "demo_app" / "schema.sql"


def execute(dsn: str, statement: str, params: tuple | dict | None = None) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def source_dsn(make_database: Callable[[str], str]) -> str:
    dsn = make_database("src")
    execute(dsn, SCHEMA_SQL.read_text())
    execute(
        dsn,
        "insert into countries values ('US', 'United States', 'Americas'), "
        "('DE', 'Germany', 'Europe'), ('JP', 'Japan', 'Asia')",
    )
    return dsn


@pytest.fixture
def warehouse_dsn(make_database: Callable[[str], str]) -> str:
    return make_database("wh")


@pytest.fixture
def app_source() -> SourceConfig:
    """The shipped declaration of the demo app."""
    return load_sources()[0]


def only(source: SourceConfig, *names: str, **overrides: object) -> SourceConfig:
    """The source with just these tables, optionally with settings overridden."""
    tables = tuple(
        dataclasses.replace(table, **overrides) if overrides else table
        for table in source.tables
        if table.name in names
    )
    return dataclasses.replace(source, tables=tables)


def custom_source(*tables: TableConfig, schema: str = "public") -> SourceConfig:
    return SourceConfig(
        name="app", raw_schema="raw_app", source_schema=schema, dsn_env="X", tables=tables
    )


@pytest.fixture
def run_load(source_dsn: str, warehouse_dsn: str) -> Callable[..., dict[str, TableResult]]:
    def _run(source: SourceConfig, **options: object) -> dict[str, TableResult]:
        results = load_all(
            (source,),
            source_connectors={source.name: connector(source_dsn, what="source")},
            connect_warehouse=connector(warehouse_dsn, what="warehouse"),
            options=LoadOptions(backoff_initial=0.05, backoff_max=0.2, **options),  # type: ignore[arg-type]
        )
        return {result.table: result for result in results}

    return _run


def table_rows(dsn: str, relation: str, columns: str, *, where: str = "true") -> list[tuple]:
    return execute(dsn, f"select {columns} from {relation} where {where} order by 1")
