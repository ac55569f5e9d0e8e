"""create_app: deterministic, consistent, realistic, fast enough for tests."""

from __future__ import annotations

import math
from collections.abc import Callable

import psycopg2
import pytest

from demo_app import ANCHOR, InvalidOption, create_app, find_violations
from demo_app.rows import Sizes, spread
from tests.demo_app.conftest import (
    PRIMARY_KEYS,
    execute,
    fingerprints,
    query,
    row_counts,
    scalar,
)

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nowhere"


def test_scale_one_is_a_thousand_customers_and_scale_200_five_million_events() -> None:
    assert Sizes.for_scale(1) == Sizes(customers=1_000, products=200, orders=3_000, events=25_000)
    assert Sizes.for_scale(0.1) == Sizes(customers=100, products=63, orders=300, events=2_500)
    big = Sizes.for_scale(200)
    assert big.events >= 5_000_000
    assert big.customers == 200_000
    assert big.orders == 600_000


@pytest.mark.parametrize("scale", [0, -1, math.nan, math.inf, "1", True])
def test_bad_scale_is_refused_before_connecting(scale: object) -> None:
    with pytest.raises(InvalidOption, match="scale must be a positive number"):
        create_app(UNREACHABLE, scale=scale)  # type: ignore[arg-type]


def test_spread_splits_a_total_exactly_in_proportion() -> None:
    assert spread(10, [1, 1, 2]) == [2, 3, 5]
    assert sum(spread(2_500, [0.3, 1.7, 0.0, 5.5] * 100)) == 2_500
    assert spread(5, [0, 0, 1]) == [0, 0, 5]


def test_same_seed_and_scale_give_identical_tables(
    app_dsn: str, make_database: Callable[[str], str]
) -> None:
    again = make_database("app")
    create_app(again, scale=0.1, seed=7)

    assert fingerprints(again) == fingerprints(app_dsn)


def test_another_seed_gives_different_rows(
    app_dsn: str, make_database: Callable[[str], str]
) -> None:
    other = make_database("app")
    create_app(other, scale=0.1, seed=8)

    first, second = fingerprints(app_dsn), fingerprints(other)
    assert first["countries"] == second["countries"]  # reference data
    for table in PRIMARY_KEYS.keys() - {"countries"}:
        assert first[table] != second[table], table


def test_create_returns_the_row_count_of_every_table(make_database: Callable[[str], str]) -> None:
    dsn = make_database("app")

    counts = create_app(dsn, scale=0.1, seed=1)

    assert counts == row_counts(dsn)
    assert counts["customers"] == 100
    assert counts["orders"] == 300
    assert counts["events"] == 2_500
    assert counts["countries"] == 30
    assert 600 < counts["order_items"] < 1_100
    assert 250 < counts["payments"] < 400


def test_invariants_hold_after_create(app_dsn: str) -> None:
    conn = psycopg2.connect(app_dsn)
    try:
        assert find_violations(conn) == {}
    finally:
        conn.close()


def test_every_timestamp_is_before_the_anchor(app_dsn: str) -> None:
    latest = scalar(
        app_dsn,
        """
        select max(stamp) from (
            select greatest(signed_up_at, created_at, updated_at) as stamp from customers
            union all select greatest(created_at, updated_at) from products
            union all select greatest(ordered_at, created_at, updated_at) from orders
            union all select greatest(created_at, updated_at) from order_items
            union all select greatest(paid_at, created_at, updated_at) from payments
            union all select occurred_at from events
        ) as stamps
        """,
    )
    assert latest < ANCHOR


def test_create_replaces_everything_in_the_public_schema(app_dsn: str) -> None:
    before = fingerprints(app_dsn)
    execute(app_dsn, "create table stray (id int)")
    execute(app_dsn, "update customers set full_name = 'changed'")

    create_app(app_dsn, scale=0.1, seed=7)

    assert fingerprints(app_dsn) == before
    assert scalar(app_dsn, "select to_regclass('public.stray')") is None


def test_sequences_continue_after_the_generated_ids(app_dsn: str) -> None:
    largest = scalar(app_dsn, "select max(customer_id) from customers")

    new_id = scalar(
        app_dsn,
        """
        insert into customers (email, full_name, country_code, signed_up_at)
        values ('new.person@example.com', 'New Person', 'GB', now())
        returning customer_id
        """,
    )

    assert new_id == largest + 1


def test_update_trigger_still_stamps_updated_at(app_dsn: str) -> None:
    stamped = scalar(
        app_dsn,
        "update orders set status = 'delivered' where order_id = 1 returning updated_at = now()",
    )
    assert stamped is True


def test_data_looks_like_a_web_shop(make_database: Callable[[str], str]) -> None:
    dsn = make_database("app")
    create_app(dsn, scale=0.5, seed=3)

    orders_per_customer = [
        count
        for (count,) in query(
            dsn,
            """
            select count(orders.order_id) from customers
            left join orders on orders.customer_id = customers.customer_id
            group by customers.customer_id
            """,
        )
    ]
    never = sum(1 for count in orders_per_customer if count == 0)
    assert 0.2 < never / len(orders_per_customer) < 0.6
    assert max(orders_per_customer) >= 15  # long tail

    share = dict(query(dsn, "select status::text, count(*) / 1500.0 from orders group by 1"))
    assert share["delivered"] > 0.8
    assert 0.02 < share["cancelled"] < 0.09
    assert 0.01 < share["returned"] < 0.06

    sold = [count for (count,) in query(dsn, SOLD_PER_PRODUCT)]
    assert sold[0] > 5 * sold[len(sold) // 2]  # a few products sell most

    events = dict(query(dsn, "select event_type, count(*) from events group by 1"))
    assert max(events, key=events.__getitem__) == "page_view"
    anonymous = scalar(dsn, "select avg((customer_id is null)::int) from events")
    assert 0.2 < anonymous < 0.4
    per_session = scalar(
        dsn, "select avg(n) from (select count(*) as n from events group by session_id) as s"
    )
    assert per_session > 3
    assert scalar(dsn, "select count(*) from events where properties = '{}'") == 0


SOLD_PER_PRODUCT = """
select coalesce(sum(order_items.quantity), 0) as sold
from products
left join order_items on order_items.product_id = products.product_id
group by products.product_id
order by sold desc
"""
