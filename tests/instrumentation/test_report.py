"""The HTML report, from real ops tables, checked as text and in a headless browser."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg2
import pytest

from control.graph import build_graph, to_mermaid
from control.report import write_report
from control.report_data import Bar, collect_report, pack_lanes
from control.status import collect_status
from control.svg import AMBER, GREEN, GREY, RED
from events.decode import Event, Poison
from events.warehouse import Progress, StreamRef, ensure_stream_tables, write_batch
from tidewater.runs import ensure_ops_tables

from .test_graph import MANIFEST

SECTION_IDS = ("gantt", "runtime-trend", "rows-per-table", "freshness", "failures", "lineage")
CHROMIUM = Path("/usr/bin/chromium")
LOAD_FAILURE = "app.orders: column size changed type from integer to text"
MODEL_FAILURE = "relation raw_app.events does not exist"

# Five days of history (a load, then a dbt build, each day; one load failed),
# then the last run: a load of three tables in parallel and a dbt build whose
# models and tests overlap, with one model failing.
RUNS = f"""
insert into ops.job_runs (run_id, job, started_at, finished_at, duration_s, status,
    error_class, error_message, host, pid, pipeline_run_id)
select 'load-' || day, 'load', now() - make_interval(days => day, hours => 1),
    now() - make_interval(days => day, hours => 1, secs => -(40 + day)), 40 + day,
    'succeeded', null, null, 'h', 1, 'run-' || day
from generate_series(1, 5) as day
union all
select 'build-' || day, 'dbt build', now() - make_interval(days => day),
    now() - make_interval(days => day, secs => -(80 - day)), 80 - day,
    'succeeded', null, null, 'h', 1, 'run-' || day
from generate_series(1, 5) as day
union all
select 'load-failed', 'load', now() - interval '2 days 3 hours',
    now() - interval '2 days 3 hours' + interval '3 seconds', 3, 'failed', 'terminal',
    '{LOAD_FAILURE}', 'h', 1, 'run-failed'
union all
select 'load-before', 'load', now() - interval '12 minutes', now() - interval '11 minutes', 60,
    'succeeded', null, null, 'h', 1, 'run-before'
union all
select 'load-last', 'load', now() - interval '10 minutes', now() - interval '9 minutes', 60,
    'succeeded', null, null, 'h', 1, 'run-last'
union all
select 'build-last', 'dbt build', now() - interval '8 minutes 30 seconds',
    now() - interval '7 minutes', 90, 'failed', 'terminal',
    'dbt build failed (exit 1): model.tw.fct_events', 'h', 1, 'run-last'
union all
select 'load-skipped', 'load', now() - interval '1 minute', now() - interval '1 minute', 0,
    'skipped', 'transient', 'another pipeline run is in progress', 'h', 2, 'run-skipped';

insert into ops.table_loads (run_id, batch_id, source_name, table_name, load_mode, status,
    started_at, duration_s, rows_read, rows_inserted, rows_updated, rows_deleted, rows_reread,
    attempts, error_class, error_message)
select run_id, 'b', 'app', table_name, 'incremental', 'succeeded',
    started_at + make_interval(secs => position), 5 * position, 100,
    case when run_id = 'load-5' then 250000 else 70 * position end, 2 * position, 1, 0, 1,
    null, null
from ops.job_runs,
    unnest(array['orders', 'events', 'customers']) with ordinality as tables (table_name, position)
where job = 'load' and status = 'succeeded' and run_id <> 'load-before'
union all
select 'load-failed', 'b', 'app', 'orders', 'incremental', 'failed',
    now() - interval '2 days 3 hours', 1, 0, 0, 0, 0, 0, 1, 'terminal', '{LOAD_FAILURE}'
union all
select 'load-failed', 'b', 'app', 'refunds', 'bulk', 'failed',
    now() - interval '2 days 3 hours', 1, 0, 0, 0, 0, 0, 1, 'terminal',
    'permission denied for <script>alert(1)</script>';

