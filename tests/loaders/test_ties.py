"""Ties at the mark: many rows sharing the mark's cursor value are re-read only
while a transaction that could still write that value is open; once the tie is
final, reads start strictly after it."""

from __future__ import annotations

import time

import psycopg2
import pytest

from loaders.config import SourceConfig
from tests.loaders.conftest import execute, only
from tests.loaders.test_late_commits import LOGINS, customers_only, load_as, source_logins

__all__ = ["source_logins"]  # the fixture, shared with the late-commit tests

TIED_ROWS = 5_000


def add_tied_customers(dsn: str, first: int, last: int, updated_at: str) -> None:
    """Rows that all carry one cursor value (one bulk write, or a table whose rows
    all share one `last_update`)."""
    execute(
        dsn,
        "insert into customers (customer_id, email, full_name, country_code, signed_up_at, "
        "updated_at) select g, 'user' || g || '@example.com', 'User ' || g, 'US', now(), "
        f"{updated_at} from generate_series(%s, %s) as g",
        (first, last),
    )


def rows_read(warehouse_dsn: str, batch_id: str) -> int:
    return execute(
        warehouse_dsn,
        "select rows_read from ops.table_loads where batch_id = %s and table_name = 'customers'",
        (batch_id,),
    )[0][0]


def test_a_final_tie_at_the_mark_is_not_read_again(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, source_logins: dict[str, str]
) -> None:
    load = load_as(source_logins["least_privilege"], warehouse_dsn)
    source = only(app_source, "customers")
    add_tied_customers(source_dsn, 1, TIED_ROWS, "now() - interval '1 hour'")
    first = load(source)["customers"]
    assert rows_read(warehouse_dsn, first.batch_id) == TIED_ROWS
    second = load(source)["customers"]
    assert rows_read(warehouse_dsn, second.batch_id) == 0
    assert (second.reread, second.inserted, second.updated) == (0, 0, 0)
    # a newer write is still read, and only it
    execute(source_dsn, "update customers set full_name = 'Renamed' where customer_id = 7")
    third = load(source)["customers"]
    assert (rows_read(warehouse_dsn, third.batch_id), third.updated) == (1, 1)
    assert execute(
        warehouse_dsn, "select count(*), count(distinct customer_id) from raw_app.customers"
    ) == [(TIED_ROWS, TIED_ROWS)]


@pytest.mark.parametrize("login", LOGINS)
def test_a_tie_that_can_still_grow_is_read_again_until_it_is_final(
    login: str,
    source_dsn: str,
    warehouse_dsn: str,
    app_source: SourceConfig,
    source_logins: dict[str, str],
) -> None:
    load = load_as(source_logins[login], warehouse_dsn)
    source = customers_only(app_source)
    add_tied_customers(source_dsn, 1, 10, "now() - interval '1 day'")
    load(source)
    # A writer starts; rows stamped with exactly its start time commit meanwhile.
    app = psycopg2.connect(source_dsn)
    with app.cursor() as cur:
        cur.execute("select now()::text")
        (started,) = cur.fetchone()
    add_tied_customers(source_dsn, 11, 10 + TIED_ROWS, f"'{started}'::timestamptz")
    during = load(source)["customers"]
    assert rows_read(warehouse_dsn, during.batch_id) == TIED_ROWS
    # The open writer can still add to the tie: it does, and commits.
    with app.cursor() as cur:
        cur.execute(
            "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
            "values (100000, 'late@example.com', 'Late Writer', 'DE', now())"
        )
    app.commit()
    app.close()
    stamped = execute(
        source_dsn, "select updated_at::text from customers where customer_id = 100000"
    )
    assert stamped == [(started,)]  # the same cursor value as the tie
    time.sleep(0.5)  # past the margin for transactions starting at a look
    after = load(source)["customers"]
    assert execute(
        warehouse_dsn, "select full_name from raw_app.customers where customer_id = 100000"
    ) == [("Late Writer",)]
    assert rows_read(warehouse_dsn, after.batch_id) >= TIED_ROWS + 1  # the tie, read again
    # Nothing can add to the tie any more: it is not read again.
    final = load(source)["customers"]
    assert rows_read(warehouse_dsn, final.batch_id) == 0
