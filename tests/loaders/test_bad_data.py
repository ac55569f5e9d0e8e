"""Bad data: byte-exact where the warehouse can hold it, a clear error (table and
column) and nothing written where it cannot."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from loaders.config import TableConfig
from tests.loaders.conftest import custom_source, execute

NOTES = TableConfig(name="notes", mode="incremental", cursor="updated_at", primary_key=("id",))


def test_json_escapes_backslashes_and_control_characters_round_trip(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    execute(
        source_dsn,
        "create table notes (id int primary key, body text, doc json, updated_at timestamptz default now());"
        "insert into notes (id, body, doc) values "
        '(1, E\'\\\\N is not null\', \'{"nul": "\\u0000", "tab": "\\t"}\'),'
        "(2, E'\\x01\\x1f control \\r\\n crlf', '\"\\\\\\\\\"'),"
        "(3, '', null), (4, null, '{}')",
    )
    run_load(custom_source(NOTES))
    compare = "select id, body, cast(doc as text), body is null from {} order by id"
    assert execute(source_dsn, compare.format("notes")) == execute(
        warehouse_dsn, compare.format("raw_app.notes")
    )


@pytest.fixture
def sql_ascii_source(server_admin_dsn: str, run_id: str) -> Callable[[], str]:
    """A legacy source database in SQL_ASCII, which accepts any bytes in text."""
    name = f"twt_{run_id}_ascii"
    admin = psycopg2.connect(server_admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        cur.execute(
            sql.SQL(
                "create database {} encoding 'SQL_ASCII' lc_collate 'C' lc_ctype 'C' template template0"
            ).format(sql.Identifier(name))
        )
    admin.close()
    parts = urlsplit(server_admin_dsn)
    return lambda: urlunsplit(parts._replace(path="/" + name))


def test_invalid_utf8_fails_naming_table_and_column_and_writes_nothing(
    sql_ascii_source: Callable[[], str], warehouse_dsn: str
) -> None:
    from loaders.pipeline import LoadOptions, connector, load_all

    source = sql_ascii_source()
    execute(
        source,
        "create table notes (id int primary key, body text, updated_at timestamptz default now());"
        "insert into notes (id, body) values (1, 'fine'), (2, E'bad \\xff\\xfe bytes')",
    )
    results = load_all(
        (custom_source(NOTES),),
        source_connectors={"app": connector(source, what="source")},
        connect_warehouse=connector(warehouse_dsn, what="warehouse"),
        options=LoadOptions(retries=1),
    )
    (result,) = results
    assert result.status == "failed"
    assert result.error_class == "terminal"
    assert "app.notes" in result.error
    assert "body" in result.error  # the column, from COPY's context
    assert execute(
        warehouse_dsn, "select count(*) from pg_tables where schemaname = 'raw_app'"
    ) == [(0,)]
