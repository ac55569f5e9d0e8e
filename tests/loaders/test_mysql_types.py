"""MySQL/MariaDB sources: every type round-trips exactly, identifiers of any spelling
load, zero dates are refused, the declaration accepts kind: mysql, and no message
shows a password. Against the MariaDB service (skipped without it; CI fails)."""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import psycopg2
import pytest

from loaders.config import TableConfig, validate_declaration
from loaders.dsn import parse_mysql_dsn, redact_mysql_dsn
from loaders.exceptions import LoadRunFailed, MalformedDsn, SourceUnreachable
from loaders.pipeline import raise_on_failure
from loaders.sources import check_source
from loaders.sources.mysql import warehouse_type
from tests.loaders.conftest import (
    execute,
    load_mysql,
    mysql_dsn,
    mysql_execute,
    mysql_source,
)

TABLE = "Order Items"  # a space and mixed case
CREATE = """
create table `Order Items` (
    id int primary key,
    `select` varchar(40),
    `Mixed Case` text,
    `we``ird` char(5),
    amount decimal(30,10),
    ratio float,
    exact double,
    is_paid tinyint(1),
    small tinyint,
    small_u tinyint unsigned,
    mid mediumint unsigned,
    whole int unsigned,
    big bigint,
    big_u bigint unsigned,
    flags bit(5),
    wide_bits bit(64),
    status enum('new', 'paid', 'shipped'),
    tags set('red', 'green', 'blue'),
    payload blob,
    fixed binary(4),
    var_bytes varbinary(10),
    day date,
    at_local datetime(6),
    at_instant timestamp(6) null,
    span time(6),
    yr year,
    doc json,
    doubled int as (id * 2) virtual,
    label varchar(50) as (concat(`select`, '!')) stored,
    updated_at timestamp(6) not null default current_timestamp(6)
        on update current_timestamp(6)
) character set utf8mb4
"""
INSERT = """
insert into `Order Items` (id, `select`, `Mixed Case`, `we``ird`, amount, ratio, exact,
    is_paid, small, small_u, mid, whole, big, big_u, flags, wide_bits, status, tags, payload,
    fixed, var_bytes, day, at_local, at_instant, span, yr, doc)
values
    (1, 'tab\there', 'line\nbreak \\\\ back\\\\slash \r cr 😀 ünï', 'ab', 12345678901234567890.0123456789,
     3.14159, 0.1, 1, -128, 255, 16777215, 4294967295, -9223372036854775808,
     18446744073709551615, b'10101', b'1111111111111111111111111111111111111111111111111111111111111111',
     'paid', 'red,blue', x'00ff5c0a09', x'00000001', x'', '2024-02-29',
     '2024-03-01 12:00:00.000001', '2038-01-19 03:14:07.999999', '-838:59:59.000000', 2155,
     '{"a": [1, 2.5, "\\\\n", null], "emoji": "😀"}'),
    (2, '', '\\\\N', '', -0.0000000001, 1.2345678, 1.7976931348623157e308,
     0, 127, 0, 0, 0, 9223372036854775807,
     0, b'00000', b'0', 'new', '', x'', x'ff', x'5c', '1000-01-01',
     '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01', '838:59:59.999999', 1901,
     '[]'),
    (3, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
     null, null, null, null, null, null, null, null, null, null, null, null)
"""
COLUMNS = [
    "id",
    "select",
    "Mixed Case",
    "we`ird",
    "amount",
    "ratio",
    "exact",
    "is_paid",
    "small",
    "small_u",
    "mid",
    "whole",
    "big",
    "big_u",
    "flags",
    "wide_bits",
    "status",
    "tags",
    "payload",
    "fixed",
    "var_bytes",
    "day",
    "at_local",
    "at_instant",
    "span",
    "yr",
    "doc",
    "doubled",
    "label",
]


@pytest.fixture(scope="module")
def typed_table(mysql_database: str) -> str:
    mysql_execute(mysql_database, CREATE, INSERT)
    return mysql_database


def _mysql_rows(database: str) -> list[tuple]:
    """The source rows as Python values, read independently of the loader: floats
    widened to double (exact), bits as integers, timestamps in UTC."""
    select = ", ".join(
        f"cast(`{c}` as double)"
        if c == "ratio"
        else f"cast(`{c}` as unsigned)"
        if c in ("flags", "wide_bits")
        else "`" + c.replace("`", "``") + "`"
        for c in COLUMNS
    )
    return mysql_execute(
        database,
        "set time_zone = '+00:00'",
        f"select {select} from `Order Items` order by id",
    )


