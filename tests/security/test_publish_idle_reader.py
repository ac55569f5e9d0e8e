"""A dashboard login holding ``begin; select … from marts.x;`` idle must not make
publish wait forever, nor make every other dashboard query queue behind publish
for long; the dashboard role's idle_in_transaction_session_timeout (from the roles
spec) ends such a session, and publish then goes through."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
import yaml

from roles import parse_spec
from tidewater.paths import ROLES_SPEC
from transform.exceptions import PublishFailed
from transform.publish import BuildOutcome, publish

from .conftest import Warehouse, run_as

OUTCOME = BuildOutcome(live="marts", build="marts_build", built=["fct_idle"], expected=["fct_idle"])


def build_marts(warehouse: Warehouse) -> None:
    etl = warehouse.login("tidewater_etl_runner")
    try:
        run_as(
            etl,
            "tidewater_etl_runner",
            "create table marts.fct_idle as select 1 as order_id",
            "create table marts_build.fct_idle as select 2 as order_id",
        )
    finally:
        etl.close()


def hold_idle_transaction(warehouse: Warehouse) -> psycopg2.extensions.connection:
    dashboard = warehouse.login("dashboard_bi", application_name="bi-dashboard")
    with dashboard.cursor() as cur:
        print("setup: dashboard_bi: begin; select * from marts.fct_idle;  -- then stays idle")
        cur.execute("select * from marts.fct_idle")
    return dashboard


class DashboardQueries(threading.Thread):
    """Another dashboard session querying the mart every 100 ms; records the slowest."""

    def __init__(self, warehouse: Warehouse) -> None:
        super().__init__(daemon=True)
        self.conn = warehouse.login("dashboard_bi", application_name="bi-other")
        self.conn.autocommit = True
        self.stop = threading.Event()
        self.slowest = 0.0
        self.count = 0

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                started = time.monotonic()
                cur.execute("select count(*) from marts.fct_idle")
                cur.fetchall()
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.count += 1
                time.sleep(0.1)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        self.conn.close()


def test_publish_gives_up_in_time_and_names_the_idle_dashboard(warehouse: Warehouse) -> None:
    build_marts(warehouse)
    idle = hold_idle_transaction(warehouse)
    others = DashboardQueries(warehouse)
    others.start()
    started = time.monotonic()
    try:
        with pytest.raises(PublishFailed) as caught:
            publish(
                lambda: warehouse.login("tidewater_etl_runner"),
                OUTCOME,
                lock_timeout_s=4,
                attempt_lock_timeout_s=0.5,
                backoff_s=0.2,
            )
    finally:
        elapsed = time.monotonic() - started
        others.finish()
        idle.close()
    message = str(caught.value)
    print(f"publish gave up after {elapsed:.1f}s: {message}")
    print(
        f"meanwhile {others.count} other dashboard queries ran, the slowest in {others.slowest:.2f}s"
    )
    assert elapsed < 10
    assert "\n" not in message
    assert f"user {warehouse.name('dashboard_bi')}" in message
    assert "application 'bi-dashboard'" in message
    assert "since" in message and "idle_in_transaction_session_timeout" in message
    assert others.count > 5
    assert others.slowest < 2.0, "dashboard queries queued behind publish for too long"
    # Nothing was published: the live mart still holds the old build.
    assert warehouse.admin_query("select order_id from marts.fct_idle") == [(1,)]


def test_the_dashboard_idle_timeout_from_the_spec_lets_publish_through(
    warehouse: Warehouse,
) -> None:
    data = yaml.safe_load(ROLES_SPEC.read_text())
    data["roles"]["dashboard"]["settings"]["idle_in_transaction_session_timeout"] = "2s"
    warehouse.apply(parse_spec(data, prefix=warehouse.spec.prefix))
    build_marts(warehouse)
    idle = hold_idle_transaction(warehouse)
    started = time.monotonic()
    try:
        published = publish(
            lambda: warehouse.login("tidewater_etl_runner"),
            OUTCOME,
            lock_timeout_s=30,
            attempt_lock_timeout_s=0.5,
            backoff_s=0.2,
        )
        elapsed = time.monotonic() - started
        print(f"published {published} after {elapsed:.1f}s")
        assert published == ["fct_idle"]
        assert elapsed < 15
        print("probe: dashboard_bi uses its idle transaction again")
        with pytest.raises(psycopg2.OperationalError), idle.cursor() as cur:
            cur.execute("select 1")
    finally:
        idle.close()
    assert warehouse.admin_query("select order_id from marts.fct_idle") == [(2,)]
