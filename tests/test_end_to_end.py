"""End to end: `invoke load transform` on the demo app, as a user runs it.

Against the embedded test server the run takes the zero-configuration path
(the kit creates the warehouse database and applies the role spec itself);
against TIDEWATER_TEST_DSN it takes the existing-PostgreSQL path from the README
(`invoke roles --apply` first). Either way loaders and dbt connect as the ETL
login user, never as a superuser.
"""

from __future__ import annotations

import os
import re
import textwrap
from urllib.parse import urlsplit

import psycopg2
import pytest

import demo_app
from tests.conftest import ROOT, Project, as_login, completed_revenue, query
from tidewater.paths import DBT_PROJECT_DIR

README = ROOT / "README.md"

RAW_TABLES = ("countries", "customers", "products", "orders", "order_items", "payments", "events")


def raw_fingerprint(dsn: str) -> dict[str, tuple]:
    return {
        table: query(
            dsn,
            f"select count(*), md5(string_agg(cast(t as text), '|' order by cast(t as text))) "
            f"from raw_app.{table} as t",
        )[0]
        for table in RAW_TABLES
    }


def test_load_transform_builds_marts_that_agree_with_the_source(project: Project) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    first = project.invoke("load", "transform")
    assert "Completed successfully" in first.stdout

    # The marts agree with the source: revenue from completed orders, order counts.
    source_revenue, mart_revenue = completed_revenue(project)
    assert mart_revenue == source_revenue
    daily = query(project.warehouse, "select sum(revenue) from marts.agg_daily_sales")[0][0]
    assert daily == source_revenue[0]
    assert (
        query(project.warehouse, "select count(*) from marts.fct_events")[0][0]
        == query(project.source, "select count(*) from events")[0][0]
    )

    # It ran as the ETL login user, not a superuser, and recorded what it did.
    owners = query(
        project.warehouse,
        "select distinct tableowner from pg_tables where schemaname in ('raw_app', 'marts')",
    )
    assert owners == [(urlsplit(project.warehouse).username,)]
    jobs = query(project.warehouse, "select job, status from ops.job_runs order by started_at")
    assert jobs[-3:] == [
        ("load", "succeeded"),
        ("dbt build", "succeeded"),
        ("publish", "succeeded"),
    ]
    assert query(project.warehouse, "select count(*) from ops.table_loads")[0][0] == len(RAW_TABLES)

    # A second run succeeds and changes no row in raw_app; with nothing new, the
    # transform does not start dbt and records that it had nothing to do.
    before = raw_fingerprint(project.warehouse)
    marts = query(project.warehouse, "select sum(order_total) from marts.fct_orders")
    second = project.invoke("load", "transform")
    assert raw_fingerprint(project.warehouse) == before
    assert "nothing to transform" in second.stderr
    assert "Completed successfully" not in second.stdout
    ((status, nothing_to_do),) = query(
        project.warehouse,
        "select status, details ->> 'nothing_to_do' from ops.job_runs "
        "where job = 'dbt build' order by started_at desc limit 1",
    )
    assert status == "succeeded" and nothing_to_do.startswith("no raw table")
    assert query(project.warehouse, "select count(*) from ops.job_runs where job = 'publish'") == [
        (1,)
    ]
    assert query(project.warehouse, "select sum(order_total) from marts.fct_orders") == marts


def test_after_live_changes_the_marts_follow_the_source(project: Project) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    demo_app.workload.simulate(project.source, steps=60, seed=7)
    project.invoke("load", "transform")
    source, mart = completed_revenue(project)
    assert mart == source
    # docs with lineage for the BI users
    project.invoke("docs")
    catalog = ROOT / "dbt_project" / "target" / "catalog.json"
    assert "model.tidewater.fct_orders" in catalog.read_text()


