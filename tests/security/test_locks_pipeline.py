"""Nobody but the ETL side can stop or hang the pipeline by holding a lock, every
wait for a lock is bounded, and the message names who holds it. Real logins over
TCP, with their passwords; every probe prints what it tried."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extensions

from tests.conftest import ROOT, Project, as_login

# The advisory keys the pipeline used before it used lock tables.
OLD_ADVISORY_KEYS = (
    "select pg_try_advisory_lock(hashtext('tidewater.pipeline'))",
    "select pg_try_advisory_lock(hashtext('tidewater.raw'))",
    "select pg_try_advisory_lock(hashtext('tidewater.ddl'))",
    "select pg_try_advisory_lock(hashtext('tidewater.load'), hashtext('raw_app.orders'))",
)
# Every lock table and every mode that could conflict with what the pipeline takes.
LOCK_TABLES = ("ops.pipeline_lock", "ops.raw_lock", "ops.ddl_lock", "ops.table_locks")
MODES = (
    "row share",
    "row exclusive",
    "share update exclusive",
    "share",
    "share row exclusive",
    "exclusive",
    "access exclusive",
)


def _login(project: Project, role_prefix: str, user: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(
        as_login(project.warehouse, f"{role_prefix}{user}"), application_name=f"probe {user}"
    )
    conn.autocommit = True
    return conn


def _try(conn: psycopg2.extensions.connection, who: str, statement: str) -> bool:
    """Run one probe in a transaction left open (so a lock it took stays held)."""
    print(f"probe as {who}: {statement}")
    with conn.cursor() as cur:
        cur.execute("savepoint probe")
        try:
            cur.execute(statement)
        except psycopg2.Error as exc:
            cur.execute("rollback to savepoint probe")
            print(f"  refused: {str(exc).splitlines()[0]}")
            return False
    print("  succeeded")
    return True


def test_readers_cannot_take_the_pipeline_locks_and_loads_and_transforms_still_run(
    project: Project, role_prefix: str
) -> None:
    project.set_up()
    project.invoke("load")  # roles, ops and its lock tables exist
    dashboard = _login(project, role_prefix, "dashboard_bi")
    analyst = _login(project, role_prefix, "analyst_alice")
    try:
        for conn in (dashboard, analyst):
            conn.autocommit = False
        for who, conn in (("dashboard_bi", dashboard), ("analyst_alice", analyst)):
            # Advisory locks on the old well-known keys: allowed (the first taker holds
            # them; the other is told no at once), and now harmless.
            for statement in OLD_ADVISORY_KEYS:
                _try(conn, who, statement)
            for table in LOCK_TABLES:
                for mode in MODES:
                    taken = _try(conn, who, f"lock table {table} in {mode} mode nowait")
                    assert not taken, f"{who} could lock {table} in {mode} mode"
                assert not _try(conn, who, f"select * from {table} for share nowait")
            assert not _try(
                conn,
                who,
                "insert into ops.table_locks values ('raw_app.orders', now(), current_user)",
            )
        # Readers of ops may read the lock tables (ACCESS SHARE), held open here.
        assert _try(analyst, "analyst_alice", "select count(*) from ops.pipeline_lock")
        assert _try(analyst, "analyst_alice", "select count(*) from ops.raw_lock")
        assert _try(analyst, "analyst_alice", "select count(*) from ops.table_locks")

        # While the readers hold all of that, the pipeline runs.
        result = project.invoke("load", "transform", "--wait", "0", check=False)
        print(result.stdout[-1500:], result.stderr[-1500:])
        assert result.returncode == 0, result.stderr
        assert "another pipeline run is in progress" not in result.stderr
    finally:
        dashboard.close()
        analyst.close()


def test_a_load_waits_a_bounded_time_for_the_raw_lock_and_names_the_holder(
    project: Project,
) -> None:
    project.set_up()
    project.invoke("load")
    # An ETL session holds raw as a transform does, and does not let go.
    holder = psycopg2.connect(project.warehouse, application_name="long transform")
    try:
        with holder.cursor() as cur:
            cur.execute("lock table ops.raw_lock in exclusive mode")
        env = dict(project.env, TIDEWATER_LOCK_TIMEOUT="1")
        result = subprocess.run(
            [sys.executable, "-m", "control", "load", "--table", "orders", "--retries", "1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.close()
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    user = urlsplit(project.warehouse).username
    assert "gave up waiting for the raw lock (ops.raw_lock) after 1s" in result.stderr
    assert f"held by {user} (long transform, pid " in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_load_of_a_table_waits_a_bounded_time_naming_the_first(
    project: Project,
) -> None:
    project.set_up()
    project.invoke("load")
    from tidewater.lock import hold_table_load

    first = psycopg2.connect(project.warehouse, application_name="first load")
    try:
        with first.cursor() as cur:
            hold_table_load(cur, "raw_app.orders")
        env = dict(project.env, TIDEWATER_LOCK_TIMEOUT="1")
        result = subprocess.run(
            [sys.executable, "-m", "control", "load", "--table", "orders", "--retries", "1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        first.close()
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    assert "gave up waiting for the load lock of raw_app.orders" in result.stderr
    assert "(first load, pid " in result.stderr
