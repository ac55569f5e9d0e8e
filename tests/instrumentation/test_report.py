"""The HTML report and the dependency graph, from real ops tables."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from tidewater.graph import build_graph, to_mermaid
from tidewater.report import write_report
from tidewater.runs import ensure_ops_tables

MANIFEST = {
    "sources": {
        "source.tw.app.orders": {
            "name": "orders",
            "source_name": "app",
            "schema": "raw_app",
            "identifier": "orders",
        }
    },
    "nodes": {
        "model.tw.stg_app__orders": {
            "resource_type": "model",
            "name": "stg_app__orders",
            "path": "staging/app/stg_app__orders.sql",
            "depends_on": {"nodes": ["source.tw.app.orders"]},
        },
        "model.tw.fct_orders": {
            "resource_type": "model",
            "name": "fct_orders",
            "path": "marts/fct_orders.sql",
            "depends_on": {"nodes": ["model.tw.stg_app__orders"]},
        },
        "test.tw.unique_fct_orders": {
            "resource_type": "test",
            "name": "unique_fct_orders",
            "depends_on": {"nodes": ["model.tw.fct_orders"]},
        },
    },
    "exposures": {
        "exposure.tw.sales": {
            "name": "sales_dashboard",
            "label": "Sales dashboard",
            "depends_on": {"nodes": ["model.tw.fct_orders"]},
        }
    },
}

RUNS = """
insert into ops.job_runs (run_id, job, started_at, finished_at, duration_s, status,
    error_class, error_message, host, pid)
values
    ('r1', 'load', now() - interval '2 hours', now() - interval '2 hours' + interval '20 s', 20,
     'succeeded', null, null, 'h', 1),
    ('r2', 'load', now() - interval '1 hour', now() - interval '1 hour' + interval '3 s', 3,
     'failed', 'terminal', 'app.orders: column size changed type', 'h', 1),
    ('r3', 'load', now() - interval '10 minutes', now() - interval '9 minutes', 60,
     'succeeded', null, null, 'h', 1),
    ('r4', 'dbt build', now() - interval '9 minutes', now() - interval '8 minutes', 60,
     'succeeded', null, null, 'h', 1);
insert into ops.table_loads (run_id, batch_id, source_name, table_name, load_mode, status,
    started_at, duration_s, rows_read, rows_inserted, rows_updated, rows_deleted, rows_reread,
    attempts)
select run_id, 'b', 'app', table_name, 'incremental', 'succeeded', started_at, 5, 10, 7, 2, 1,
    0, 1
from ops.job_runs, unnest(array['orders', 'events']) as table_name
where job = 'load' and status = 'succeeded';
insert into ops.dbt_node_runs (run_id, unique_id, resource_type, node_name, status,
    started_at, completed_at, execution_time_s)
values
    ('r4', 'model.tw.stg_app__orders', 'model', 'stg_app__orders', 'success',
     now() - interval '9 minutes', now() - interval '530 seconds', 10),
    ('r4', 'model.tw.fct_events', 'model', 'fct_events', 'success',
     now() - interval '535 seconds', now() - interval '500 seconds', 35),
    ('r4', 'model.tw.fct_orders', 'model', 'fct_orders', 'success',
     now() - interval '530 seconds', now() - interval '510 seconds', 20);
"""


def test_mermaid_runs_from_source_tables_through_raw_to_exposures() -> None:
    text = to_mermaid(build_graph(MANIFEST))
    assert text.startswith("flowchart LR\n")
    order = [
        'origin_source_tw_app_orders["app.orders"]',
        'source_tw_app_orders["raw_app.orders"]',
        'model_tw_stg_app__orders["stg_app__orders"]',
        'model_tw_fct_orders["fct_orders"]',
        'exposure_tw_sales["Sales dashboard"]',
    ]
    positions = [text.index(node) for node in order]
    assert positions == sorted(positions)
    for edge in (
        "origin_source_tw_app_orders --> source_tw_app_orders",
        "source_tw_app_orders --> model_tw_stg_app__orders",
        "model_tw_fct_orders --> exposure_tw_sales",
    ):
        assert edge in text
    assert "unique_fct_orders" not in text


@pytest.fixture
def report(make_database: Callable[[str], str], tmp_path: Path) -> Path:
    dsn = make_database("report")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        ensure_ops_tables(conn)
        with conn.cursor() as cur:
            cur.execute(RUNS)
        return write_report(conn, tmp_path / "report.html", manifest=MANIFEST)
    finally:
        conn.close()


def test_the_report_holds_every_chart_and_the_failure(report: Path) -> None:
    page = report.read_text()
    for anchor in ("gantt", "runtime-trend", "rows-per-table", "freshness", "failures", "lineage"):
        assert f'<section id="{anchor}">' in page
    assert "app.orders: column size changed type" in page
    assert "fct_events" in page and "dbt build" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained


def test_the_report_renders_in_a_headless_browser(report: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium)")
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for anchor in ("gantt", "runtime-trend", "rows-per-table", "freshness", "lineage"):
        section = dom[dom.index(f'id="{anchor}"') :]
        assert "<svg" in section[: section.index("</section>")], anchor
    assert json.dumps("app.orders: column size changed type")[1:-1] in dom
