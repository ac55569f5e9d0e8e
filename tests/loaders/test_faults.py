"""Faults: concurrent writers, killed loaders, dropped connections."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import psutil
import psycopg2
import pytest
import yaml

from loaders.config import SourceConfig
from loaders.pipeline import LoadOptions, connector, load_all, raise_on_failure
from tests.loaders.conftest import SCHEMA_SQL, execute, only
from tidewater import embedded
from tidewater.runs import record_job

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


# --- server restarts and crashes: a second embedded server that the test may stop ---


@pytest.fixture(scope="module")
def second_server() -> Iterator[embedded.EmbeddedServer]:
    """A PostgreSQL server of these tests' own (the suite's server must stay up for the
    other tests), started through the same API as the embedded default. Its data lives
    outside pytest's temporary directories, which other sessions may prune."""
    base = Path(tempfile.mkdtemp(prefix="tidewater-second-server-"))
    base.chmod(0o755)  # the server may run as a service user
    pgdata = base / "pgdata"
    server = embedded.start(
        embedded.EmbeddedServer(pgdata=pgdata, port=embedded.choose_port(pgdata, 55439))
    )
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            embedded.start(server)  # a test may have left it down
        embedded.stop(server)
        shutil.rmtree(base, ignore_errors=True)


def database_on(server: embedded.EmbeddedServer, purpose: str) -> str:
    name = f"twt_{uuid.uuid4().hex[:8]}_{purpose}"
    execute(server.admin_dsn("postgres"), f'drop database if exists "{name}"')
    execute(server.admin_dsn("postgres"), f'create database "{name}"')
    return server.admin_dsn(name)


def postmaster_pid(server: embedded.EmbeddedServer) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().split()[0])


def crash(server: embedded.EmbeddedServer) -> None:
    """Immediate shutdown (SIGQUIT to the postmaster): every backend dies at once, as
    in a crash, and the next start runs crash recovery."""
    pid = postmaster_pid(server)
    os.kill(pid, signal.SIGQUIT)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie")


def restart_after(server: embedded.EmbeddedServer, seconds: float) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        embedded.start(server)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def copying_out(dsn: str) -> bool:
    return bool(
        execute(
            dsn,
            "select 1 from pg_stat_activity where datname = current_database() "
            "and query ilike 'copy (select%%to stdout%%' and state = 'active'",
        )
    )


def events_checksum(dsn: str, relation: str) -> list[tuple]:
    return execute(
        dsn,
        f"select count(*), count(distinct event_id), sum(hashtext(cast(row(event_id, session_id, "
        f"customer_id, event_type, page_path, properties, occurred_at) as text))::numeric) "
        f"from {relation}",
    )


@pytest.fixture
def restartable_source(second_server: embedded.EmbeddedServer) -> Iterator[str]:
    dsn = database_on(second_server, "src")
    execute(dsn, SCHEMA_SQL.read_text())
    fill_events(dsn, 200_000)
    yield dsn
    embedded.start(second_server)


# Backoff: 0.5 s, then 1, 2, 3, 3, … (plus up to 0.5 s of jitter); the server is down ~2.5 s
# (longer on a busy machine, where a restart can take many seconds: hence 20 tries).
PATIENT = LoadOptions(retries=20, backoff_initial=0.5, backoff_max=3.0)


@pytest.mark.parametrize("when", ["before-the-load", "mid-copy"])
def test_a_source_down_longer_than_the_first_backoff_is_waited_for(
    second_server: embedded.EmbeddedServer,
    restartable_source: str,
    warehouse_dsn: str,
    app_source: SourceConfig,
    when: str,
) -> None:
    if when == "before-the-load":
        crash(second_server)
        restarter = restart_after(second_server, 2.5)
    else:

        def crash_mid_copy() -> None:
            wait_for(lambda: copying_out(restartable_source))
            crash(second_server)
            time.sleep(2.5)
            embedded.start(second_server)

        restarter = threading.Thread(target=crash_mid_copy)
        restarter.start()
    try:
        (result,) = load_all(
            (only(app_source, "events"),),
            source_connectors={"app": connector(restartable_source, what="source")},
            connect_warehouse=connector(warehouse_dsn, what="warehouse"),
            options=PATIENT,
        )
    finally:
        restarter.join()
    assert result.status == "succeeded", result.error
    assert result.attempts > 1
    assert events_checksum(warehouse_dsn, "raw_app.events") == events_checksum(
        restartable_source, "events"
    )


