"""Late commits against a real server, for a source login with pg_read_all_stats and
for one without it: a row written by a transaction that was open during a load,
and committed after it with a cursor value below the new mark, still arrives."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from loaders.config import SourceConfig
from loaders.pipeline import LoadOptions, TableResult, connector, load_all
from tests.loaders.conftest import execute, only, table_rows
from tidewater.runs import ensure_ops_tables, record_table_loads

CUSTOMER_COLUMNS = "customer_id, email, full_name, country_code, updated_at"
LOGINS = ("least_privilege", "pg_read_all_stats")


def add_customers(dsn: str, first: int, last: int) -> None:
    execute(
        dsn,
        "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
        "select g, 'user' || g || '@example.com', 'User ' || g, 'US', now() "
        "from generate_series(%s, %s) as g",
        (first, last),
    )


def with_login(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def source_logins(source_dsn: str, role_prefix: str) -> Iterator[dict[str, str]]:
    """Two real source logins with passwords that may read the tables: one with
    nothing more (least privilege), one also granted pg_read_all_stats."""
    dbname = urlsplit(source_dsn).path.lstrip("/")
    logins = {}
    created = []
    for kind in LOGINS:
        name = f"{role_prefix}reader_{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        statements = [
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(name), sql.Literal(password)
            ),
            sql.SQL("grant connect on database {} to {}").format(
                sql.Identifier(dbname), sql.Identifier(name)
            ),
            sql.SQL("grant usage on schema public to {}").format(sql.Identifier(name)),
            sql.SQL("grant select on all tables in schema public to {}").format(
                sql.Identifier(name)
            ),
        ]
        if kind == "pg_read_all_stats":
            statements.append(sql.SQL("grant pg_read_all_stats to {}").format(sql.Identifier(name)))
        conn = psycopg2.connect(source_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        conn.close()
        created.append(name)
        logins[kind] = with_login(source_dsn, name, password)
    yield logins
    conn = psycopg2.connect(source_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in created:
            cur.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (name,),
            )
            cur.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            cur.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
    conn.close()


def load_as(
    reader_dsn: str, warehouse_dsn: str
) -> Callable[[SourceConfig], dict[str, TableResult]]:
    """Run one load job reading the source as ``reader_dsn``; record it in ops."""

    def _load(source: SourceConfig) -> dict[str, TableResult]:
        results = load_all(
            (source,),
            source_connectors={source.name: connector(reader_dsn, what="source")},
            connect_warehouse=connector(warehouse_dsn, what="warehouse"),
            options=LoadOptions(backoff_initial=0.05, backoff_max=0.2),
        )
        conn = psycopg2.connect(warehouse_dsn)
        conn.autocommit = True
        try:
            ensure_ops_tables(conn)
            record_table_loads(conn, uuid.uuid4().hex[:12], results)
        finally:
            conn.close()
        for result in results:
            assert result.status == "succeeded", result.error
        return {result.table: result for result in results}

    return _load


def customers_only(app_source: SourceConfig) -> SourceConfig:
    # Delete detection would also heal the gap (it re-reads differing key ranges);
    # switch it off so the high-water mark alone is under test.
    return only(app_source, "customers", detect_deletes=False)


@pytest.mark.parametrize("login", LOGINS)
def test_a_row_written_before_a_load_and_committed_after_it_arrives(
    login: str,
    source_dsn: str,
    warehouse_dsn: str,
    app_source: SourceConfig,
    source_logins: dict[str, str],
) -> None:
    load = load_as(source_logins[login], warehouse_dsn)
    source = customers_only(app_source)
    add_customers(source_dsn, 1, 10)
    load(source)
    # An application (another login) writes a row, stamped with its transaction's
    # start, and keeps the transaction open ...
    app = psycopg2.connect(source_dsn)
    with app.cursor() as cur:
        cur.execute(
            "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
            "values (1000, 'late@example.com', 'Late Writer', 'DE', now())"
        )
    # ... while later rows commit and move the mark past it.
    add_customers(source_dsn, 11, 20)
    during = load(source)["customers"]
    app.commit()
    app.close()
    load(source)
    assert table_rows(source_dsn, "customers", CUSTOMER_COLUMNS) == table_rows(
        warehouse_dsn, "raw_app.customers", CUSTOMER_COLUMNS
    )
    if login == "least_privilege":
        assert during.late_commit_safety.startswith("held: 1 transaction(s) of other logins")
    else:
        assert during.late_commit_safety == "proven"
    recorded = execute(
        warehouse_dsn,
        "select late_commit_safety from ops.table_loads where batch_id = %s",
        (during.batch_id,),
    )
    assert recorded == [(during.late_commit_safety,)]


@pytest.mark.parametrize("login", LOGINS)
def test_a_transaction_open_during_a_load_that_writes_only_after_it_still_arrives(
    login: str,
    source_dsn: str,
    warehouse_dsn: str,
    app_source: SourceConfig,
    source_logins: dict[str, str],
) -> None:
    """The writer has no transaction id yet while the load runs (it has only read),
    so the snapshot's list of transactions in progress does not name it; its rows
    are stamped with its start all the same."""
    load = load_as(source_logins[login], warehouse_dsn)
    source = customers_only(app_source)
    add_customers(source_dsn, 1, 10)
    load(source)
    app = psycopg2.connect(source_dsn)
    with app.cursor() as cur:
        cur.execute("select count(*) from customers")
    add_customers(source_dsn, 11, 20)
    load(source)
    with app.cursor() as cur:
        cur.execute(
            "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
            "values (1000, 'late@example.com', 'Late Writer', 'DE', now())"
        )
    app.commit()
    app.close()
    load(source)
    assert execute(
        warehouse_dsn, "select full_name from raw_app.customers where customer_id = 1000"
    ) == [("Late Writer",)]


@pytest.mark.parametrize("login", LOGINS)
def test_a_transaction_open_at_the_first_load_is_waited_for(
    login: str,
    source_dsn: str,
    warehouse_dsn: str,
    app_source: SourceConfig,
    source_logins: dict[str, str],
) -> None:
    """Open before any recorded read: without pg_read_all_stats nothing bounds its
    start, so the reads start from the beginning until it has ended."""
    load = load_as(source_logins[login], warehouse_dsn)
    source = customers_only(app_source)
    add_customers(source_dsn, 1, 10)
    app = psycopg2.connect(source_dsn)
    with app.cursor() as cur:
        cur.execute(
            "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
            "values (1000, 'late@example.com', 'Late Writer', 'DE', now())"
        )
    first = load(source)["customers"]
    add_customers(source_dsn, 11, 20)
    second = load(source)["customers"]
    app.commit()
    app.close()
    load(source)
    assert table_rows(source_dsn, "customers", CUSTOMER_COLUMNS) == table_rows(
        warehouse_dsn, "raw_app.customers", CUSTOMER_COLUMNS
    )
    if login == "least_privilege":
        assert first.late_commit_safety.startswith("held: ")
        assert "the next read starts from the beginning again" in first.late_commit_safety
        assert second.rows_read == 20  # read from the beginning again
    else:
        assert first.late_commit_safety == second.late_commit_safety == "proven"


def test_where_open_transactions_cannot_be_seen_the_mark_is_held_and_said_unproven(
    source_dsn: str,
    warehouse_dsn: str,
    app_source: SourceConfig,
    source_logins: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hardened source that revoked pg_locks from PUBLIC: the least-privilege
    login cannot see when another login's transaction started, nor that it is the
    same one as before. The read start does not move, and the run says why."""
    load = load_as(source_logins["least_privilege"], warehouse_dsn)
    source = customers_only(app_source)
    add_customers(source_dsn, 1, 10)
    load(source)
    execute(source_dsn, "revoke select on pg_catalog.pg_locks from public")
    app = psycopg2.connect(source_dsn)
    with app.cursor() as cur:
        cur.execute(
            "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
            "values (1000, 'late@example.com', 'Late Writer', 'DE', now())"
        )
    add_customers(source_dsn, 11, 20)
    (read_from_before,) = execute(warehouse_dsn, "select read_from from ops.high_water_marks")[0]
    with caplog.at_level(logging.WARNING, logger="loaders.pipeline"):
        during = load(source)["customers"]
    assert during.late_commit_safety.startswith("unproven: pg_locks cannot be read")
    assert "late commits NOT proven safe" in caplog.text
    assert execute(warehouse_dsn, "select read_from from ops.high_water_marks") == [
        (read_from_before,)
    ]
    assert execute(
        warehouse_dsn,
        "select late_commit_safety from ops.table_loads where batch_id = %s",
        (during.batch_id,),
    ) == [(during.late_commit_safety,)]
    app.commit()
    app.close()
    load(source)
    assert table_rows(source_dsn, "customers", CUSTOMER_COLUMNS) == table_rows(
        warehouse_dsn, "raw_app.customers", CUSTOMER_COLUMNS
    )
