"""After a change to one raw table, `invoke transform` builds and tests only what
depends on it (and the models over the run records), leaves every other published
mart as it was, and the marts still equal a from-scratch build."""

from __future__ import annotations

import os
from collections.abc import Callable

import psycopg2

from tests.conftest import APP_MARTS, Project, execute, query
from tests.dbt.test_incremental_equals_full_refresh import differing_rows
from tests.dbt.test_publish_gate import fingerprints
from transform.inputs import (
    BuildInputs,
    PublishedInputs,
    changed_tables,
    keep_build_attempt,
    keep_published_inputs,
    last_attempted_code,
    last_published_inputs,
    nothing_to_do,
)
from transform.selection import changed_source_selectors, declared_sources

# What depends on raw_app.products: its staging view and dim_products; the models
# over ops are refreshed by every build that builds anything.
PRODUCT_MODELS = {"stg_app__products", "dim_products"}
OPS_MODELS = {
    "stg_ops__job_runs",
    "stg_ops__table_loads",
    "stg_ops__dbt_node_runs",
    "fct_pipeline_runs",
    "fct_table_loads",
    "fct_model_timings",
}
LAST_BUILD_NODES = """
select resource_type, unique_id, status
from ops.dbt_node_runs
where run_id = (
    select run_id from ops.job_runs where job = 'dbt build' order by started_at desc limit 1
)
"""


def test_a_change_to_one_raw_table_builds_only_its_descendants(project: Project) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    before = fingerprints(project.warehouse, "marts")

    product_id = query(project.source, "select min(product_id) from products")[0][0]
    execute(
        project.source,
        "update products set unit_price = unit_price + 1, updated_at = clock_timestamp() "
        f"where product_id = {product_id}",
    )
    project.invoke("load", "transform")

    nodes = query(project.warehouse, LAST_BUILD_NODES)
    models = {name.split(".")[-1] for kind, name, _ in nodes if kind in ("model", "snapshot")}
    assert models == PRODUCT_MODELS | OPS_MODELS, models
    assert {status for *_, status in nodes} <= {"success", "pass", "no-op"}  # no-op: exposures
    tests = {name for kind, name, _ in nodes if kind == "test"}
    assert tests and all(
        "product" in name
        or "ops" in name
        or "pipeline" in name
        or "table_loads" in name
        or "model_timings" in name
        for name in tests
    ), tests
    # the relationships test from order lines (not rebuilt) to products ran
    assert any("fct_order_items_product_id" in name for name in tests), tests

    after = fingerprints(project.warehouse, "marts")
    changed = {table for table in APP_MARTS if before[table] != after[table]}
    assert changed == {"dim_products"}
    assert query(
        project.warehouse,
        f"select unit_price from marts.dim_products where product_id = {product_id}",
    ) == query(project.source, f"select unit_price from products where product_id = {product_id}")

    project.invoke("transform", "--target", "dev_full", "--full-refresh")
    differences = {
        table: differing_rows(project.warehouse, "marts", "fullref", table) for table in APP_MARTS
    }
    assert differences == dict.fromkeys(APP_MARTS, 0)


def test_a_full_build_unless_the_same_code_read_declared_tables_that_moved() -> None:
    now = BuildInputs("f1", "prod", {"raw_app.orders": "2", "raw_app.events": "1"})
    assert changed_tables(now, None) is None  # nothing published yet
    assert changed_tables(now, PublishedInputs("d", None, None)) is None  # an older record
    other_code = PublishedInputs("d", "f0 prod", {"raw_app.orders": "1", "raw_app.events": "1"})
    assert changed_tables(now, other_code) is None
    same_code = PublishedInputs("d", now.code, {"raw_app.orders": "1", "raw_app.events": "1"})
    assert changed_tables(now, same_code) == ["raw_app.orders"]
    gone = PublishedInputs("d", now.code, {**now.raw_tables, "raw_app.gone": "1"})
    assert changed_tables(now, gone) == ["raw_app.gone"]

    declared = declared_sources()
    assert declared["raw_app.orders"] == "app.orders"
    assert declared["raw_web.page_views"] == "web.page_views"
    assert changed_source_selectors(["raw_app.orders"], declared) == [
        "source:app.orders+",
        "source:ops+",
    ]
    # a raw table dbt does not declare may be read some other way: build everything
    assert changed_source_selectors(["raw_app.orders", "raw_app.undeclared"], declared) is None


def test_after_a_failed_build_of_other_code_only_a_full_build_will_do(
    make_database: Callable[[str], str],
) -> None:
    # A build that failed still replaced the views it got to (staging and intermediate
    # are not built in a shadow schema). With the published code back, a selection (or
    # "nothing to do") would leave the views it does not select at the failed code.
    warehouse = make_database("inputs")
    execute(warehouse, "create schema ops")
    published = BuildInputs("c1", "prod", {"raw_app.orders": "1", "raw_app.events": "1"})
    failed = BuildInputs("c2", "prod", published.raw_tables)
    now = BuildInputs("c1", "prod", {"raw_app.orders": "2", "raw_app.events": "1"})
    conn = psycopg2.connect(warehouse)
    try:
        with conn:
            keep_build_attempt(conn, published, "run-1")
            keep_published_inputs(conn, published, "run-1")
        assert last_attempted_code(conn) == published.code
        assert changed_tables(now, last_published_inputs(conn), last_attempted_code(conn)) == [
            "raw_app.orders"
        ]
        with conn:
            keep_build_attempt(conn, failed, "run-2")  # and dbt failed: nothing published

        assert last_published_inputs(conn) == PublishedInputs(
            published.digest, published.code, published.raw_tables
        )
        assert last_attempted_code(conn) == failed.code
        assert changed_tables(now, last_published_inputs(conn), last_attempted_code(conn)) is None
        # the published inputs again, unchanged: still not "nothing to do"
        assert not nothing_to_do(published, last_published_inputs(conn), last_attempted_code(conn))
        assert nothing_to_do(
            published, last_published_inputs(conn), published.code
        )  # had the last attempt been this code
    finally:
        conn.close()
