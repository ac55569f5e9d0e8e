"""Any PostgreSQL source: types round-trip, awkward names work, the schema drifts
safely, and declarations are checked before anything is written."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
import pytest

from loaders.catalog import is_widening
from loaders.config import TableConfig
from loaders.exceptions import LoadRunFailed
from loaders.pipeline import raise_on_failure
from tests.loaders.conftest import custom_source, execute

AWKWARD_TABLE = """
create type mood as enum ('happy', 'sad');
create domain positive_int as integer check (value > 0);
create type pair as (left_part text, right_part integer);
create table "Odd Table" (
    "ID" bigint primary key,
    "select" text,
    mood mood,
    moods mood[],
    amount positive_int,
    pair pair,
    tags text[],
    matrix integer[],
    doc json,
    docb jsonb,
    blob bytea,
    money_ numeric,
    ratio double precision,
    at_ timestamptz,
    plain_at timestamp,
    took interval,
    uid uuid,
    search tsvector,
    updated_at timestamptz not null default now()
);
insert into "Odd Table" values
    (1, E'tab\\there\\nnewline \\\\ backslash "quotes" ''single''', 'happy', '{happy,sad}', 5,
     row('a,b', 2), '{"x y", "z\\"q", NULL}', '{{1,2},{3,4}}', '{"b": 1,  "a": [1, 2]}',
     '{"k": "v\\u00e9"}', '\\x00ff10', 12345678901234567890.123456789, 'NaN',
     'infinity', '-infinity', '1 year 2 mons 3 days 04:05:06.789',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', to_tsvector('english', 'the quick brown foxes'),
     now()),
    (2, 'héllo wörld ✓ 日本', 'sad', '{}', 1, null, null, null, 'null', '[]', '', 'NaN',
     '-Infinity', '2026-01-01 00:00:00.123456+05:30', '2026-01-01 12:00', '-1 day',
     null, null, now()),
    (3, repeat('x', 1000000), null, null, null, null, null, null, null, null, null, 0,
     'Infinity', null, null, null, null, null, now());