def _normalized_mysql(row: tuple) -> dict[str, object]:
    values = dict(zip(COLUMNS, row, strict=True))
    out: dict[str, object] = {}
    for name, value in values.items():
        if value is None:
            out[name] = None
        elif name == "ratio":
            out[name] = struct.pack("f", value)  # the stored single-precision value
        elif name == "flags":
            out[name] = format(int(value), "05b")
        elif name == "wide_bits":
            out[name] = format(int(value), "064b")
        elif name == "is_paid":
            out[name] = bool(value)
        elif name == "tags":
            out[name] = (
                set(value) if isinstance(value, set) else set(filter(None, value.split(",")))
            )
        elif name == "doc":
            out[name] = json.loads(value)
        elif name == "at_instant":
            out[name] = value.isoformat()
        elif name in ("big_u", "amount"):
            out[name] = Decimal(value)
        elif isinstance(value, bytes | bytearray) and name != "we`ird":
            out[name] = bytes(value)
        else:
            out[name] = value
    return out


def _normalized_warehouse(row: tuple) -> dict[str, object]:
    values = dict(zip(COLUMNS, row, strict=True))
    out: dict[str, object] = {}
    for name, value in values.items():
        if value is None:
            out[name] = None
        elif name == "ratio":
            out[name] = struct.pack("f", value)
        elif name == "tags":
            out[name] = set(filter(None, value.split(",")))
        elif name == "at_instant":
            out[name] = value.replace(tzinfo=None).isoformat()
            assert value.utcoffset().total_seconds() == 0
        elif name in ("big_u", "amount"):
            out[name] = Decimal(value)
        elif isinstance(value, memoryview):
            out[name] = bytes(value)
        else:
            out[name] = value
    return out


