"""After any sequence of source changes — inserts, updates, status changes, hard
deletes, a late commit — the incrementally built marts equal a from-scratch
(`--full-refresh`) build, row for row."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

import demo_app
from tests.conftest import APP_MARTS, ROOT, Project, query

COMPARED_MARTS = APP_MARTS  # the run-record marts differ between two builds by design


# Customers whose current snapshot version differs from their staging row in a
# tracked column (or who have no current version, or a version but no row).
STALE_SNAPSHOT_VERSIONS = """
select count(*)
from staging.stg_app__customers as customers
full outer join (
    select * from snapshots.snap_app__customers where dbt_valid_to is null
) as versions
    on customers.customer_id = versions.customer_id
where customers.customer_id is null
    or versions.customer_id is null
    or (customers.email, customers.full_name, customers.country_code,
        customers.is_marketing_opt_in, customers.signed_up_at, customers.is_deleted)
    is distinct from (versions.email, versions.full_name, versions.country_code,
        versions.is_marketing_opt_in, versions.signed_up_at, versions.is_deleted)
"""


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
    # The snapshot, which reads only customers loaded since its last run, holds
    # every customer's current state as its current version.
    assert query(project.warehouse, STALE_SNAPSHOT_VERSIONS) == [(0,)]
    assert query(project.warehouse, "select count(*) from snapshots.snap_app__customers")[0][0]


def test_a_transform_waits_for_a_load_in_flight_so_no_late_row_is_missed(
    project: Project,
) -> None:
    """The incremental marts start after the newest `_loaded_at` they hold (no time
    window). That is safe only if no load can commit a row below that mark after
    the transform read raw: a transform waits for loads in flight."""
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    event_id = query(project.warehouse, "select max(event_id) from raw_app.events")[0][0]

    # A load transaction starts (its rows get `_loaded_at` = its start) ...
    late = psycopg2.connect(project.warehouse)
    try:
        with late.cursor() as cur:
            cur.execute("lock table ops.raw_lock in share mode")  # as a load does
            # ... other loads finish meanwhile, with later `_loaded_at` ...
            demo_app.simulate(project.source, steps=10, seed=3)
            project.invoke("load")
            # ... and a transform starts before the first load commits.
            transform = subprocess.Popen(
                [str(Path(sys.executable).parent / "invoke"), "transform"],
                cwd=ROOT,
                env=project.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            waiting = 0
            for _ in range(600):
                waiting = query(
                    project.warehouse,
                    "select count(*) from pg_locks where locktype = 'relation' and not granted "
                    "and relation = 'ops.raw_lock'::regclass",
                )[0][0]
                if waiting or transform.poll() is not None:
                    break
                time.sleep(0.1)
            assert waiting == 1, "the transform did not wait for the load in flight"
            cur.execute(
                "update raw_app.events set page_path = '/committed-late', _loaded_at = now() "
                "where event_id = %s",
                (event_id,),
            )
        late.commit()
    finally:
        late.close()
    output, _ = transform.communicate(timeout=600)
    assert transform.returncode == 0, output
    assert query(
        project.warehouse, f"select page_path from marts.fct_events where event_id = {event_id}"
    ) == [("/committed-late",)]