"""

ODD = TableConfig(
    name="Odd Table",
    mode="incremental",
    cursor="updated_at",
    primary_key=("ID",),
    detect_deletes=True,
)


BOTH_FORMATS = pytest.mark.parametrize(
    ("binary_copy", "copy_format"), [(True, "binary"), (False, "text")], ids=["binary", "text"]
)


@BOTH_FORMATS
def test_every_type_round_trips_byte_for_byte(
    source_dsn: str, warehouse_dsn: str, run_load, binary_copy: bool, copy_format: str
) -> None:
    execute(source_dsn, AWKWARD_TABLE)
    results = run_load(custom_source(ODD), binary_copy=binary_copy)
    raise_on_failure(list(results.values()))
    assert results["Odd Table"].copy_format == copy_format
    columns = (
        '"ID", "select", cast(mood as text), cast(moods as text[]), amount, cast(pair as text), tags, '
        "matrix, cast(doc as text), docb, blob, money_, ratio, at_, plain_at, took, uid, search"
    )
    # compared as text, so NaN, infinities and bytea compare by their exact bytes
    as_text = f'select cast(row({columns}) as text) from {{}} order by "ID"'
    source = execute(source_dsn, as_text.format('"Odd Table"'))
    warehouse = execute(warehouse_dsn, as_text.format('raw_app."Odd Table"'))
    assert len(source) == 3
    assert source == warehouse
    # text form too: exactly the same bytes, json whitespace included
    assert execute(source_dsn, 'select doc::text from "Odd Table" where "ID" = 1') == execute(
        warehouse_dsn, 'select doc::text from raw_app."Odd Table" where "ID" = 1'
    )
    second = run_load(custom_source(ODD), binary_copy=binary_copy)["Odd Table"]
    assert (second.inserted, second.updated, second.deleted) == (0, 0, 0)


def test_user_defined_types_become_portable_types(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    execute(source_dsn, AWKWARD_TABLE)
    run_load(custom_source(ODD))
    types = dict(
        execute(
            warehouse_dsn,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'raw_app' and table_name = 'Odd Table'",
        )
    )
    assert types["mood"] == "text"
    assert types["moods"] == "ARRAY"
    assert types["amount"] == "integer"
    assert types["pair"] == "text"


def test_views_and_partitioned_tables_can_be_sources(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    execute(
        source_dsn,
        "create table measurements (id int, taken_at timestamptz not null, value real) "
        "partition by range (taken_at);"
        "create table measurements_2025 partition of measurements "
        "for values from ('2025-01-01') to ('2026-01-01');"
        "create table measurements_2026 partition of measurements "
        "for values from ('2026-01-01') to ('2027-01-01');"
        "insert into measurements values (1, '2025-06-01', 1.5), (2, '2026-06-01', 2.5);"
        "create view country_names as select country_code, country_name from countries;",
    )
    source = custom_source(
        TableConfig(name="measurements", mode="bulk"),
        TableConfig(name="country_names", mode="bulk", primary_key=("country_code",)),
    )
    raise_on_failure(list(run_load(source).values()))
    assert execute(warehouse_dsn, "select id, value from raw_app.measurements order by 1") == [
        (1, 1.5),
        (2, 2.5),
    ]
    assert execute(warehouse_dsn, "select count(*) from raw_app.country_names") == [(3,)]
    # a table without a primary key reloads in bulk, and an unchanged one writes nothing
    again = run_load(source)
    assert again["measurements"].inserted == 0
    execute(source_dsn, "insert into measurements values (3, '2026-07-01', 3.5)")
    assert run_load(source)["measurements"].inserted == 3
    assert execute(warehouse_dsn, "select count(*) from raw_app.measurements") == [(3,)]


def _widgets(source_dsn: str) -> TableConfig:
    execute(
        source_dsn,
        "create table widgets (id int primary key, name varchar(10), size smallint, "
        "gone text, updated_at timestamptz not null default now());"
        "insert into widgets values (1, 'a', 1, 'x'), (2, 'b', 2, 'y')",
    )
    return TableConfig(name="widgets", mode="incremental", cursor="updated_at", primary_key=("id",))


def test_schema_drift_adds_keeps_and_widens_columns(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    widgets = _widgets(source_dsn)
    run_load(custom_source(widgets))
    execute(
        source_dsn,
        "alter table widgets add column colour text;"
        "alter table widgets drop column gone;"
        "alter table widgets alter column name type varchar(50);"
        "alter table widgets alter column size type bigint;"
        "update widgets set colour = 'red', name = repeat('n', 40), size = 5000000000 where id = 1;"
        "insert into widgets (id, name, size, colour) values (3, 'c', 3, 'blue')",
    )
    raise_on_failure(list(run_load(custom_source(widgets)).values()))
    rows = execute(
        warehouse_dsn, "select id, name, size, colour, gone from raw_app.widgets order by id"
    )
    assert rows == [
        (1, "n" * 40, 5_000_000_000, "red", None),
        (2, "b", 2, None, "y"),
        (3, "c", 3, "blue", None),
    ]


def test_an_incompatible_type_change_fails_clearly_and_writes_nothing(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    widgets = _widgets(source_dsn)
    run_load(custom_source(widgets))
    before = execute(warehouse_dsn, "select * from raw_app.widgets order by id")
    execute(
        source_dsn,
        "alter table widgets alter column size type text; update widgets set size = 'huge'",
    )
    results = run_load(custom_source(widgets))
    assert results["widgets"].status == "failed"
    assert "widgets.size changed type from smallint to text" in results["widgets"].error
    assert execute(warehouse_dsn, "select * from raw_app.widgets order by id") == before


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        (TableConfig(name="custmers", mode="bulk"), "no table or view 'custmers'"),
        (
            TableConfig(
                name="customers",
                mode="incremental",
                cursor="modified_at",
                primary_key=("customer_id",),
            ),
            "cursor column 'modified_at' does not exist; choose one of: customer_id, email",
        ),
        (
            TableConfig(
                name="customers", mode="incremental", cursor="updated_at", primary_key=("id",)
            ),
            "primary_key column 'id' does not exist",
        ),
        (
            TableConfig(
                name="customers",
                mode="incremental",
                cursor="customer_id",
                primary_key=("customer_id",),
            ),
            "an incremental cursor must be a timestamp",
        ),
    ],
)
def test_a_bad_declaration_names_the_candidates_and_writes_nothing(
    source_dsn: str, warehouse_dsn: str, run_load, declaration: TableConfig, message: str
) -> None:
    results = run_load(custom_source(declaration))
    result = next(iter(results.values()))
    assert result.status == "failed"
    assert message in result.error
    with pytest.raises(LoadRunFailed):
        raise_on_failure(list(results.values()))
    assert execute(
        warehouse_dsn, "select count(*) from pg_tables where schemaname = 'raw_app'"
    ) == [(0,)]


@pytest.mark.parametrize(
    ("old", "new", "widens"),
    [
        ("smallint", "integer", True),
        ("integer", "bigint", True),
        ("bigint", "integer", False),
        ("character varying(10)", "character varying(20)", True),
        ("character varying(20)", "character varying(10)", False),
        ("character varying(20)", "text", True),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(10,3)", False),
        ("numeric(10,2)", "numeric", True),
        ("integer", "numeric(12,0)", True),
        ("real", "double precision", True),
        ("text", "integer", False),
        ("timestamp without time zone", "timestamp with time zone", True),
    ],
)
def test_widening_rules(old: str, new: str, widens: bool) -> None:
    assert is_widening(old, new) is widens


def test_a_batch_holding_one_key_with_two_contents_fails_instead_of_picking_one(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    """One consistent snapshot showing a key twice with different contents means the
    declared key is not unique there: the loader says so rather than guess which row
    is right (it used to keep the one with the newest cursor)."""
    execute(
        source_dsn,
        "create table versions (id int, label text, updated_at timestamptz not null);"
        "insert into versions values (1, 'only', '2026-01-01'), (2, 'only', '2026-01-01');"
        "create view latest as select * from versions",
    )
    view = TableConfig(name="latest", mode="incremental", cursor="updated_at", primary_key=("id",))
    raise_on_failure(list(run_load(custom_source(view)).values()))
    execute(
        source_dsn,
        "insert into versions values (2, 'newer', '2026-01-03'), (2, 'stale', '2026-01-02')",
    )
    result = run_load(custom_source(view))["latest"]
    assert result.status == "failed"
    assert "primary_key (id) is not unique in the source" in result.error
    assert "e.g. id=2 (3 different rows)" in result.error
    assert execute(warehouse_dsn, "select id, label from raw_app.latest order by id") == [
        (1, "only"),
        (2, "only"),
    ]


def test_a_failed_first_load_leaves_no_raw_schema_behind(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    results = run_load(custom_source(TableConfig(name="custmers", mode="bulk")))
    assert results["custmers"].status == "failed"
    assert execute(
        warehouse_dsn, "select count(*) from pg_namespace where nspname = 'raw_app'"
    ) == [(0,)]


def test_first_loads_of_many_tables_at_once_share_one_new_raw_schema(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    execute(
        source_dsn,
        "create table t1 (id int primary key); create table t2 (id int primary key);"
        "create table t3 (id int primary key); create table t4 (id int primary key);"
        "insert into t1 values (1); insert into t2 values (2); insert into t3 values (3);"
        "insert into t4 values (4)",
    )
    tables = [TableConfig(name=f"t{n}", mode="bulk", primary_key=("id",)) for n in range(1, 5)]
    results = run_load(custom_source(*tables), workers=4)
    assert {name: result.status for name, result in results.items()} == dict.fromkeys(
        ["t1", "t2", "t3", "t4"], "succeeded"
    ), [result.error for result in results.values()]


# xml values cannot be typed in on a server built without libxml (the embedded one);
# this stands in for a production server that has it: text, relabelled as xml.
RAW_XML = "create function raw_xml(text) returns xml language internal immutable strict as 'rtrim1'"


def warehouse_has_xml(dsn: str) -> bool:
    try:
        execute(dsn, "select cast('<x/>' as xml)")
    except psycopg2.errors.FeatureNotSupported:
        return False
    return True


@BOTH_FORMATS
def test_xml_loads_as_text_into_a_warehouse_without_xml_support(
    server_admin_dsn: str,
    source_dsn: str,
    warehouse_dsn: str,
    run_load,
    binary_copy: bool,
    copy_format: str,
) -> None:
    source_db = urlsplit(source_dsn).path.lstrip("/")
    execute(urlunsplit(urlsplit(server_admin_dsn)._replace(path="/" + source_db)), RAW_XML)
    execute(
        source_dsn,
        "create table docs (id int primary key, body xml, parts xml[], "
        "updated_at timestamptz not null default now());"
        "insert into docs (id, body, parts) values "
        "(1, raw_xml('<a b=\"1\">x &amp; y</a>'), array[raw_xml('<p/>'), raw_xml('<q>2</q>')]),"
        "(2, null, null)",
    )
    docs = TableConfig(name="docs", mode="incremental", cursor="updated_at", primary_key=("id",))
    result = run_load(custom_source(docs), binary_copy=binary_copy)["docs"]
    assert result.status == "succeeded", result.error
    assert result.copy_format == copy_format
    compare = "select id, cast(body as text), cast(parts as text[]) from {} order by id"
    assert execute(warehouse_dsn, compare.format("raw_app.docs")) == execute(
        source_dsn, compare.format("docs")
    )
    types = dict(
        execute(
            warehouse_dsn,
            "select column_name, udt_name from information_schema.columns "
            "where table_schema = 'raw_app' and table_name = 'docs'",
        )
    )
    if warehouse_has_xml(warehouse_dsn):
        assert (types["body"], types["parts"]) == ("xml", "_xml")
        assert result.warnings == []
    else:
        assert (types["body"], types["parts"]) == ("text", "_text")
        assert result.warnings == [
            "app.docs: column(s) body, parts are xml in the source and load as text: "
            "the warehouse has no XML support (built without libxml)"
        ]


@BOTH_FORMATS
def test_built_in_range_types_keep_their_type(
    source_dsn: str, warehouse_dsn: str, run_load, binary_copy: bool, copy_format: str
) -> None:
    execute(
        source_dsn,
        "create type floatrange as range (subtype = float8);"
        "create table bookings (id int primary key, seats int4range, stay tstzrange, "
        "days daterange[], slots int4multirange, odd floatrange);"
        "insert into bookings values (1, '[1,5)', '[2026-01-01 10:00+00,2026-01-02 10:00+00)', "
        "'{\"[2026-01-01,2026-01-03)\"}', '{[1,2), [5,9)}', '[1.5,2.5]'), "
        "(2, 'empty', '(,)', '{}', '{}', null)",
    )
    bookings = custom_source(TableConfig(name="bookings", mode="bulk", primary_key=("id",)))
    result = run_load(bookings, binary_copy=binary_copy)
    assert result["bookings"].status == "succeeded", result["bookings"].error
    assert result["bookings"].copy_format == copy_format
    types = dict(
        execute(
            warehouse_dsn,
            "select column_name, udt_name from information_schema.columns "
            "where table_schema = 'raw_app' and table_name = 'bookings'",
        )
    )
    assert [types[c] for c in ("seats", "stay", "days", "slots", "odd")] == [
        "int4range",
        "tstzrange",
        "_daterange",
        "int4multirange",
        "text",  # a range of a user-defined type has no counterpart in the warehouse
    ]
    compare = "select id, seats, stay, days, slots, cast(odd as text) from {} order by id"
    assert execute(warehouse_dsn, compare.format("raw_app.bookings")) == execute(
        source_dsn, compare.format("bookings")
    )
    again = run_load(bookings, binary_copy=binary_copy)
    assert (again["bookings"].inserted, again["bookings"].updated) == (0, 0)


PARTITIONED = (
    "create table measurements (id int, taken_at timestamptz not null, value real) "
    "partition by range (taken_at);"
    "create table measurements_2025 partition of measurements "
    "for values from ('2025-01-01') to ('2026-01-01');"
    "insert into measurements values (1, '2025-06-01', 1.5);"
)


def test_declaring_a_partitioned_table_and_its_partition_warns_of_storing_rows_twice(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    execute(source_dsn, PARTITIONED)
    results = run_load(
        custom_source(
            TableConfig(name="measurements", mode="bulk"),
            TableConfig(name="measurements_2025", mode="bulk"),
        )
    )
    assert results["measurements"].warnings == []
    assert results["measurements_2025"].warnings == [
        "app.measurements_2025 is a partition of app.measurements, which is declared too: "
        "its rows are stored twice (raw_app.measurements and raw_app.measurements_2025); "
        "declare only one of them"
    ]


def test_the_candidates_for_a_missing_table_include_partitions(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    execute(source_dsn, PARTITIONED)
    result = run_load(custom_source(TableConfig(name="measurements_2205", mode="bulk")))
    error = result["measurements_2205"].error
    assert "choose one of:" in error
    assert "measurements_2025" in error and "measurements," in error
