"""The Redshift warehouse engine, driven through the one per-table skeleton without a
cluster.

Every statement the engine sends is recorded, parsed with sqlfluff's ``redshift``
dialect and checked for PostgreSQL-only constructs and for its order (lock before
stage, mark in the merge's transaction). The statements also run for real: the
warehouse is the test server behind `tests.redshift_wire.RedshiftWire`, which answers
as Redshift 8.0.2 (so the kit's own Redshift detection picks the Redshift SQL), and
the rows staged in S3 go to a local S3 server (moto). What PostgreSQL cannot run is
rewritten by the recorder, and only that (`as_postgres`):

- ``COPY … FROM 's3://…' IAM_ROLE … MANIFEST``: the manifest's gzip CSV parts are
  streamed into the same table with PostgreSQL's COPY (`copy_manifest_into_postgres`);
- ``DISTSTYLE AUTO`` and ``SORTKEY (…)`` of the raw table's DDL are dropped;
- ``getdate()`` is a SQL function the test creates in the warehouse database.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import pytest
import sqlfluff
from psycopg2 import sql

from loaders import redshift
from loaders.config import SourceConfig, TableConfig
from loaders.pipeline import load_table, prepare_warehouse
from loaders.results import LoadOptions, TableResult, new_batch_id
from tests.loaders.conftest import execute
from tests.redshift_wire import RedshiftWire
from tidewater.lock import LockTimeout, ensure_lock_tables, hold_ddl
from tidewater.runs import record_job, record_table_loads

# Constructs Redshift does not have; none may reach it.
POSTGRES_ONLY = (
    "jsonb",
    "on conflict",
    "::",
    "any(",
    "savepoint",
    "create index",
    "set_config",
    "pg_locks",
    "to_regclass",
    "unnest",
    "distinct on",
    "returning",
    "is distinct from",
    "add column if not exists",
    "lock_timeout",
    " in share ",
    " in exclusive ",
)
COPY_FROM_S3 = re.compile(
    r'^copy "(?P<table>[^"]+)" \((?P<columns>[^)]*)\) from \'(?P<url>s3://[^\']+)\'', re.I
)
STAGING = "s3://tidewater-stage/loads"
TEMPLATES: list[str] = []


def as_postgres(statement: str) -> str:
    """The statement with Redshift-only table attributes dropped (see module doc)."""
    statement = re.sub(r" diststyle auto", "", statement)
    return re.sub(r' sortkey \("[^"]+"\)', "", statement)


class RecordingCursor:
    """Records every statement (bound, as sent) and runs it on a real cursor."""

    def __init__(self, real: psycopg2.extensions.cursor, log: list[str], s3: Any) -> None:
        self._real = real
        self._log = log
        self._s3 = s3
        # The statements as the code wrote them, before psycopg2 binds the values
        # (it binds a datetime as '…'::timestamptz, a cast Redshift accepts too).
        self._templates = TEMPLATES

    def execute(self, statement: Any, params: Any = None) -> None:
        if isinstance(statement, sql.Composable):
            statement = statement.as_string(self._real)
        elif isinstance(statement, bytes):
            statement = statement.decode()
        bound = self._real.mogrify(statement, params).decode()
        self._log.append(bound)
        self._templates.append(statement)
        copy = COPY_FROM_S3.match(bound)
        if copy:
            columns = [name.strip().strip('"') for name in copy["columns"].split(",")]
            redshift.copy_manifest_into_postgres(
                self._real, sql.Identifier(copy["table"]), columns, self._s3, copy["url"]
            )
            return
        self._real.execute(as_postgres(bound))

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *_: object) -> None:
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class RecordingConnection:
    """A psycopg2 connection whose cursors record, and whose ends are recorded."""

    def __init__(self, real: psycopg2.extensions.connection, log: list[str], s3: Any) -> None:
        self._real = real
        self._log = log
        self._s3 = s3

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self._real.cursor(), self._log, self._s3)

    def commit(self) -> None:
        self._log.append("-- commit")
        self._real.commit()

    def rollback(self) -> None:
        self._log.append("-- rollback")
        self._real.rollback()

    @property
    def autocommit(self) -> bool:
        return bool(self._real.autocommit)

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._real.autocommit = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A local S3-compatible server (moto); boto3's default client points at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    patch = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(name, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="tidewater-stage")
    yield client
    patch.undo()
    server.stop()


@pytest.fixture
def redshift_dsn(warehouse_dsn: str) -> Iterator[str]:
    """The warehouse database behind a relay that answers as Redshift 8.0.2."""
    execute(
        warehouse_dsn,
        "create function getdate() returns timestamp language sql as 'select localtimestamp'",
    )
    parts = urlsplit(warehouse_dsn)
    wire = RedshiftWire((parts.hostname or "127.0.0.1", parts.port or 5432), libpq=True)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{wire.port}"
    relayed = urlunsplit(
        parts._replace(
            netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host,
            query="&".join(filter(None, [parts.query, _password(parts.query), "sslmode=disable"])),
        )
    )
    yield relayed
    wire.close()


def _password(query: str) -> str:
    """The passfile's password as a DSN parameter (the file names the server's port,
    not the relay's)."""
    passfile = parse_qs(query).get("passfile")
    if not passfile:
        return ""
    for line in Path(passfile[0]).read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 5 and fields[3] == "postgres":
            return urlencode({"password": fields[4]})
    return ""


