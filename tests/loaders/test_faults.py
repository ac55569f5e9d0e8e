"""Faults: concurrent writers, killed loaders, dropped connections."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import psycopg2
import pytest

from loaders.config import SourceConfig
from loaders.pipeline import raise_on_failure
from tests.loaders.conftest import execute, only

COMPARED = "customer_id, email, full_name, country_code, is_marketing_opt_in, updated_at"


def compare(source_dsn: str, warehouse_dsn: str) -> dict[str, int]:
    """Lost, phantom, duplicate and stale rows between source and warehouse."""
    source = {row[0]: row for row in execute(source_dsn, f"select {COMPARED} from customers")}
    warehouse_rows = execute(
        warehouse_dsn, f"select {COMPARED} from raw_app.customers where _deleted_at is null"
    )
    warehouse = {row[0]: row for row in warehouse_rows}
    return {
        "lost": len(source.keys() - warehouse.keys()),
        "phantom": len(warehouse.keys() - source.keys()),
        "duplicate": len(warehouse_rows) - len(warehouse),
        "stale": sum(
            1 for key in source.keys() & warehouse.keys() if source[key] != warehouse[key]
        ),
    }


def writer(dsn: str, seed: int, stop: threading.Event, *, deletes: bool) -> None:
    rng = random.Random(seed)
    conn = psycopg2.connect(dsn)
    next_id = 1_000_000 * (seed + 1)
    try:
        while not stop.is_set():
            with conn.cursor() as cur:
                for _ in range(rng.randint(1, 5)):
                    action = rng.random()
                    if action < 0.5:
                        next_id += 1
                        cur.execute(
                            "insert into customers (customer_id, email, full_name, country_code,"
                            " signed_up_at) values (%s, %s, 'w', 'US', now())",
                            (next_id, f"w{next_id}@example.com"),
                        )
                    elif action < 0.85 or not deletes:
                        cur.execute(
                            "update customers set full_name = md5(random()::text) where customer_id"
                            " = (select customer_id from customers order by random() limit 1)"
                        )
                    else:
                        cur.execute(
                            "delete from customers where customer_id = "
                            "(select customer_id from customers order by random() limit 1)"
                        )
                time.sleep(rng.choice([0, 0, 0.01, 0.05, 0.3]))  # some transactions stay open long
            try:
                if rng.random() < 0.2:
                    conn.rollback()
                else:
                    conn.commit()
            except psycopg2.errors.SerializationFailure:
                conn.rollback()
    except psycopg2.Error:
        conn.rollback()
    finally:
        conn.close()


@pytest.mark.parametrize("deletes", [True, False], ids=["with-deletes", "marks-only"])
def test_concurrent_writers_lose_duplicate_and_invent_nothing(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load, deletes: bool
) -> None:
    """Random writers (long and short transactions, rollbacks, updates, deletes)
    run while loads repeat; after a final load the warehouse equals the source."""
    execute(
        source_dsn,
        "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
        "select g, 'c' || g || '@example.com', 'c', 'US', now() from generate_series(1, 200) g",
    )
    source = only(app_source, "customers", detect_deletes=deletes)
    stop = threading.Event()
    writers = [
        threading.Thread(target=writer, args=(source_dsn, seed, stop), kwargs={"deletes": deletes})
        for seed in range(4)
    ]
    for thread in writers:
        thread.start()
    try:
        for _ in range(12):
            raise_on_failure(list(run_load(source).values()))
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    raise_on_failure(list(run_load(source).values()))
    report = compare(source_dsn, warehouse_dsn)
    print("concurrent writers:", report)
    assert report == {"lost": 0, "phantom": 0, "duplicate": 0, "stale": 0}


LOAD_SCRIPT = """
import sys
from loaders.config import load_sources
from loaders.pipeline import LoadOptions, connector, load_all, raise_on_failure
import dataclasses
source = load_sources()[0]
source = dataclasses.replace(source, tables=tuple(t for t in source.tables if t.name == "events"))
results = load_all((source,), source_connectors={"app": connector(sys.argv[1], what="source")},
                   connect_warehouse=connector(sys.argv[2], what="warehouse"),
                   options=LoadOptions(retries=1))
raise_on_failure(results)
"""


def fill_events(dsn: str, rows: int) -> None:
    execute(
        dsn,
        "insert into events (session_id, customer_id, event_type, page_path, properties, occurred_at) "
        "select md5(g::text)::uuid, mod(g, 100), 'page_view', '/p/' || g, "
        "jsonb_build_object('n', g, 'text', repeat('x', 200)), "
        "timestamptz '2026-01-01' + g * interval '1 second' from generate_series(1, %s) g",
        (rows,),
    )


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def copying(warehouse_dsn: str) -> bool:
    return bool(
        execute(
            warehouse_dsn,
            "select 1 from pg_stat_activity where datname = current_database() "
            "and query ilike 'copy%%from stdin%%' and state = 'active'",
        )
    )


def test_a_loader_killed_mid_copy_leaves_nothing_and_the_next_run_converges(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    fill_events(source_dsn, 400_000)
    process = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, source_dsn, warehouse_dsn])
    try:
        wait_for(lambda: copying(warehouse_dsn) or process.poll() is not None)
        assert process.poll() is None, "the load finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    # The warehouse backend notices the dead client and rolls back.
    wait_for(lambda: not copying(warehouse_dsn))
    assert execute(
        warehouse_dsn,
        "select count(*) from pg_tables where schemaname = 'raw_app' and tablename = 'events'",
    ) in ([(0,)],) or execute(warehouse_dsn, "select count(*) from raw_app.events") == [(0,)]
    assert execute(
        warehouse_dsn, "select count(*) from ops.high_water_marks where table_name = 'events'"
    ) == [(0,)]
    result = run_load(only(app_source, "events"))["events"]
    assert result.status == "succeeded"
    assert execute(
        warehouse_dsn, "select count(*), count(distinct event_id) from raw_app.events"
    ) == [(400_000, 400_000)]


def test_a_dropped_connection_is_retried_with_backoff(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    fill_events(source_dsn, 300_000)
    killed = threading.Event()

    def terminate_during_copy() -> None:
        wait_for(lambda: copying(warehouse_dsn))
        execute(
            warehouse_dsn,
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() "
            "and query ilike 'copy%%from stdin%%'",
        )
        killed.set()

    thread = threading.Thread(target=terminate_during_copy)
    thread.start()
    result = run_load(only(app_source, "events"))["events"]
    thread.join()
    assert killed.is_set()
    assert result.status == "succeeded"
    assert result.attempts == 2
    assert execute(warehouse_dsn, "select count(*) from raw_app.events") == [(300_000,)]


def test_a_real_error_is_not_retried(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    execute(warehouse_dsn, "create role twt_no_access_probe")  # not used: a permission error below
    execute(warehouse_dsn, "drop role twt_no_access_probe")
    execute(
        warehouse_dsn, "create schema raw_app; create table raw_app.customers (customer_id text)"
    )
    results = run_load(only(app_source, "customers"))
    assert results["customers"].status == "failed"
    assert results["customers"].error_class == "terminal"