def test_a_broken_configuration_is_one_line_that_says_what_to_fix(project: Project) -> None:
    project.set_up()  # the warehouse is fine: only the source is broken
    project.env["TIDEWATER_SOURCE_APP_DSN"] = "postgresql://nobody@127.0.0.1:1/none"
    result = project.invoke("load", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "cannot connect to source app (TIDEWATER_SOURCE_APP_DSN)" in result.stderr

    result = project.invoke("load", "--target", "nope", check=False)
    assert result.returncode != 0
    assert (
        "unknown target 'nope'" in result.stderr
        and "choose one of: dev_alice, dev_full, e2e, e2e_admin" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_second_run_while_one_is_running_is_skipped_and_recorded(project: Project) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load")
    # An ETL session (a run in progress) holds the pipeline lock.
    holder = psycopg2.connect(project.warehouse, application_name="nightly backfill")
    try:
        with holder.cursor() as cur:
            cur.execute("lock table ops.pipeline_lock in exclusive mode")
        result = project.invoke("load", "transform", "--wait", "1", check=False)
    finally:
        holder.close()
    assert result.returncode != 0
    assert "another pipeline run is in progress" in result.stderr
    # The message names the holder: its user, its application and since when.
    holder_user = urlsplit(project.warehouse).username
    assert f"held by {holder_user} (nightly backfill, pid " in result.stderr, result.stderr
    assert " UTC" in result.stderr.split("held by", 1)[1]
    assert "Traceback" not in result.stderr
    assert query(
        project.warehouse, "select job, status from ops.job_runs order by started_at desc limit 1"
    ) == [("load", "skipped")]


def test_keep_going_builds_what_does_not_depend_on_a_failed_table(project: Project) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load")
    # An incompatible change in one source table: its load fails, the others load.
    conn = psycopg2.connect(project.source)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "alter table products alter column category type integer using length(category)"
        )
    conn.close()
    result = project.invoke("load", "transform", "--keep-going", check=False)
    assert result.returncode != 0
    assert "products" in result.stderr, result.stderr
    built = {
        row[0]
        for row in query(
            project.warehouse, "select tablename from pg_tables where schemaname = 'marts'"
        )
    }
    assert {"fct_events", "dim_customers", "fct_orders", "fct_order_items"} <= built
    assert "dim_products" not in built  # downstream of the failed table: skipped
    statuses = dict(
        query(
            project.warehouse,
            "select table_name, status from ops.table_loads where run_id = (select run_id from ops.job_runs where job = 'load' order by started_at desc limit 1)",
        )
    )
    assert statuses["products"] == "failed"
    assert statuses["events"] == "succeeded"
    # the transform records what it left out, and is recorded as a success of its own
    details = query(
        project.warehouse,
        "select details from ops.job_runs where job = 'dbt build' order by started_at desc limit 1",
    )[0][0]
    assert details["excluded"] == ["source:app.products+"]


def test_grants_hold_after_load_transform_and_a_full_refresh(
    project: Project, role_prefix: str
) -> None:
    """Loaders and dbt create and recreate relations; the grants still match the spec."""
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    verify = project.invoke("roles", "--verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    project.invoke("transform", "--full-refresh")
    verify = project.invoke("roles", "--verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    plan = project.invoke("roles")
    assert "Nothing to do" in plan.stdout + plan.stderr

    def as_user(user: str) -> psycopg2.extensions.connection:
        return psycopg2.connect(as_login(project.warehouse, f"{role_prefix}{user}"))

    analyst = as_user("analyst_alice")
    try:
        with analyst.cursor() as cur:
            cur.execute("select count(*) from raw_app.events")
            assert cur.fetchone()[0] > 0
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("update raw_app.events set page_path = 'x'")
    finally:
        analyst.close()
    dashboard = as_user("dashboard_bi")
    try:
        with dashboard.cursor() as cur:
            cur.execute("select sum(revenue) from marts.agg_daily_sales")
            # the pipeline-health marts are there for the BI tool too
            cur.execute("select job_name, status from marts.fct_pipeline_runs")
            assert ("load", "succeeded") in cur.fetchall()
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("drop table marts.fct_orders")
    finally:
        dashboard.close()


def test_an_analyst_builds_a_model_in_the_sandbox_without_touching_marts(
    project: Project, role_prefix: str
) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    before = query(
        project.warehouse,
        "select count(*), md5(string_agg(cast(p as text), '|' order by product_id)) from marts.dim_products as p",
    )
    runs_before = query(project.warehouse, "select count(*) from ops.job_runs")
    project.invoke("transform", "--target", "dev_alice", "--select", "+dim_products")
    sandbox = f"sandbox_{role_prefix}analyst_alice"
    owner = query(
        project.warehouse,
        f"select tableowner from pg_tables where schemaname = '{sandbox}' and tablename = 'dim_products'",
    )
    assert owner == [(f"{role_prefix}analyst_alice",)]
    assert (
        query(
            project.warehouse,
            "select count(*), md5(string_agg(cast(p as text), '|' order by product_id)) from marts.dim_products as p",
        )
        == before
    )
    assert query(project.warehouse, "select count(*) from ops.job_runs") == runs_before


def test_the_readme_adding_a_model_example_builds_and_passes_its_tests(
    project: Project, role_prefix: str
) -> None:
    """The README's "Adding a model" SQL and YAML, exactly as written, in a sandbox."""
    section = README.read_text().split("## Adding a model (for analysts)")[1].split("\n## ")[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    model_sql = textwrap.dedent(next(code for lang, code in blocks if lang == "sql"))
    model_yaml = textwrap.dedent([code for lang, code in blocks if lang == "yaml"][1])
    model = DBT_PROJECT_DIR / "models" / "marts" / "fct_refunds.sql"
    properties = DBT_PROJECT_DIR / "models" / "marts" / "_readme_example.yml"
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    try:
        model.write_text(model_sql)
        properties.write_text("version: 2\n\nmodels:\n" + textwrap.indent(model_yaml, "  "))
        project.invoke("transform", "--target", "dev_alice", "--select", "+fct_refunds")
    finally:
        model.unlink(missing_ok=True)
        properties.unlink(missing_ok=True)
    # the sandbox is the analyst's own: the ETL user may not read it
    alice = as_login(project.warehouse, f"{role_prefix}analyst_alice")
    sandbox = f"sandbox_{role_prefix}analyst_alice"
    refunds = query(alice, f"select count(*) from {sandbox}.fct_refunds")[0][0]
    assert refunds > 0
    assert (
        refunds
        == query(project.source, "select count(*) from payments where status = 'refunded'")[0][0]
    )


SEND_PAGE_VIEWS = """
import sys
from control.demo import send_page_views
from tidewater.profile import load_target
print(send_page_views(load_target(None), count=int(sys.argv[1]), seed=int(sys.argv[2])))
"""


def test_page_views_posted_to_the_collector_reach_staging_once(project: Project) -> None:
    """The demo's event path end to end: the front end's page views go through the HTTP
    collector into raw_web.page_views (2xx only once stored), and dbt builds them; a
    retried POST (same event ids) stores nothing twice."""
    import subprocess
    import sys

    project.set_up()
    project.invoke("load", "transform")

    def send(count: int, seed: int) -> int:
        done = subprocess.run(
            [sys.executable, "-c", SEND_PAGE_VIEWS, str(count), str(seed)],
            cwd=ROOT,
            env=project.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    assert send(40, 5) == 40
    send(40, 5)  # the same views again, as a client retrying after a lost answer
    assert query(project.warehouse, "select count(*) from raw_web.page_views") == [(40,)]
    project.invoke("load", "transform")
    assert query(
        project.warehouse,
        "select count(*), count(distinct page_view_id) from staging.stg_web__page_views",
    ) == [(40, 40)]
    # invoke status shows the stream like a table load: stored, dead letters, lag.
    import json

    (stream,) = json.loads(project.invoke("status", "--json").stdout)["event_streams"]
    assert (stream["stream"], stream["events_stored"], stream["dead_letters"]) == (
        "web.page_views",
        40,
        0,
    )
