"""The tidewater DAG, run by Airflow against the test warehouse: the run succeeds,
its records in ops carry the Airflow run id, the marts are published and their
assets updated (so a downstream DAG is queued); with a failing data test the
transform task fails at once, nothing downstream runs and the marts stay as they
were. Airflow's metadata on SQLite, and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from tests.airflow.support import Airflow, require_airflow
from tests.conftest import APP_MARTS, Project, completed_revenue, execute, query

require_airflow()

pytestmark = pytest.mark.slow

TASKS = ("load", "transform", "verify_roles")
RAW_ASSETS = {
    f"raw_app.{table}"
    for table in (
        "countries",
        "customers",
        "products",
        "orders",
        "order_items",
        "payments",
        "events",
    )
}
# The demo's event stream (source web, kind http): declared, so the load task names it.
STREAM_ASSETS = {"raw_web.page_views"}


def marts_fingerprint(dsn: str) -> dict[str, str]:
    return {
        table: query(
            dsn,
            f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
            f"from marts.{table} as t",
        )[0][0]
        for table in APP_MARTS
    }


def query_with(dsn: str, statement: str, *params: object) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def jobs_of(dsn: str, pipeline_run_id: str) -> list[tuple[str, str]]:
    return query_with(
        dsn,
        "select job, status from ops.job_runs where pipeline_run_id = %s order by started_at",
        pipeline_run_id,
    )


def assert_a_green_run(airflow: Airflow, project: Project, logical_date: str) -> str:
    run = airflow.test_dag("tidewater", logical_date)
    assert run.state == "success", run.output[-4000:]
    assert {task: state for task, (state, _) in run.tasks.items()} == dict.fromkeys(
        TASKS, "success"
    )
    # The jobs recorded themselves, under the Airflow run's id.
    jobs = jobs_of(project.warehouse, run.run_id)
    assert ("load", "succeeded") in jobs and ("dbt build", "succeeded") in jobs, jobs
    assert ("publish", "succeeded") in jobs, jobs
    loads = query_with(
        project.warehouse,
        "select count(*) from ops.table_loads join ops.job_runs using (run_id) "
        "where pipeline_run_id = %s and ops.table_loads.status = 'succeeded'",
        run.run_id,
    )[0][0]
    assert loads == len(RAW_ASSETS)
    # The marts are published and agree with the source.
    source, mart = completed_revenue(project)
    assert mart == source
    # Each raw table and each mart is an asset, updated by the task that wrote it.
    assert RAW_ASSETS | STREAM_ASSETS | set(APP_MARTS) <= set(run.asset_events), run.asset_events
    return run.run_id


def test_the_dag_loads_transforms_and_stops_at_a_failing_data_test(
    project: Project, tmp_path: Path
) -> None:
    project.set_up()
    airflow = Airflow(tmp_path / "airflow", f"sqlite:///{tmp_path / 'airflow.db'}", project.env)
    airflow.set_up()
    first = assert_a_green_run(airflow, project, "2026-01-01")
    # A downstream DAG scheduled on fct_orders is due: data-aware, not on a clock.
    assert "fct_orders" in airflow.queued_for("tidewater_downstream_example")
    published = marts_fingerprint(project.warehouse)

    # The app starts writing a payment method the marts' tests do not accept: the
    # load copies it, and the build's accepted_values test fails.
    execute(
        project.source,
        "alter table payments drop constraint payments_payment_method_check",
        "update payments set payment_method = 'crypto', updated_at = now() "
        "where payment_id = (select min(payment_id) from payments)",
    )
    run = airflow.test_dag("tidewater", "2026-01-02")
    assert run.run_id != first
    assert run.state == "failed"
    states = {task: state for task, (state, _) in run.tasks.items()}
    assert states["load"] == "success"
    assert states["transform"] == "failed"
    assert run.tasks["transform"][1] == 1, "a failing data test is not retried"
    assert states["verify_roles"] == "upstream_failed"  # nothing downstream ran
    assert marts_fingerprint(project.warehouse) == published
    jobs = jobs_of(project.warehouse, run.run_id)
    assert jobs == [("load", "succeeded"), ("dbt build", "failed")], jobs
    # Only the raw tables were updated: no mart asset for a build that did not publish.
    assert set(run.asset_events) == RAW_ASSETS | STREAM_ASSETS, run.asset_events


def test_the_dag_runs_with_airflow_metadata_on_postgresql(
    project: Project, make_database: Callable[[str], str], tmp_path: Path
) -> None:
    project.set_up()
    metadata = urlsplit(make_database("airflow_meta"))
    url = f"postgresql+psycopg2://{metadata.netloc}{metadata.path}"
    if metadata.query:
        url += f"?{metadata.query}"
    airflow = Airflow(tmp_path / "airflow", url, project.env)
    airflow.set_up()
    assert airflow.query("select count(*) from dag_run") == [(0,)]
    assert_a_green_run(airflow, project, "2026-01-01")
    published = marts_fingerprint(project.warehouse)

    # Nothing changed in the app: the transform has nothing to do and is skipped, so
    # no mart asset is updated (a downstream DAG waits for new data); roles still checked.
    run = airflow.test_dag("tidewater", "2026-01-02")
    assert run.state == "success", run.output[-4000:]
    states = {task: state for task, (state, _) in run.tasks.items()}
    assert states == {"load": "success", "transform": "skipped", "verify_roles": "success"}
    assert not set(APP_MARTS) & set(run.asset_events), run.asset_events
    assert marts_fingerprint(project.warehouse) == published
    assert ("dbt build", "succeeded") in jobs_of(project.warehouse, run.run_id)