insert into ops.dbt_node_runs (run_id, unique_id, resource_type, node_name, status,
    started_at, completed_at, execution_time_s, rows_affected, message)
select 'build-last', resource_type || '.tw.' || node_name, resource_type, node_name, status,
    now() - interval '8 minutes 30 seconds' + make_interval(secs => began),
    now() - interval '8 minutes 30 seconds' + make_interval(secs => ended), ended - began,
    null, message
from (values
    ('model', 'stg_app__orders', 'success', 2, 12, null),
    ('model', 'stg_app__events', 'success', 2, 20, null),
    ('model', 'fct_orders', 'success', 13, 40, null),
    ('model', 'fct_events', 'error', 21, 25, '{MODEL_FAILURE}'),
    ('test', 'unique_fct_orders_order_id', 'pass', 41, 45, null),
    ('test', 'not_null_fct_orders_order_id', 'pass', 41, 44, null),
    ('test', 'not_null_fct_orders_customer_id', 'pass', 42, 46, null),
    ('test', 'relationships_fct_orders_customer_id', 'pass', 45, 50, null)
) as nodes (resource_type, node_name, status, began, ended, message)
union all
select 'build-1', 'model.tw.old_model', 'model', 'old_model', 'success',
    now() - interval '1 day', now() - interval '1 day' + interval '5 seconds', 5, 10, null;
