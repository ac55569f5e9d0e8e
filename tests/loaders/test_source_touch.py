"""A light touch on the production database: the source transaction ends when its
reads are done (before the warehouse merges), a read never queues behind an
application's exclusive lock, reads are bounded by a statement timeout, and the
time the source was held is recorded."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg2

from loaders.config import SourceConfig, TableConfig, load_sources
from loaders.pipeline import LoadOptions, TableResult, connector, load_all
from tests.loaders.conftest import custom_source, execute, only
from tests.projects import dbt_project
from tidewater.runs import ensure_ops_tables, record_table_loads


def add_customers(dsn: str, first: int, last: int) -> None:
    execute(
        dsn,
        "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
        "select g, 'user' || g || '@example.com', 'User ' || g, 'US', now() "
        "from generate_series(%s, %s) as g",
        (first, last),
    )


def wait_for(condition, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def loader_waits_on_a_lock(warehouse_dsn: str) -> bool:
    return bool(
        execute(
            warehouse_dsn,
            "select 1 from pg_stat_activity where application_name = 'tidewater-loader' "
            "and wait_event_type = 'Lock' and datname = current_database()",
        )
    )


def loader_locks_on_customers(source_dsn: str) -> list[tuple]:
    return execute(
        source_dsn,
        "select locks.mode, activity.state from pg_locks as locks "
        "inner join pg_stat_activity as activity on activity.pid = locks.pid "
        "where activity.application_name = 'tidewater-loader' "
        "and locks.relation = 'customers'::regclass",
    )


def test_the_source_is_released_before_the_warehouse_merges(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 2_000)
    source = only(app_source, "customers")
    run_load(source)
    execute(source_dsn, "update customers set full_name = 'Renamed' where customer_id <= 500")
    # Someone holds the raw table in the warehouse: the load's merge must wait.
    blocker = psycopg2.connect(warehouse_dsn)
    with blocker.cursor() as cur:
        cur.execute("lock table raw_app.customers in exclusive mode")
    results: dict[str, TableResult] = {}
    loading = threading.Thread(target=lambda: results.update(run_load(source)))
    started = time.perf_counter()
    loading.start()
    try:
        wait_for(lambda: loader_waits_on_a_lock(warehouse_dsn))
        # The load is in its warehouse phase; it holds nothing on the source ...
        assert loader_locks_on_customers(source_dsn) == []
        # ... so the application's ALTER TABLE goes through at once.
        app = psycopg2.connect(source_dsn)
        try:
            with app.cursor() as cur:
                cur.execute("set lock_timeout = '5s'")
                altering = time.perf_counter()
                cur.execute("alter table customers alter column full_name set default 'x'")
                took = time.perf_counter() - altering
            app.commit()
        finally:
            app.close()
        assert took < 1.0
        time.sleep(1.0)  # the merge keeps waiting in the warehouse
    finally:
        blocker.rollback()
        blocker.close()
        loading.join(timeout=60)
    result = results["customers"]
    assert result.status == "succeeded", result.error
    assert result.updated == 500
    assert result.source_held_s is not None
    # held for the reads alone: not for the second (and more) the merge waited
    assert result.source_held_s + 1.0 < result.duration_s <= time.perf_counter() - started


def test_a_load_lets_go_of_a_table_an_application_holds_exclusively(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 100)
    source = dataclasses.replace(
        only(app_source, "customers"), lock_timeout=timedelta(milliseconds=500)
    )
    run_load(source)
    marks_before = execute(warehouse_dsn, "select * from ops.high_water_marks")
    app = psycopg2.connect(source_dsn)
    with app.cursor() as cur:
        cur.execute("lock table customers in access exclusive mode")
    # The application's own readers queue behind its lock; the loader must not add
    # itself to that queue for longer than its lock timeout.
    release = threading.Timer(20.0, app.rollback)
    release.start()
    try:
        started = time.perf_counter()
        result = run_load(source, retries=3)["customers"]
        took = time.perf_counter() - started
    finally:
        release.cancel()
        app.rollback()
        app.close()
    assert result.status == "failed"
    # three attempts that each waited 0.5 s, and the backoff between them
    assert 1.5 <= took < 6.0
    assert result.error_class == "transient"
    assert result.error.startswith("app.customers: transient (retries exhausted) error:")
    assert "another session holds a lock on the source table" in result.error
    assert "waited 0.5 s (source_lock_timeout)" in result.error
    assert execute(warehouse_dsn, "select * from ops.high_water_marks") == marks_before
    # Once the application is done, the next load goes through.
    assert run_load(source)["customers"].status == "succeeded"


def test_a_read_longer_than_the_statement_timeout_is_cancelled_with_a_clear_error(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    execute(
        source_dsn,
        "create view slow_countries as select countries.* from countries, pg_sleep(3) as pause",
    )
    source = dataclasses.replace(
        custom_source(TableConfig(name="slow_countries", mode="bulk")),
        statement_timeout=timedelta(seconds=1),
    )
    started = time.perf_counter()
    result = run_load(source)["slow_countries"]
    assert time.perf_counter() - started < 3.0
    assert result.status == "failed"
    assert result.error_class == "terminal"
    assert "ran longer than 1 s (source_statement_timeout)" in result.error
    assert "Raise source_statement_timeout" in result.error


def test_the_time_the_source_was_held_is_recorded_per_table(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig
) -> None:
    add_customers(source_dsn, 1, 5_000)
    results = load_all(
        (only(app_source, "customers", "countries"),),
        source_connectors={"app": connector(source_dsn, what="source")},
        connect_warehouse=connector(warehouse_dsn, what="warehouse"),
        options=LoadOptions(),
    )
    conn = psycopg2.connect(warehouse_dsn)
    conn.autocommit = True
    try:
        ensure_ops_tables(conn)
        record_table_loads(conn, uuid.uuid4().hex[:12], results)
    finally:
        conn.close()
    recorded = execute(
        warehouse_dsn,
        "select table_name, source_held_s, duration_s from ops.table_loads order by 1",
    )
    assert [name for name, _, _ in recorded] == ["countries", "customers"]
    for _, held, duration in recorded:
        assert 0 < held < duration


def test_source_timeouts_are_declared_per_source(tmp_path: Path) -> None:
    dbt_project(tmp_path)
    (tmp_path / "models" / "_app__sources.yml").write_text(
        """
sources:
  - name: app
    loader: tidewater
    config:
      meta:
        tidewater:
          source_lock_timeout: 2 seconds
          source_statement_timeout: 10 minutes
    tables:
      - name: countries
        config: {meta: {tidewater: {mode: bulk}}}
  - name: other
    loader: tidewater
    tables:
      - name: countries
        config: {meta: {tidewater: {mode: bulk}}}
"""
    )
    declared, defaults = load_sources(tmp_path)
    assert (declared.lock_timeout, declared.statement_timeout) == (
        timedelta(seconds=2),
        timedelta(minutes=10),
    )
    assert (defaults.lock_timeout, defaults.statement_timeout) == (
        timedelta(seconds=5),
        timedelta(minutes=30),
    )