def recording(dsn: str, log: list[str], s3: Any) -> Callable[[], RecordingConnection]:
    return lambda: RecordingConnection(psycopg2.connect(dsn), log, s3)


SOURCE_TABLES = """
create table sales (
    sale_id bigint primary key,
    note text,
    amount numeric(12,2),
    updated_at timestamptz not null
);
insert into sales
select g,
    case when g % 5 = 0 then null when g % 7 = 0 then E'\\\\N'
        else E'tab\\there, "quoted", back\\\\slash\\nnew line ' || g end,
    g * 1.25,
    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
from generate_series(1, 300) as g;
create table countries_list (code text primary key, name text);
insert into countries_list values ('US', 'United States'), ('DE', 'Germany'), ('JP', 'Japan');
create table events_log (kind text, happened date);
insert into events_log values ('a', '2026-01-01'), ('b', '2026-01-02');
"""
COMPARE = {
    "sales": "select sale_id, note, amount, updated_at from {} order by sale_id",
    "countries_list": "select code, name from {} order by code",
    "events_log": "select kind, happened from {} order by kind",
}


def _source() -> SourceConfig:
    return SourceConfig(
        name="app",
        raw_schema="raw_app",
        source_schema="public",
        dsn_env="X",
        tables=(
            TableConfig(
                name="sales", mode="incremental", cursor="updated_at", primary_key=("sale_id",)
            ),
            TableConfig(name="countries_list", mode="bulk", primary_key=("code",)),
            TableConfig(name="events_log", mode="bulk"),
        ),
    )


def _load(
    source_dsn: str, redshift_dsn: str, s3: Any, table: TableConfig, log: list[str]
) -> TableResult:
    return load_table(
        _source(),
        table,
        connect_source=lambda: psycopg2.connect(source_dsn),
        connect_warehouse=recording(redshift_dsn, log, s3),
        batch_id=new_batch_id(),
        options=LoadOptions(
            warehouse_type="redshift",
            s3_staging=STAGING,
            iam_role="arn:aws:iam::123456789012:role/tidewater-copy",
        ),
    )


@pytest.fixture(autouse=True)
def _fresh_templates() -> None:
    TEMPLATES.clear()


