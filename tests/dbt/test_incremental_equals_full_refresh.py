"""After any sequence of source changes — inserts, updates, status changes, hard
deletes, a late commit — the incrementally built marts equal a from-scratch
(`--full-refresh`) build, row for row."""

from __future__ import annotations

import os

import demo_app
from tests.conftest import Project, query

# The run-record marts describe the runs themselves, so two builds differ by design.
COMPARED_MARTS = (
    "agg_daily_sales",
    "dim_countries",
    "dim_customers",
    "dim_products",
    "fct_events",
    "fct_order_items",
    "fct_orders",
    "fct_payments",
)


def differing_rows(dsn: str, left: str, right: str, table: str) -> int:
    """Rows in one build and not the other, both ways (duplicates counted)."""
    return query(
        dsn,
        f"select (select count(*) from (select * from {left}.{table} except all "
        f"select * from {right}.{table}) as only_left) + (select count(*) from "
        f"(select * from {right}.{table} except all select * from {left}.{table}) as only_right)",
    )[0][0]


def test_incremental_marts_equal_a_full_refresh_after_every_kind_of_change(
    project: Project,
) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    for round_number in range(3):
        demo_app.simulate(project.source, steps=40, seed=100 + round_number)
        with demo_app.late_commit(project.source, seed=round_number) as late:
            late.write()
            # loaded and transformed while the writer is still open ...
            project.invoke("load", "transform")
        # ... and committed afterwards, with timestamps below the mark
        project.invoke("load", "transform")

    project.invoke("transform", "--target", "dev_full", "--full-refresh")
    differences = {
        table: differing_rows(project.warehouse, "marts", "fullref", table)
        for table in COMPARED_MARTS
    }
    print("incremental vs full refresh, differing rows per mart:", differences)
    assert differences == dict.fromkeys(COMPARED_MARTS, 0)
    # and the comparison is not empty: the marts hold the demo app's data
    assert query(project.warehouse, "select count(*) from marts.fct_orders")[0][0] > 0