@pytest.mark.parametrize("driver", ["mysqlclient", "pymysql"])
def test_every_mysql_type_round_trips_exactly(
    typed_table: str, warehouse_dsn: str, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the C driver, and with the pure-Python fallback."""
    if driver == "pymysql":
        pytest.importorskip("pymysql", reason="PyMySQL (the pure-Python fallback) is not installed")
    monkeypatch.setenv("TIDEWATER_MYSQL_DRIVER", driver)
    source = mysql_source(
        typed_table,
        TableConfig(name=TABLE, mode="incremental", cursor="updated_at", primary_key=("id",)),
    )
    results = load_mysql(source, mysql_dsn(typed_table), warehouse_dsn, retries=1)
    raise_on_failure(list(results.values()))
    assert results[TABLE].inserted == 3
    select = ", ".join('"' + c.replace('"', '""') + '"' for c in COLUMNS)
    loaded = execute(warehouse_dsn, f'select {select} from raw_shop."Order Items" order by id')
    expected = [_normalized_mysql(row) for row in _mysql_rows(typed_table)]
    got = [_normalized_warehouse(row) for row in loaded]
    for want, have in zip(expected, got, strict=True):
        for column in COLUMNS:
            assert have[column] == want[column], (column, have[column], want[column])
    # the warehouse types: unsigned integers one step wider, booleans, intervals, jsonb
    types = dict(
        execute(
            warehouse_dsn,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'raw_shop' and table_name = 'Order Items'",
        )
    )
    assert types["small_u"] == "smallint"
    assert types["whole"] == "bigint"
    assert types["big_u"] == "numeric"
    assert types["is_paid"] == "boolean"
    assert types["span"] == "interval"
    assert types["doc"] == "jsonb"
    assert types["payload"] == "bytea"
    assert types["at_instant"] == "timestamp with time zone"
    assert types["at_local"] == "timestamp without time zone"
    assert types["flags"] == "bit"


@pytest.mark.parametrize(
    ("data_type", "column_type", "expected"),
    [
        ("tinyint", "tinyint(1)", "boolean"),
        ("tinyint", "tinyint(4) unsigned", "smallint"),
        ("smallint", "smallint(5) unsigned", "integer"),
        ("int", "int(10) unsigned", "bigint"),
        ("bigint", "bigint(20) unsigned", "numeric(20,0)"),
        ("decimal", "decimal(10,2)", "numeric(10,2)"),
        ("char", "char(3)", "character varying(3)"),
        ("enum", "enum('a','b')", "text"),
        ("set", "set('a','b')", "text"),
        ("longblob", "longblob", "bytea"),
        ("time", "time(3)", "interval"),
        ("datetime", "datetime", "timestamp without time zone"),
        ("bit", "bit(7)", "bit(7)"),
    ],
)
def test_mysql_types_map_to_warehouse_types(
    data_type: str, column_type: str, expected: str
) -> None:
    precision, scale = (10, 2) if data_type == "decimal" else (None, None)
    assert warehouse_type(data_type, column_type, precision, scale) == expected


def test_a_zero_date_is_refused_with_a_clear_error(mysql_database: str, warehouse_dsn: str) -> None:
    mysql_execute(
        mysql_database,
        "set session sql_mode = ''",
        "create table legacy (id int primary key, born date, seen datetime)",
        "insert into legacy values (1, '2020-01-01', '2020-01-01 00:00:00'), "
        "(2, '0000-00-00', '2020-01-01 00:00:00')",
    )
    source = mysql_source(
        mysql_database, TableConfig(name="legacy", mode="bulk", primary_key=("id",))
    )
    results = load_mysql(source, mysql_dsn(mysql_database), warehouse_dsn, retries=1)
    with pytest.raises(LoadRunFailed) as failed:
        raise_on_failure(list(results.values()))
    message = str(failed.value)
    assert "legacy.born holds the zero date '0000-00-00'" in message
    assert "terminal" in message
    assert not execute(warehouse_dsn, "select to_regclass('raw_shop.legacy')")[0][0]


def test_the_declaration_accepts_kind_mysql() -> None:
    document = {
        "sources": [
            {
                "name": "shop",
                "config": {"meta": {"tidewater": {"kind": "mysql", "source_schema": "shop"}}},
                "tables": [{"name": "orders", "config": {"meta": {"tidewater": {"mode": "bulk"}}}}],
            }
        ]
    }
    validate_declaration(document, "models/shop.yml")


def test_mysql_dsns_are_parsed_and_redacted_without_the_password() -> None:
    dsn = parse_mysql_dsn("mysql://loader:s%40cret@db.internal:3307/shop", env="X")
    assert (dsn.host, dsn.port, dsn.user, dsn.password, dsn.database) == (
        "db.internal",
        3307,
        "loader",
        "s@cret",
        "shop",
    )
    assert "s@cret" not in repr(dsn)
    assert redact_mysql_dsn("mysql://loader:s3cret@db:3306/shop") == "mysql://loader@db:3306/shop"
    with pytest.raises(MalformedDsn, match="TIDEWATER_SOURCE_SHOP_DSN") as bad:
        parse_mysql_dsn("postgresql://loader:s3cret@db/shop", env="TIDEWATER_SOURCE_SHOP_DSN")
    assert "s3cret" not in str(bad.value)


def test_a_wrong_password_is_one_line_naming_the_variable_not_the_password(
    mysql_database: str,
) -> None:
    user = f"tw_pw_{mysql_database[-8:]}"
    mysql_execute(
        None,
        f"create user '{user}'@'%' identified by 'right-one'",
        f"grant select on `{mysql_database}`.* to '{user}'@'%'",
    )
    try:
        source = mysql_source(mysql_database)
        with pytest.raises(SourceUnreachable) as failed:
            check_source(source, mysql_dsn(mysql_database, user, "Wr0ngPassw0rd"))
        message = str(failed.value)
        assert "TIDEWATER_SOURCE_SHOP_DSN" in message
        assert "Wr0ngPassw0rd" not in message
        assert "\n" not in message
        check_source(source, mysql_dsn(mysql_database, user, "right-one"))
    finally:
        mysql_execute(None, f"drop user '{user}'@'%'")


def test_columns_added_and_widened_at_the_source_follow_into_the_warehouse(
    mysql_database: str, warehouse_dsn: str
) -> None:
    mysql_execute(
        mysql_database,
        "create table drift (id int primary key, n smallint)",
        "insert into drift values (1, 7)",
    )
    source = mysql_source(
        mysql_database, TableConfig(name="drift", mode="bulk", primary_key=("id",))
    )
    dsn = mysql_dsn(mysql_database)
    raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
    mysql_execute(
        mysql_database,
        "alter table drift modify n bigint, add column note varchar(10)",
        "insert into drift values (2, 9000000000, 'new')",
    )
    raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
    assert execute(warehouse_dsn, "select id, n, note from raw_shop.drift order by id") == [
        (1, 7, None),
        (2, 9000000000, "new"),
    ]
    conn = psycopg2.connect(warehouse_dsn)
    try:
        cur = conn.cursor()
        cur.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = 'raw_shop.drift'::regclass and attname = 'n'"
        )
        assert cur.fetchone()[0] == "bigint"
    finally:
        conn.close()