def assert_redshift_sql(log: list[str], *, bound_too: bool = True) -> None:
    """Every statement parses as Redshift and uses nothing PostgreSQL-only (checked
    as written, and for the load's statements, whose values are bound without casts,
    also as sent)."""
    assert log and TEMPLATES
    for template in dict.fromkeys(TEMPLATES + (log if bound_too else [])):
        # outside string literals (an IAM role's ARN holds '::')
        lowered = re.sub(r"'(?:[^']|'')*'", "''", " ".join(template.lower().split()))
        found = [construct for construct in POSTGRES_ONLY if construct in lowered]
        assert not found, f"PostgreSQL-only {found} in: {template}"
    for statement in dict.fromkeys(log):
        if statement.startswith("-- "):
            continue
        sqlfluff.parse(statement, dialect="redshift")  # raises on non-Redshift syntax
    TEMPLATES.clear()


def _index(log: list[str], pattern: str, *, last: bool = False) -> int:
    hits = [
        i
        for i, statement in enumerate(log)
        if re.search(pattern, " ".join(statement.split()), re.I)
    ]
    assert hits, f"no statement matches {pattern!r}"
    return hits[-1] if last else hits[0]


def assert_one_transaction(log: list[str], raw: str, *, marked: bool) -> None:
    """Lock before stage, merge and mark after it, one commit at the very end."""
    lock = _index(log, rf'^lock "raw_app"\."{raw}"$')
    stage = _index(log, r"^copy .* from 's3://")
    merge = _index(log, rf'^(update|insert into|delete from) "raw_app"\."{raw}"')
    end = _index(log, r"^-- (commit|rollback)")
    assert lock < stage < merge < end
    assert log[end] == "-- commit" and end == len(log) - 1
    if marked:
        mark = _index(log, r'^insert into "?ops"?\."?high_water_marks"?', last=True)
        assert _index(log, r'^delete from "?ops"?\."?high_water_marks"?') < mark
        assert merge < mark < end


def test_an_incremental_table_loads_into_redshift_in_one_transaction(
    source_dsn: str, redshift_dsn: str, warehouse_dsn: str, s3: Any
) -> None:
    execute(source_dsn, SOURCE_TABLES)
    sales = _source().tables[0]
    log: list[str] = []
    first = _load(source_dsn, redshift_dsn, s3, sales, log)
    assert_redshift_sql(log)
    assert_one_transaction(log, "sales", marked=True)
    assert (first.rows_read, first.inserted) == (300, 300)
    raw = COMPARE["sales"].format('"raw_app"."sales"')
    assert execute(warehouse_dsn, raw) == execute(source_dsn, COMPARE["sales"].format("sales"))

    # A change and a new row: only the window above the mark is read and merged.
    execute(
        source_dsn,
        "update sales set note = 'changed', updated_at = updated_at + interval '1 day' "
        "where sale_id = 10; insert into sales values (301, null, 1, "
        "timestamptz '2026-02-01 00:00:00+00')",
    )
    log.clear()
    second = _load(source_dsn, redshift_dsn, s3, sales, log)
    assert_redshift_sql(log)
    assert_one_transaction(log, "sales", marked=True)
    assert (second.inserted, second.updated) == (1, 1)
    assert execute(warehouse_dsn, raw) == execute(source_dsn, COMPARE["sales"].format("sales"))
    assert execute(
        warehouse_dsn,
        "select mark, batch_id from ops.high_water_marks "
        "where source_name = 'app' and table_name = 'sales'",
    ) == [(execute(source_dsn, "select max(updated_at) from sales")[0][0], second.batch_id)]
    assert second.mark_before == first.mark_after


