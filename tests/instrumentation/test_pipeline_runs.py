"""One run is one run: every job of one `invoke load transform` shares a
pipeline_run_id, and `invoke status` and `invoke report` show runs by invocation,
in words people read ("12 min ago", "3.2 s")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import psycopg2
import pytest

from control.report_data import collect_report
from control.status import collect_status, human_age, human_duration, status_sections
from tests.conftest import ROOT, Project, query
from tidewater.runs import PIPELINE_RUN_ENV, ensure_ops_tables, record_job

LONG_FLOAT = re.compile(r"\d\.\d{3,}")


def test_two_invocations_are_two_pipeline_runs_and_the_report_shows_the_second(
    project: Project,
) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    # each invoke process makes its own id (an earlier test of this process may have
    # left one in the environment, which the invoke processes would inherit)
    project.env.pop(PIPELINE_RUN_ENV, None)
    project.invoke("load", "transform")
    project.invoke("load", "transform")  # nothing changed: dbt build has nothing to do

    runs = query(
        project.warehouse,
        "select pipeline_run_id, array_agg(job order by started_at) from ops.job_runs "
        "where job in ('load', 'dbt build', 'publish') "
        "group by 1 order by min(started_at)",
    )
    assert [jobs for _, jobs in runs] == [["load", "dbt build", "publish"], ["load", "dbt build"]]
    first, second = (run_id for run_id, _ in runs)
    assert first and second and first != second

    conn = psycopg2.connect(project.warehouse)
    try:
        data = collect_report(conn)
    finally:
        conn.close()
    assert data.last_run == second
    jobs = [lane.bars[0] for lane in data.lanes if lane.kind == "job"]
    assert [bar.label for bar in jobs] == ["load", "dbt build"]
    second_started = query(
        project.warehouse,
        f"select min(started_at) from ops.job_runs where pipeline_run_id = '{second}'",
    )[0][0]
    assert min(bar.started_at for lane in data.lanes for bar in lane.bars) >= second_started

    status = project.invoke("status")  # not a terminal: plain text, as in a cron log
    assert "\x1b[" not in status.stdout
    assert "ago" in status.stdout
    assert not LONG_FLOAT.search(status.stdout), status.stdout
    lines = [line for line in status.stdout.splitlines() if line.startswith((first, second))]
    assert [line.split()[0] for line in lines] == [second, first]  # newest first
    assert all("load" in line and "dbt build" in line for line in lines)
    assert "publish" in lines[1] and "publish" not in lines[0]

    machine = json.loads(project.invoke("status", "--json").stdout)
    newest = machine["pipeline_runs"][0]
    assert newest["pipeline_run_id"] == second
    assert isinstance(newest["duration_s"], float) and isinstance(newest["age_s"], float)
    assert [job["job"] for job in newest["jobs"]] == ["load", "dbt build"]


def test_a_job_started_alone_gets_a_pipeline_run_of_its_own(project: Project) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    env = {key: value for key, value in project.env.items() if key != PIPELINE_RUN_ENV}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-m", "control", "load", "--table", "countries"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
    ids = query(
        project.warehouse,
        "select pipeline_run_id from ops.job_runs where job = 'load' order by started_at",
    )
    assert len(ids) == 2 and ids[0][0] and ids[1][0] and ids[0] != ids[1]


@pytest.fixture
def warehouse(make_database: Callable[[str], str]) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(make_database("status"))
    conn.autocommit = True
    yield conn
    conn.close()


def test_jobs_of_one_process_share_its_pipeline_run_id(
    warehouse: psycopg2.extensions.connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PIPELINE_RUN_ENV, "invocation1")
    for job in ("load", "dbt build"):
        with record_job(lambda: psycopg2.connect(warehouse.dsn), job):
            pass
    monkeypatch.delenv(PIPELINE_RUN_ENV)
    with record_job(lambda: psycopg2.connect(warehouse.dsn), "publish") as alone:
        pass
    assert alone.pipeline_run_id not in ("", "invocation1")
    assert os.environ[PIPELINE_RUN_ENV] == alone.pipeline_run_id  # children share it
    with warehouse.cursor() as cur:
        cur.execute("select job, pipeline_run_id from ops.job_runs order by started_at")
        assert cur.fetchall() == [
            ("load", "invocation1"),
            ("dbt build", "invocation1"),
            ("publish", alone.pipeline_run_id),
        ]


def test_status_shows_ages_and_durations_in_words_and_json_in_numbers(
    warehouse: psycopg2.extensions.connection,
) -> None:
    ensure_ops_tables(warehouse)
    with warehouse.cursor() as cur:
        cur.execute(
            "insert into ops.job_runs (run_id, job, started_at, finished_at, duration_s, status,"
            " host, pid, pipeline_run_id, error_message) values "
            "('a1', 'load', now() - interval '12 minutes 3.2 seconds', "
            "now() - interval '12 minutes', 3.2087, 'succeeded', 'h', 1, 'p1', null), "
            "('a2', 'dbt build', now() - interval '12 minutes', now() - interval '11 minutes', "
            "60.0108740263888, 'failed', 'h', 1, 'p1', 'dbt build failed (exit 1)'), "
            "('b1', 'load', now() - interval '3 days', now() - interval '3 days', 0.0108740263888,"
            " 'succeeded', 'h', 1, null, null)"
        )
    status = collect_status(warehouse)
    assert [run["pipeline_run_id"] for run in status["pipeline_runs"]] == ["p1", "b1"]
    assert status["pipeline_runs"][0]["status"] == "failed"
    assert isinstance(status["pipeline_runs"][0]["duration_s"], float)
    json.dumps(status, default=str)
    (_title, headers, rows), *_ = status_sections(status)
    assert headers[:4] == ["run", "started", "took", "status"]
    assert rows[0][:4] == ["p1", "12 min ago", "1 min 03 s", "failed"]
    assert rows[0][4] == "load 3.2 s, dbt build failed 1 min 00 s"
    assert rows[0][6] == "dbt build: dbt build failed (exit 1)"
    assert rows[1][:3] == ["b1", "3 d ago", "0.0 s"]
    text = "\n".join(" ".join(row) for _, _, rows in status_sections(status) for row in rows)
    assert not LONG_FLOAT.search(text)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.0108740263888, "0.0 s"),
        (3.2087, "3.2 s"),
        (41.4, "41 s"),
        (185, "3 min 05 s"),
        (7800, "2 h 10 min"),
        (None, ""),
    ],
)
def test_durations_read_as_words(seconds: float | None, words: str) -> None:
    assert human_duration(seconds) == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (2, "just now"),
        (40, "40 s ago"),
        (720, "12 min ago"),
        (5.2 * 3600, "5.2 h ago"),
        (3 * 86400, "3 d ago"),
        (None, "never"),
    ],
)
def test_ages_read_as_words(seconds: float | None, words: str) -> None:
    assert human_age(seconds) == words


def test_the_load_summary_explains_its_re_read_column(project: Project) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    summary = project.invoke("load", "--table", "orders").stdout
    header, *_ = [line for line in summary.splitlines() if line.startswith("table ")]
    assert "re-read" in header
    assert "re-read: rows read again on purpose, not changes" in summary
    assert "only inserted/updated/deleted changed the warehouse" in summary
