"""simulate and late_commit: live traffic that keeps the app's invariants."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import pytest
from psycopg2 import sql

from demo_app import (
    ANCHOR,
    COUNT_KEYS,
    InvalidOption,
    LateTransactionClosed,
    create_app,
    find_violations,
    late_commit,
    simulate,
)
from tests.demo_app.conftest import query, row_counts, scalar


def violations(dsn: str) -> dict[str, int]:
    conn = psycopg2.connect(dsn)
    try:
        return find_violations(conn)
    finally:
        conn.close()


def ids(dsn: str, table: str, key: str) -> set[int]:
    statement = sql.SQL("select {} from {}").format(sql.Identifier(key), sql.Identifier(table))
    return {row[0] for row in query(dsn, statement)}


def test_simulate_inserts_updates_and_deletes(app_dsn: str) -> None:
    before = row_counts(app_dsn)
    old_orders = ids(app_dsn, "orders", "order_id")
    old_customers = ids(app_dsn, "customers", "customer_id")

    counts = simulate(app_dsn, steps=200, seed=5)

    assert set(counts) == set(COUNT_KEYS)
    for key in (
        "customers_inserted", "customers_updated", "customers_deleted", "products_updated",
        "orders_inserted", "orders_updated", "orders_deleted", "order_items_inserted",
        "order_items_deleted", "payments_inserted", "payments_deleted", "events_inserted",
    ):  # fmt: skip
        assert counts[key] > 0, key
    after = row_counts(app_dsn)
    for table in ("customers", "orders", "order_items", "payments", "events"):
        expected = before[table] + counts[f"{table}_inserted"] - counts.get(f"{table}_deleted", 0)
        assert after[table] == expected, table
    assert old_orders - ids(app_dsn, "orders", "order_id")  # some orders were deleted
    assert old_customers - ids(app_dsn, "customers", "customer_id")
    for table in ("customers", "products", "orders"):
        # generated rows that were updated now carry the server's clock
        changed = sql.SQL("select count(*) from {} where created_at < %s and updated_at > %s")
        assert scalar(app_dsn, changed.format(sql.Identifier(table)), (ANCHOR, ANCHOR)) > 0


def test_invariants_hold_after_simulate_with_late_commits(app_dsn: str) -> None:
    counts = simulate(app_dsn, steps=150, seed=11, late_commit_probability=0.3)

    assert counts["late_commits"] > 0
    assert violations(app_dsn) == {}
    left_open = scalar(
        app_dsn,
        """
        select count(*) from pg_stat_activity
        where datname = current_database() and state like 'idle in transaction%%'
        """,
    )
    assert left_open == 0


def test_simulate_with_a_seed_repeats_the_same_changes(
    make_database: Callable[[str], str],
) -> None:
    first, second = make_database("app"), make_database("app")
    for dsn in (first, second):
        create_app(dsn, scale=0.1, seed=2)

    counts = [simulate(dsn, steps=60, seed=9) for dsn in (first, second)]

    assert counts[0] == counts[1]
    state = "select order_id, status, order_total from orders order by order_id"
    assert query(first, state) == query(second, state)


def test_late_commit_rows_are_stamped_before_rows_committed_earlier(app_dsn: str) -> None:
    with late_commit(app_dsn, seed=1) as late:
        done = late.write()
        simulate(app_dsn, steps=40, seed=3)  # commits while the late transaction is open
        committed_first = scalar(app_dsn, "select max(updated_at) from orders")
        invisible = scalar(
            app_dsn, "select count(*) from orders where order_id = any(%s)", (late.order_ids,)
        )

    assert done["orders_inserted"] == 1
    assert done["orders_updated"] == 1
    assert done["order_items_inserted"] >= 1
    assert committed_first > late.started_at
    stamps = query(
        app_dsn, "select updated_at from orders where order_id = any(%s)", (late.order_ids,)
    )
    assert len(stamps) == 2
    assert invisible == 1  # only the updated order existed before the commit
    assert all(stamp == late.started_at for (stamp,) in stamps)
    assert all(stamp < committed_first for (stamp,) in stamps)
    late_events = scalar(
        app_dsn, "select count(*) from events where occurred_at = %s", (late.started_at,)
    )
    assert late_events > 0
    assert violations(app_dsn) == {}


def test_late_commit_rolls_back_when_the_block_raises(app_dsn: str) -> None:
    before = row_counts(app_dsn)

    with pytest.raises(RuntimeError), late_commit(app_dsn, seed=1) as late:
        late.write()
        raise RuntimeError("boom")

    assert row_counts(app_dsn) == before
    with pytest.raises(LateTransactionClosed):
        late.write()


def test_late_commit_can_be_committed_early_inside_the_block(app_dsn: str) -> None:
    with late_commit(app_dsn, seed=4) as late:
        late.write()
        late.commit()
        assert late.state == "committed"
        visible = scalar(
            app_dsn, "select count(*) from orders where order_id = any(%s)", (late.order_ids,)
        )
    assert len(set(late.order_ids)) == 2
    assert visible == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": -1}, "steps must be"),
        ({"late_commit_probability": 1.5}, "late_commit_probability must be"),
        ({"late_commit_delay": 0}, "late_commit_delay must be"),
        ({"pause": -1.0}, "pause must be"),
    ],
)
def test_simulate_refuses_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        simulate("postgresql://nobody@127.0.0.1:1/nowhere", **options)  # type: ignore[arg-type]