def test_bulk_tables_load_into_redshift_and_mark_rows_that_are_gone(
    source_dsn: str, redshift_dsn: str, warehouse_dsn: str, s3: Any
) -> None:
    execute(source_dsn, SOURCE_TABLES)
    _, countries, events = _source().tables
    for table in (countries, events):
        log: list[str] = []
        _load(source_dsn, redshift_dsn, s3, table, log)
        assert_redshift_sql(log)
        assert_one_transaction(log, table.name, marked=False)
    execute(source_dsn, "delete from countries_list where code = 'DE'; delete from events_log")
    log = []
    result = _load(source_dsn, redshift_dsn, s3, countries, log)
    assert_redshift_sql(log)
    assert (result.inserted, result.updated, result.deleted) == (0, 0, 1)
    gone = "select code from raw_app.countries_list where _deleted_at is not null"
    assert execute(warehouse_dsn, gone) == [("DE",)]
    result = _load(source_dsn, redshift_dsn, s3, events, [])
    assert (result.inserted, result.deleted) == (0, 2)
    for name in ("countries_list", "events_log"):
        query = COMPARE[name]
        live = f'(select * from "raw_app"."{name}" where _deleted_at is null) as live'
        assert execute(warehouse_dsn, query.format(live)) == execute(source_dsn, query.format(name))


def test_run_records_and_the_mark_table_are_written_in_redshift_sql(
    redshift_dsn: str, warehouse_dsn: str, s3: Any
) -> None:
    log: list[str] = []
    connect = recording(redshift_dsn, log, s3)
    prepare_warehouse(connect, (_source(),))
    with record_job(connect, "load") as run:
        result = TableResult("app", "sales", "incremental", "b1", rows_read=3, inserted=3)
        conn = connect()
        conn.autocommit = True
        record_table_loads(conn, run.run_id, [result])
        record_table_loads(conn, run.run_id, [result])  # written twice, kept once
        conn.close()
    assert_redshift_sql(log, bound_too=False)  # job records bind datetimes
    recorded = "select runs.status, loads.rows_read from ops.table_loads as loads inner join ops.job_runs as runs using (run_id)"
    assert execute(warehouse_dsn, recorded) == [("succeeded", 3)]


def test_a_redshift_lock_wait_ends_at_its_timeout(
    redshift_dsn: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hold_ddl` on Redshift: `LOCK ops.ddl_lock`, its wait bounded by statement_timeout."""
    log: list[str] = []
    connect = recording(redshift_dsn, log, s3)
    holder, waiter = connect(), connect()
    try:
        # The lock tables exist before runs contend (`prepare_warehouse` creates them).
        ensure_lock_tables(holder.cursor())
        holder.commit()
        hold_ddl(holder.cursor())
        monkeypatch.setenv("TIDEWATER_LOCK_TIMEOUT", "0.2")
        with pytest.raises(LockTimeout, match="gave up waiting for the schema lock"):
            hold_ddl(waiter.cursor())
        # No savepoints: the waiting transaction was rolled back, then the holders asked
        # of svv_transactions (absent from PostgreSQL: "an unknown session" here).
        assert "from svv_transactions" in log[-1]
        assert waiter.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_INERROR
        holder.commit()
        hold_ddl(waiter.cursor())
        waiter.commit()
    finally:
        holder.close()
        waiter.close()
    assert_redshift_sql(log)
    assert _index(log, r'^lock "ops"\."ddl_lock"$') > _index(
        log, r"^set statement_timeout to 600000$"
    )


@pytest.mark.parametrize(
    ("text_row", "csv_row"),
    [
        (b"1\tplain\n", b'"1","plain"\n'),
        (b"2\t\\N\n", b'"2",\\N\n'),
        (b"3\t\\\\N\n", b'"3","\\N"\n'),
        (b'4\ttab\\there\\nnew "q"\n', b'"4","tab\there\nnew ""q"""\n'),
        (b"5\t\\101\\x42\\\\\n", b'"5","AB\\"\n'),
    ],
)
def test_copy_text_rows_become_csv_with_the_null_marker(text_row: bytes, csv_row: bytes) -> None:
    from loaders.warehouse_redshift import text_to_csv

    # fed in one-byte chunks: rows are cut only at line ends
    assert b"".join(text_to_csv(text_row[i : i + 1] for i in range(len(text_row)))) == csv_row
