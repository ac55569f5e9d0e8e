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


# --- a declared key that is not unique in the source: an error, never a silent drop ---

LEDGER = """
create table ledger (id int not null, label text, amount numeric, updated_at timestamptz not null);
insert into ledger values
    (1, 'one', 10, '2026-01-01'), (2, 'two', 20, '2026-01-01'), (3, 'three', 30, '2026-01-01');
"""


def ledger(mode: str) -> TableConfig:
    if mode == "incremental":
        return TableConfig(
            name="ledger", mode="incremental", cursor="updated_at", primary_key=("id",)
        )
    return TableConfig(name="ledger", mode="bulk", primary_key=("id",))


def assert_names_the_key(error: str) -> None:
    assert "app.ledger" in error
    assert "primary_key (id) is not unique in the source" in error
    assert "e.g. id=2" in error
    assert "1 key value(s)" in error
    assert "nothing was written" in error


@pytest.mark.parametrize("mode", ["incremental", "bulk"])
def test_a_declared_key_that_is_not_unique_fails_the_first_load_and_writes_nothing(
    source_dsn: str, warehouse_dsn: str, run_load, mode: str
) -> None:
    execute(source_dsn, LEDGER + "insert into ledger values (2, 'deux', 20, '2026-01-02');")
    result = run_load(custom_source(ledger(mode)))["ledger"]
    assert result.status == "failed"
    assert result.error_class == "terminal"
    assert_names_the_key(result.error)
    assert execute(
        warehouse_dsn, "select count(*) from pg_tables where schemaname = 'raw_app'"
    ) == [(0,)]


@pytest.mark.parametrize("mode", ["incremental", "bulk"])
def test_a_key_that_becomes_duplicate_fails_the_next_load_and_changes_nothing(
    source_dsn: str, warehouse_dsn: str, run_load, mode: str
) -> None:
    execute(source_dsn, LEDGER)
    assert run_load(custom_source(ledger(mode)))["ledger"].status == "succeeded"
    before = execute(warehouse_dsn, "select id, label, _batch_id from raw_app.ledger order by id")
    marks = execute(warehouse_dsn, "select mark, read_from from ops.high_water_marks")
    execute(
        source_dsn,
        "update ledger set updated_at = '2026-01-03' where id = 3;"
        "insert into ledger values (2, 'deux', 20, '2026-01-03')",
    )
    result = run_load(custom_source(ledger(mode)))["ledger"]
    assert result.status == "failed"
    assert_names_the_key(result.error)
    assert execute(
        warehouse_dsn, "select id, label, _batch_id from raw_app.ledger order by id"
    ) == (before)
    assert execute(warehouse_dsn, "select mark, read_from from ops.high_water_marks") == marks


@pytest.mark.parametrize("mode", ["incremental", "bulk"])
def test_the_same_row_read_twice_is_not_a_duplicate_key(
    source_dsn: str, warehouse_dsn: str, run_load, mode: str
) -> None:
    """A view may show one row twice (a union of overlapping parts): identical contents
    under one key in one snapshot are one row, loaded once."""
    execute(
        source_dsn,
        LEDGER + "create view ledger_view as select * from ledger "
        "union all select * from ledger where id = 2",
    )
    table = ledger(mode)
    view = TableConfig(
        name="ledger_view",
        mode=table.mode,
        cursor=table.cursor,
        primary_key=table.primary_key,
    )
    result = run_load(custom_source(view))["ledger_view"]
    assert result.status == "succeeded", result.error
    assert execute(warehouse_dsn, "select id, label from raw_app.ledger_view order by id") == [
        (1, "one"),
        (2, "two"),
        (3, "three"),
    ]
