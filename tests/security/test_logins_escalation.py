"""Every login, over TCP with its own password, tries what its job must never allow:
writes and DDL outside its stage, reads outside its scope, and escalation (other roles,
server files and programs, large objects, granting onward, role and server settings).
Each probe prints what it tried; any success fails the test."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions
import pytest

from tidewater.lock import ensure_lock_tables

from .conftest import Warehouse, attempt, run_as

# What every login must be refused, whatever its job: the ways out of a role.
ESCALATION = (
    "copy (select 1) to program 'id'",
    "copy raw_app.events from program 'echo 1'",
    "select pg_read_file('postgresql.conf')",
    "select pg_ls_dir('.')",
    "select lo_import('/etc/passwd')",
    "select lo_export(lo_from_bytea(0, 'x'), '/tmp/tidewater-attack')",
    "create role twt_attacker login superuser",
    "set log_statement = 'none'",  # hide what one does from the server log
    "set role postgres",
    "set session authorization postgres",
    "select set_config('session_authorization', 'postgres', false)",
    "create extension if not exists file_fdw",
    "load 'plpgsql'",
)

# Per login: what its job does not include.
REFUSED = {
    "analyst_alice": (
        "insert into raw_app.events (event_id, payload) values (99, 'planted')",
        "update raw_app.events set payload = 'changed'",
        "delete from raw_app.events",
        "truncate raw_app.events",
        "drop table raw_app.events",
        "alter table raw_app.events add column planted text",
        "create table raw_app.planted (id int)",
        "update marts.fct_sales set amount = 0",
        "drop table marts.fct_sales",
        "create table marts.planted (id int)",
        "create trigger planted before insert on raw_app.events "
        "for each row execute function pg_catalog.suppress_redundant_updates_trigger()",
        "grant etl to analyst_alice",
        "set role etl",
        "lock table ops.pipeline_lock in exclusive mode",
        "lock table ops.raw_lock in share mode",
        "create schema planted",
    ),
    "dashboard_bi": (
        "select * from raw_app.events",
        "select * from marts_build.fct_sales",
        "select * from ops.job_runs_probe",
        "insert into marts.fct_sales values (2, 2)",
        "update marts.fct_sales set amount = 0",
        "delete from marts.fct_sales",
        "truncate marts.fct_sales",
        "drop table marts.fct_sales",
        "alter table marts.fct_sales rename to planted",
        "create table marts.planted (id int)",
        "create temporary table planted (id int)",
        "set role analyst",
        "lock table ops.pipeline_lock in exclusive mode",
        "create schema planted",
    ),
    "tidewater_etl_runner": (
        "grant etl to dashboard_bi",
        "grant analyst to tidewater_etl_runner",
        "set role analyst_alice",
        "alter role tidewater_etl_runner superuser",
        "alter role analyst_alice password 'taken'",
        "create role twt_planted",
    ),
}


# Granting onward: PostgreSQL answers a GRANT without the grant option with a warning
# ("no privileges were granted"), not an error, so these probes check the effect.
GRANTS_ONWARD = {
    "analyst_alice": (
        "grant select on raw_app.events to dashboard_bi",
        "select has_table_privilege('dashboard_bi', 'raw_app.events', 'SELECT')",
    ),
    "dashboard_bi": (
        "grant select on marts.fct_sales to public",
        "select has_table_privilege('public', 'marts.fct_sales', 'SELECT')",
    ),
}


def granted_onward(conn: psycopg2.extensions.connection, who: str, grant: str, check: str) -> bool:
    """Try a GRANT and report whether the privilege took effect (rolled back either way)."""
    try:
        with conn.cursor() as cur:
            cur.execute(grant)
            cur.execute(check)
            took = bool(cur.fetchone()[0])
    except psycopg2.Error as exc:
        took = False
        print(f"probe: {who}: {grant!r} -> refused ({' '.join(str(exc).split())})")
    else:
        print(f"probe: {who}: {grant!r} -> " + ("GRANTED" if took else "no privileges granted"))
    conn.rollback()
    return took


@pytest.fixture
def populated(warehouse: Warehouse) -> Warehouse:
    """A raw table, a published mart and its shadow copy, created as the ETL login (as
    the loaders and dbt create them)."""
    etl = warehouse.login("tidewater_etl_runner")
    try:
        run_as(
            etl,
            "tidewater_etl_runner",
            "create table raw_app.events (event_id int primary key, payload text)",
            "insert into raw_app.events values (1, 'original')",
            "create table marts.fct_sales (sale_id int, amount int)",
            "insert into marts.fct_sales values (1, 10)",
            "create table marts_build.fct_sales (sale_id int, amount int)",
            "create table ops.job_runs_probe (note text)",
        )
        with etl.cursor() as cur:
            ensure_lock_tables(cur)  # the pipeline's lock tables, as a first run creates them
        etl.commit()
    finally:
        etl.close()
    return warehouse


def with_prefix(warehouse: Warehouse, statement: str) -> str:
    """The statement with the spec's role names as this test run prefixes them."""
    for bare in ("tidewater_etl_runner", "analyst_alice", "dashboard_bi", "etl", "analyst"):
        statement = statement.replace(f" {bare}", f" {warehouse.name(bare)}")
    # The server's bootstrap superuser, whatever its name (postgres, or the system user).
    ((superuser,),) = warehouse.admin_query("select rolname from pg_roles where oid = 10")
    return statement.replace(" postgres", f' "{superuser}"').replace("'postgres'", f"'{superuser}'")


@pytest.mark.parametrize("user", sorted(REFUSED))
def test_a_login_is_refused_everything_outside_its_job(populated: Warehouse, user: str) -> None:
    conn = populated.login(user)
    try:
        allowed = [
            statement
            for statement in (*ESCALATION, *REFUSED[user])
            if attempt(conn, user, with_prefix(populated, statement))[0]
        ]
        if user in GRANTS_ONWARD:
            grant, check = (with_prefix(populated, part) for part in GRANTS_ONWARD[user])
            if granted_onward(conn, user, grant, check):
                allowed.append(grant)
    finally:
        conn.close()
    assert allowed == [], f"{user} was allowed: {allowed}"
    # Nothing a refused probe tried reached the data.
    assert populated.admin_query("select event_id, payload from raw_app.events") == [
        (1, "original")
    ]
    assert populated.admin_query("select sale_id, amount from marts.fct_sales") == [(1, 10)]
    assert populated.admin_query(
        "select count(*) from pg_roles where rolname in ('twt_attacker', 'twt_planted')"
    ) == [(0,)]


def test_each_login_still_does_its_job(populated: Warehouse) -> None:
    """The refusals above are not a broken login: each one does what its job needs."""
    jobs = {
        "analyst_alice": (
            "select count(*) from raw_app.events",
            "select count(*) from marts_build.fct_sales",
            "select count(*) from ops.job_runs_probe",
        ),
        "dashboard_bi": ("select count(*) from marts.fct_sales",),
        "tidewater_etl_runner": (
            "insert into raw_app.events values (2, 'loaded')",
            "create table marts_build.fct_more (id int)",
            "lock table ops.pipeline_lock in exclusive mode",
        ),
    }
    for user, statements in jobs.items():
        conn = populated.login(user)
        try:
            refused = [s for s in statements if not attempt(conn, user, s, fetch=True)[0]]
        finally:
            conn.close()
        assert refused == [], f"{user} could not do its job: {refused}"