"""


def section(page: str, anchor: str) -> str:
    """The markup of one ``<section id=...>``."""
    start = page.index(f'id="{anchor}"')
    return page[start : page.index("</section>", start)]


@pytest.fixture
def warehouse(make_database: Callable[[str], str]) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(make_database("report"))
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def report(warehouse: psycopg2.extensions.connection, tmp_path: Path) -> Path:
    ensure_ops_tables(warehouse)
    with warehouse.cursor() as cur:
        cur.execute(RUNS)
    return write_report(warehouse, tmp_path / "out" / "report.html", manifest=MANIFEST)


def test_the_report_holds_every_chart_as_inline_svg(report: Path) -> None:
    page = report.read_text()
    for anchor in SECTION_IDS:
        assert "<svg" in section(page, anchor), anchor
    assert not re.search(r"https?:|<script|<link|@import|url\((?!#)", page)  # self-contained


def test_the_gantt_chart_shows_the_last_run_only(report: Path) -> None:
    gantt = section(report.read_text(), "gantt")
    for name in ("load", "dbt build", "app.orders", "app.customers", "fct_orders", "fct_events"):
        assert f">{name}</text>" in gantt, name
    # the load and the dbt build of run-last; not the invocation that ended a minute
    # before it started, nor the skipped one after it
    assert gantt.count('class="label job"') == 2
    assert "pipeline run run-last" in gantt
    assert "old_model" not in gantt  # yesterday's run
    assert "unique_fct_orders_order_id" in gantt  # tests are there, packed into lanes
    assert ">tests 3</text>" in gantt and ">tests 4</text>" not in gantt


def test_the_last_run_is_one_invocation_however_close_the_one_before(
    warehouse: psycopg2.extensions.connection,
) -> None:
    ensure_ops_tables(warehouse)
    with warehouse.cursor() as cur:
        cur.execute(RUNS)
    data = collect_report(warehouse)
    assert data.last_run == "run-last"
    jobs = [(lane.label, lane.bars[0].status) for lane in data.lanes if lane.kind == "job"]
    assert jobs == [("load", "succeeded"), ("dbt build", "failed")]


def test_rows_from_before_pipeline_run_ids_count_as_a_run_each(
    warehouse: psycopg2.extensions.connection,
) -> None:
    with warehouse.cursor() as cur:
        # an ops.job_runs as it was before pipeline_run_id: the upgrade adds the column
        cur.execute(
            "create schema ops; create table ops.job_runs (run_id text primary key, "
            "job text not null, started_at timestamptz not null, finished_at timestamptz, "
            "duration_s double precision, status text not null, error_class text, "
            "error_message text, rows_loaded bigint, host text not null, pid integer not null, "
            "code_revision text, details jsonb not null default '{}')"
        )
        cur.execute(
            "insert into ops.job_runs (run_id, job, started_at, finished_at, status, host, pid) "
            "values ('old-load', 'load', now() - interval '3 minutes', "
            "now() - interval '2 minutes', 'succeeded', 'h', 1), "
            "('old-build', 'dbt build', now() - interval '2 minutes', now(), 'succeeded', 'h', 1)"
        )
    ensure_ops_tables(warehouse)
    data = collect_report(warehouse)
    assert data.last_run == "old-build"
    assert [lane.label for lane in data.lanes if lane.kind == "job"] == ["dbt build"]


def test_the_failures_table_holds_job_load_and_model_failures(report: Path) -> None:
    failures = section(report.read_text(), "failures")
    assert LOAD_FAILURE in failures
    assert MODEL_FAILURE in failures
    assert "permission denied for &lt;script&gt;alert(1)&lt;/script&gt;" in failures
    assert "dbt build failed (exit 1): model.tw.fct_events" in failures


def test_rows_trend_and_freshness_cover_every_table(report: Path) -> None:
    page = report.read_text()
    rows = section(page, "rows-per-table")
    assert ">250k</text>" in rows  # a big reload reads as such
    assert rows.count("<rect") == 6 * 3 + 2 + 7  # loads, the failed run's two, totals
    freshness = section(page, "freshness")
    assert "app.refunds" in freshness and "never loaded successfully" in freshness
    trend = section(page, "runtime-trend")
    assert trend.count("<polyline") == 2  # load and dbt build


def test_the_lineage_section_draws_the_graph_and_its_mermaid_text(report: Path) -> None:
    lineage = section(report.read_text(), "lineage")
    assert "raw_app.orders" in lineage and "Sales dashboard" in lineage
    assert "flowchart LR" in lineage
    assert "marker-end" in lineage


def test_a_mermaid_string_draws_the_lineage_without_a_manifest(
    warehouse: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    mermaid = to_mermaid(build_graph(MANIFEST))
    page = write_report(warehouse, tmp_path / "r.html", mermaid=mermaid).read_text()
    lineage = section(page, "lineage")
    assert (
        "<svg" in lineage and "raw_app.customers" in lineage and "int_orders_classified" in lineage
    )


def test_a_warehouse_without_ops_tables_still_gets_a_report(
    warehouse: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    page = write_report(warehouse, tmp_path / "r.html").read_text()
    for anchor in (*SECTION_IDS, "event-streams"):
        assert f'<section id="{anchor}">' in page
    assert "No runs recorded yet" in page
    assert "the ops tables do not exist" in page


def test_empty_ops_tables_give_a_report_of_empty_sections(
    warehouse: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    ensure_ops_tables(warehouse)
    page = write_report(warehouse, tmp_path / "r.html", days=7).read_text()
    for anchor in (*SECTION_IDS, "event-streams"):
        assert 'class="empty"' in section(page, anchor), anchor


def at(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_overlapping_bars_need_as_many_lanes_as_ran_at_once() -> None:
    bars = [
        Bar("test", name, at(start), at(end), "pass")
        for name, start, end in (
            ("t1", 0, 4),
            ("t2", 1, 3),
            ("t3", 2, 6),
            ("t4", 3, 5),
            ("t5", 6, 7),
        )
    ]
    lanes = pack_lanes(bars)
    assert len(lanes) == 3
    for lane in lanes:
        assert all(a.finished_at <= b.started_at for a, b in pairwise(lane))


def chromium(*args: str, profile: Path) -> str:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def test_the_report_renders_its_charts_in_a_headless_browser(report: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (`apt-get install chromium`; CI installs it)")
    dom = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile")
    for anchor in SECTION_IDS:
        assert "<svg" in section(dom, anchor), anchor
    assert LOAD_FAILURE in section(dom, "failures")
    assert "<rect" in section(dom, "gantt") and "<polyline" in section(dom, "runtime-trend")


def svgs(page: str) -> list[ElementTree.Element]:
    """Every ``<svg>`` of the page, parsed as XML (which fails on a stray ``<`` or ``&``)."""
    return [ElementTree.fromstring(markup) for markup in re.findall(r"<svg.*?</svg>", page, re.S)]


def test_every_chart_is_well_formed_svg(report: Path) -> None:
    charts = svgs(report.read_text())
    assert [chart.tag for chart in charts] == ["svg"] * len(SECTION_IDS)  # one per section


def with_freshness(source_id: str, freshness: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the test manifest with one source table's freshness set, as dbt
    writes it into manifest.json."""
    manifest = copy.deepcopy(MANIFEST)
    manifest["sources"][source_id]["freshness"] = freshness
    return manifest