def cli_env(tmp_path: Path, warehouse: str, source: str) -> dict[str, str]:
    """`python -m control load` pointed at this warehouse (a profile of its own) and source."""
    parts = urlsplit(warehouse)
    (tmp_path / "profiles.yml").write_text(
        yaml.safe_dump(
            {
                "tidewater": {
                    "target": "faults",
                    "outputs": {
                        "faults": {
                            "type": "postgres",
                            "host": parts.hostname,
                            "port": parts.port,
                            "user": unquote(parts.username or "postgres"),
                            "password": unquote(parts.password or ""),
                            "dbname": parts.path.lstrip("/"),
                            "schema": "analytics",
                            "threads": 1,
                        }
                    },
                }
            }
        )
    )
    env = dict(os.environ)
    env.update(DBT_PROFILES_DIR=str(tmp_path), TIDEWATER_SOURCE_APP_DSN=source)
    # Not the embedded warehouse: nothing is started or granted, only connected to.
    env["TIDEWATER_EMBEDDED_PORT"] = "1"
    # The server checks passwords: libpq reads the one the DSN's passfile holds.
    for passfile in parse_qs(parts.query).get("passfile", []):
        env["PGPASSFILE"] = passfile
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "control", "load", "--table", "events", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_record_survives_a_crash_right_after_it_is_written(
    second_server: embedded.EmbeddedServer,
) -> None:
    """The embedded server commits asynchronously (for load speed), so a crash forgets
    its last commits; the run record must not be among them, or the run it describes
    vanishes from ops.job_runs (and its end finds no row to update)."""
    warehouse = database_on(second_server, "wh")
    with record_job(connector(warehouse, what="warehouse"), "load") as run:
        crash(second_server)
        embedded.start(second_server)
    assert execute(warehouse, "select run_id, status from ops.job_runs") == [
        (run.run_id, "succeeded")
    ]


def test_a_crash_of_the_server_holding_source_and_warehouse_is_survived_and_recorded(
    second_server: embedded.EmbeddedServer, tmp_path: Path
) -> None:
    """One server holds both (as the embedded default does); a backend killed mid-COPY
    makes the postmaster restart every backend, the run record's connection with them.
    The load is retried, and the run is recorded as it ended, not left 'running'."""
    source = database_on(second_server, "src")
    execute(source, SCHEMA_SQL.read_text())
    fill_events(source, 200_000)
    warehouse = database_on(second_server, "wh")
    # Crash recovery takes seconds, longer on a busy machine: room for ten attempts.
    process = run_cli(cli_env(tmp_path, warehouse, source), "--retries", "10")
    wait_for(lambda: copying_out(source) or process.poll() is not None)
    assert process.poll() is None, (
        f"the load ended before its COPY was seen: {process.communicate()}"
    )
    ((backend,),) = execute(
        source,
        "select pid from pg_stat_activity where datname = current_database() "
        "and query ilike 'copy (select%%to stdout%%'",
    )
    os.kill(backend, signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    print(out, err)
    assert "Traceback" not in err, err
    assert process.returncode == 0, err
    assert execute(warehouse, "select status, error_message from ops.job_runs") == [
        ("succeeded", None)
    ]
    ((status, attempts),) = execute(warehouse, "select status, attempts from ops.table_loads")
    assert (status, attempts >= 2) == ("succeeded", True)
    assert events_checksum(warehouse, "raw_app.events") == events_checksum(source, "events")


def test_a_source_that_stays_down_fails_the_table_with_its_real_error_recorded(
    second_server: embedded.EmbeddedServer, warehouse_dsn: str, tmp_path: Path
) -> None:
    source = database_on(second_server, "src")
    execute(source, SCHEMA_SQL.read_text())
    fill_events(source, 200_000)
    process = run_cli(cli_env(tmp_path, warehouse_dsn, source), "--retries", "3")
    try:
        wait_for(lambda: copying_out(source) or process.poll() is not None)
        crash(second_server)
        _out, err = process.communicate(timeout=300)
    finally:
        embedded.start(second_server)
    assert process.returncode == 1
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "app.events: transient (retries exhausted) error" in err
    ((status, error_class, message),) = execute(
        warehouse_dsn, "select status, error_class, error_message from ops.job_runs"
    )
    assert (status, error_class) == ("failed", "transient")
    assert "app.events" in message and "killed or crashed" not in message
    ((status, error_class, attempts, message),) = execute(
        warehouse_dsn, "select status, error_class, attempts, error_message from ops.table_loads"
    )
    assert (status, error_class, attempts) == ("failed", "transient", 3)
    assert "cannot connect to source" in message or "server" in message


def test_an_interrupted_load_is_recorded_and_ends_with_one_line(
    source_dsn: str, warehouse_dsn: str, tmp_path: Path
) -> None:
    fill_events(source_dsn, 300_000)
    process = run_cli(cli_env(tmp_path, warehouse_dsn, source_dsn))
    wait_for(lambda: copying_out(source_dsn) or process.poll() is not None)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    assert execute(warehouse_dsn, "select status, error_message from ops.job_runs") == [
        ("failed", "interrupted")
    ]
