"""Dashboards never see a mart whose tests failed: dbt builds and tests the marts in
`marts_build`, and `invoke transform` publishes them into `marts` only after a
green build. After a failed transform, the marts and a dashboard's query are
exactly as they were."""

from __future__ import annotations

import os

import psycopg2

import demo_app
from tests.conftest import APP_MARTS, Project, as_login, execute, query

DASHBOARD_QUERY = """
select
    (select count(*) from marts.fct_events) as events,
    (select count(*) from marts.fct_orders) as orders,
    (select sum(order_total) from marts.fct_orders) as order_totals,
    (select count(*) from marts.dim_customers) as customers,
    (select sum(revenue) from marts.agg_daily_sales) as revenue
"""


def fingerprints(dsn: str, schema: str) -> dict[str, str]:
    """One digest of every row of every mart in `schema`."""
    return {
        table: query(
            dsn,
            f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
            f"from {schema}.{table} as t",
        )[0][0]
        for table in APP_MARTS
    }


def dashboard_view(project: Project, role_prefix: str) -> list[tuple]:
    """What the BI user sees, connected as the dashboard login."""
    conn = psycopg2.connect(as_login(project.warehouse, f"{role_prefix}dashboard_bi"))
    try:
        with conn.cursor() as cur:
            cur.execute(DASHBOARD_QUERY)
            return cur.fetchall()
    finally:
        conn.close()


def assert_unchanged(project: Project, role_prefix: str, marts: dict, view: list) -> None:
    assert fingerprints(project.warehouse, "marts") == marts
    assert dashboard_view(project, role_prefix) == view


def test_a_failed_transform_leaves_the_marts_and_dashboards_as_they_were(
    project: Project, role_prefix: str
) -> None:
    admin = project.warehouse  # the ETL login: it owns raw, as the loaders do
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    published = fingerprints(project.warehouse, "marts")
    seen = dashboard_view(project, role_prefix)
    assert seen[0][0] > 0 and seen[0][1] > 0

    # New activity in the app is loaded, so a build would change the marts ...
    demo_app.simulate(project.source, steps=30, seed=7)
    project.invoke("load")

    # ... but a duplicate key reaches raw (say, a hand-made fix gone wrong).
    execute(
        admin,
        "drop index raw_app.customers__tidewater_pk",
        "insert into raw_app.customers select * from raw_app.customers "
        "where customer_id = (select min(customer_id) from raw_app.customers)",
    )
    failed = project.invoke("transform", check=False)
    assert failed.returncode != 0
    assert "unique" in failed.stdout + failed.stderr
    assert_unchanged(project, role_prefix, published, seen)
    # The gate mattered: marts built before the failure sit in the shadow schema.
    # (models downstream of customers were skipped: the first build's copies moved
    # to marts, so marts_build has none of them yet)
    assert (
        query(project.warehouse, "select count(*) from marts_build.fct_events")[0][0] > seen[0][0]
    )

    # A failure only a mart's own test sees: an order total that is not the sum
    # of its lines. fct_orders is rebuilt in marts_build, fails its test, and
    # stays out of marts.
    execute(
        admin,
        "delete from raw_app.customers as dup using raw_app.customers as original "
        "where dup.customer_id = original.customer_id and dup.ctid > original.ctid",
    )
    project.invoke("load")  # the loader restores the key index
    order_id = query(
        project.warehouse, "select min(order_id) from raw_app.orders where _deleted_at is null"
    )[0][0]
    execute(
        admin,
        "update raw_app.orders set order_total = order_total + 1000, _loaded_at = now() "
        f"where order_id = {order_id}",
    )
    failed = project.invoke("transform", check=False)
    assert failed.returncode != 0
    assert "assert_fct_orders_total_equals_items_total" in failed.stdout + failed.stderr
    assert_unchanged(project, role_prefix, published, seen)
    shadow_total, live_total = (
        query(
            project.warehouse,
            f"select order_total from {schema}.fct_orders where order_id = {order_id}",
        )[0][0]
        for schema in ("marts_build", "marts")
    )
    assert shadow_total == live_total + 1000
    jobs = query(
        project.warehouse,
        "select job, status from ops.job_runs where job in ('dbt build', 'publish') "
        "order by started_at desc limit 3",
    )
    assert jobs == [("dbt build", "failed"), ("dbt build", "failed"), ("publish", "succeeded")]

    # Fixed at the source of the error, the next transform publishes everything.
    execute(
        admin,
        "update raw_app.orders set order_total = order_total - 1000, _loaded_at = now() "
        f"where order_id = {order_id}",
    )
    project.invoke("transform")
    now_seen = dashboard_view(project, role_prefix)
    assert now_seen != seen
    assert now_seen[0][0] == query(project.source, "select count(*) from events")[0][0]
    # and the dashboard's grants moved with the tables it reads
    verify = project.invoke("roles", "--verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