def after(count: int | None, period: str | None) -> dict[str, Any]:
    return {"count": count, "period": period}


def freshness_bar(page: str, table: str) -> str:
    """The fill colour of a table's bar in the freshness chart."""
    match = re.search(
        rf'fill="(#[0-9a-f]{{6}})"><title>{re.escape(table)}: last loaded',
        section(page, "freshness"),
    )
    assert match, table
    return match.group(1)


def test_freshness_limits_are_read_from_the_project(
    warehouse: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    ensure_ops_tables(warehouse)
    with warehouse.cursor() as cur:
        cur.execute(RUNS)  # app.orders last loaded about ten minutes ago
    orders = "source.tw.app.orders"
    pages = {
        name: write_report(warehouse, tmp_path / f"{name}.html", manifest=manifest).read_text()
        for name, manifest in {
            "none": MANIFEST,
            "hour": with_freshness(orders, {"warn_after": after(1, "hour")}),
            "warn": with_freshness(
                orders, {"warn_after": after(5, "minute"), "error_after": after(None, None)}
            ),
            "error": with_freshness(
                orders, {"warn_after": after(5, "minute"), "error_after": after(8, "minute")}
            ),
        }.items()
    }
    assert freshness_bar(pages["none"], "app.orders") == GREY
    assert freshness_bar(pages["hour"], "app.orders") == GREEN
    assert freshness_bar(pages["warn"], "app.orders") == AMBER
    assert freshness_bar(pages["error"], "app.orders") == RED
    assert "warn after 1 h" in section(pages["hour"], "freshness")
    assert "warn after 5 min, error after 8 min" in section(pages["error"], "freshness")
    # one tick per limit set, none for the tables without a freshness config
    ticks = {name: section(page, "freshness").count('class="limit') for name, page in pages.items()}
    assert ticks == {"none": 0, "hour": 1, "warn": 1, "error": 2}
    for page in pages.values():
        assert freshness_bar(page, "app.customers") == GREY
        assert "app.customers: last loaded 10 min ago; no freshness limit set" in page
    # the summary counts tables past their limit (and app.refunds, never loaded)
    assert "<b>1 / 4</b><span>tables past their freshness limit" in pages["hour"]
    assert "<b>2 / 4</b><span>tables past their freshness limit" in pages["warn"]


NASTY = """<img src=x onerror="alert('x')"> & co"""


def test_html_special_characters_from_the_warehouse_are_escaped(
    warehouse: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    ensure_ops_tables(warehouse)
    table = "o&<rders>"
    with warehouse.cursor() as cur:
        cur.execute(
            "insert into ops.job_runs (run_id, job, started_at, finished_at, duration_s, status, "
            "error_class, error_message, host, pid, pipeline_run_id) values "
            "('r1', 'load', now() - interval '1 minute', now(), 60, 'failed', 'terminal', "
            "%(nasty)s, 'h', 1, 'p<1>')",
            {"nasty": NASTY},
        )
        cur.execute(
            "insert into ops.table_loads (run_id, batch_id, source_name, table_name, load_mode, "
            "status, started_at, duration_s, rows_read, rows_inserted, rows_updated, "
            "rows_deleted, rows_reread, attempts) values "
            "('r1', 'b', 'app', %(table)s, 'bulk', 'succeeded', now() - interval '50 seconds', "
            "2, 5, 5, 0, 0, 0, 1)",
            {"table": table},
        )
    page = write_report(warehouse, tmp_path / "r.html", manifest=MANIFEST).read_text()
    assert NASTY not in page and "<img" not in page and table not in page
    escaped = "&lt;img src=x onerror=&#34;alert(&#39;x&#39;)&#34;&gt; &amp; co"
    assert escaped in section(page, "failures")
    for anchor in ("gantt", "rows-per-table", "freshness"):
        assert "app.o&amp;&lt;rders&gt;" in section(page, anchor), anchor
    assert "pipeline run p&lt;1&gt;" in section(page, "gantt")
    svgs(page)  # still well-formed


def test_status_and_the_report_read_the_same_rows(
    warehouse: psycopg2.extensions.connection,
) -> None:
    ensure_ops_tables(warehouse)
    with warehouse.cursor() as cur:
        cur.execute(RUNS)
    data = collect_report(warehouse)
    status = collect_status(warehouse)
    assert [row["table_name"] for row in status["freshness"]] == [t for t, _ in data.freshness]
    # the last finished load run with table loads: the grid's last column
    last_run, _ = data.runs[-1]
    assert last_run == "load-last"
    assert {row["table_name"] for row in status["last_load"]} == {
        table for table, run_id in data.rows if run_id == last_run
    }
    # status lists failed jobs; the report also failed loads and models
    assert [row["name"] for row in status["last_errors"]] == ["dbt build", "load"]
    assert {failure.kind for failure in data.failures} == {"job", "load", "model"}
    assert status["pipeline_runs"][0]["pipeline_run_id"] == "run-skipped"
    assert data.last_run == "run-last"  # the report skips a run that was only skipped


def test_event_streams_show_their_lag_dead_letters_and_rate_as_status_does(
    warehouse: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    ensure_ops_tables(warehouse)
    ref = StreamRef("shop", "rabbitmq", "raw_shop", "orders<placed>")
    ensure_stream_tables(warehouse, [ref])
    events = [Event(f"e{n}", json.dumps({"n": n}), None, n) for n in range(1, 1201)]
    poison = [Poison("not valid JSON", b"{oops", 1201), Poison("not UTF-8", b"\xff", 1202)]
    write_batch(
        warehouse,
        ref,
        [*events, events[0]],  # a redelivery: stored once, counted as a duplicate
        poison,
        position=1202,
        progress=Progress(tail=4702, lag_seconds=75.0, events_per_s=51234.4),
    )
    page = write_report(warehouse, tmp_path / "r.html", manifest=MANIFEST).read_text()
    streams = section(page, "event-streams")
    (row,) = re.findall(r'<tr class="stream">(.*?)</tr>', streams)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[:10] == [
        "shop.orders&lt;placed&gt;",  # escaped
        "rabbitmq",
        "1,202",
        "4,702",
        "3,500",  # messages behind the tail
        "1 min 15 s",
        "1,200",
        "1",
        "2",
        "51,234",
    ]
    assert '<td class="dead bad">2</td>' in streams
    # the same row `invoke status` shows
    (status_row,) = collect_status(warehouse)["event_streams"]
    (data_row,) = collect_report(warehouse).streams
    assert (
        status_row["stream"],
        status_row["lag_messages"],
        status_row["lag_seconds"],
        status_row["dead_letters"],
        status_row["events_per_s"],
    ) == (
        data_row.stream,
        data_row.lag_messages,
        data_row.lag_seconds,
        data_row.dead_letters,
        data_row.events_per_s,
    )
