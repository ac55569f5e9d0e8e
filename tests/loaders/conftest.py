"""Fixtures for loader tests: a source database with the demo app's schema, an
empty warehouse, and a helper that runs one load job between them."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
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


# -- MySQL/MariaDB sources ---------------------------------------------------------

MYSQL_HOST = os.environ.get("TIDEWATER_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("TIDEWATER_TEST_MYSQL_PORT", "3306"))
MYSQL_ADMIN = os.environ.get("TIDEWATER_TEST_MYSQL_USER", "root")


def mysql_execute(database: str | None, *statements: str, params: tuple = ()) -> list[tuple]:
    """Run statements as the MariaDB admin (autocommit); the last one's rows, as
    Python values (the driver's own conversions)."""
    import MySQLdb

    conn = MySQLdb.connect(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user=MYSQL_ADMIN,
        database=database or "",
        charset="utf8mb4",
        autocommit=True,
    )
    try:
        cur = conn.cursor()
        rows: list[tuple] = []
        for statement in statements:
            cur.execute(statement, params or None)
            rows = list(cur.fetchall()) if cur.description else []
        return rows
    finally:
        conn.close()


def mysql_reachable() -> str | None:
    """None when the MariaDB service answers; else why not."""
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        return "mysqlclient is not installed (pip install -e '.[mysql]')"
    try:
        mysql_execute(None, "select 1")
    except Exception as exc:
        return f"MariaDB/MySQL at {MYSQL_HOST}:{MYSQL_PORT} is unreachable: {exc}"
    return None


@pytest.fixture(scope="module")
def mysql_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A uniquely named database for one test module, dropped afterwards; skips when
    the MariaDB service is unreachable (fails instead when CI=true)."""
    problem = mysql_reachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {problem}")
        pytest.skip(problem)
    name = f"tw_{request.module.__name__.rsplit('.', 1)[-1][:20]}_{uuid.uuid4().hex[:8]}"
    mysql_execute(None, f"create database `{name}` character set utf8mb4")
    try:
        yield name
    finally:
        mysql_execute(None, f"drop database if exists `{name}`")


def mysql_dsn(database: str, user: str = MYSQL_ADMIN, password: str = "") -> str:
    auth = f"{user}:{password}" if password else user
    return f"mysql://{auth}@{MYSQL_HOST}:{MYSQL_PORT}/{database}"


def mysql_source(database: str, *tables: TableConfig, name: str = "shop") -> SourceConfig:
    return SourceConfig(
        name=name,
        raw_schema=f"raw_{name}",
        source_schema=database,
        dsn_env=f"TIDEWATER_SOURCE_{name.upper()}_DSN",
        tables=tables,
        kind="mysql",
    )


def load_mysql(
    source: SourceConfig, dsn: str, warehouse: str, **options: object
) -> dict[str, TableResult]:
    from loaders.sources import connector_for

    results = load_all(
        (source,),
        source_connectors={source.name: connector_for(source, dsn)},
        connect_warehouse=connector(warehouse, what="warehouse"),
        options=LoadOptions(backoff_initial=0.05, backoff_max=0.2, **options),  # type: ignore[arg-type]
    )
    return {result.table: result for result in results}
