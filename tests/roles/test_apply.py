"""Plan and apply against a real server: least privilege that survives dbt and loaders."""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from roles import ApplyError, Plan, Spec, Statement, apply_plan, load_spec, plan_changes
from roles.inspect import inspect
from roles.passwords import DesiredPassword, Secret, password_matches, resolve_passwords
from tests.conftest import MANAGED_SCHEMAS
from tidewater.paths import ROLES_SPEC

from .conftest import acting_as, execute, name

Connection = psycopg2.extensions.connection


def create_events(dsn: str, spec: Spec) -> None:
    """What a loader does: the ETL runner creates a raw table."""
    with acting_as(dsn, name(spec, "tidewater_etl_runner"), commit=True) as cur:
        cur.execute("create table raw_app.events (event_id bigserial primary key, kind text)")
        cur.execute("insert into raw_app.events (kind) values ('signup')")


def test_apply_then_a_second_plan_is_empty(admin: Connection, spec: Spec) -> None:
    first = plan_changes(admin, spec)
    assert not first.is_empty
    apply_plan(admin, first, apply=True)
    second = plan_changes(admin, spec)
    assert second.is_empty, second.render_text()


def test_apply_creates_schemas_roles_and_users(admin: Connection, applied: Spec) -> None:
    snapshot = inspect(admin)
    etl, runner = name(applied, "etl"), name(applied, "tidewater_etl_runner")
    for schema in MANAGED_SCHEMAS:
        assert snapshot.schemas[schema] == etl
    assert snapshot.schemas[f"sandbox_{name(applied, 'analyst_alice')}"] == name(
        applied, "analyst_alice"
    )
    assert snapshot.roles[runner].login and not snapshot.roles[etl].login
    assert any(m.role == etl and m.member == runner for m in snapshot.memberships)
    for role in applied.managed_names:
        state = snapshot.roles[role]
        assert not (state.superuser or state.createrole or state.createdb or state.bypassrls)


def test_dry_run_changes_nothing(admin: Connection, spec: Spec) -> None:
    plan = plan_changes(admin, spec)
    apply_plan(admin, plan, apply=False)
    assert "raw_app" not in inspect(admin).schemas
    again = plan_changes(admin, spec)
    assert [s.text for s in again.statements] == [s.text for s in plan.statements]


def test_analyst_cannot_update_raw_events(warehouse: str, applied: Spec) -> None:
    create_events(warehouse, applied)
    with acting_as(warehouse, name(applied, "analyst")) as cur:
        cur.execute("select count(*) from raw_app.events")
        assert cur.fetchone() == (1,)
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("update raw_app.events set kind = 'x'")


def test_dashboard_cannot_drop_mart_table(warehouse: str, applied: Spec) -> None:
    create_events(warehouse, applied)
    with acting_as(warehouse, name(applied, "tidewater_etl_runner"), commit=True) as cur:
        cur.execute("create table marts.fct_orders as select 1 as order_id")
    with acting_as(warehouse, name(applied, "dashboard_bi")) as cur:
        cur.execute("select order_id from marts.fct_orders")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("drop table marts.fct_orders")
    with (
        acting_as(warehouse, name(applied, "dashboard")) as cur,
        pytest.raises(psycopg2.errors.InsufficientPrivilege),
    ):
        cur.execute("select * from raw_app.events")


def test_a_table_created_after_apply_is_readable_by_the_analyst(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    create_events(warehouse, applied)
    with acting_as(warehouse, name(applied, "analyst_alice")) as cur:
        cur.execute("select kind from raw_app.events")
        assert cur.fetchall() == [("signup",)]
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("select nextval('raw_app.events_event_id_seq')")
    assert plan_changes(admin, applied).is_empty


def test_privileges_survive_a_full_refresh(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    runner = name(applied, "tidewater_etl_runner")
    with acting_as(warehouse, runner, commit=True) as cur:
        cur.execute("create table marts.dim_users as select 1 as user_id")
        cur.execute("create view staging.stg_users as select 1 as user_id")
    # What `dbt run --full-refresh` does to a table, and to a view.
    with acting_as(warehouse, runner, commit=True) as cur:
        cur.execute("create table marts.dim_users__dbt_tmp as select 2 as user_id")
        cur.execute("alter table marts.dim_users rename to dim_users__dbt_backup")
        cur.execute("alter table marts.dim_users__dbt_tmp rename to dim_users")
        cur.execute("drop table marts.dim_users__dbt_backup cascade")
        cur.execute("drop view staging.stg_users")
        cur.execute("create view staging.stg_users as select 2 as user_id")
    with acting_as(warehouse, name(applied, "dashboard")) as cur:
        cur.execute("select user_id from marts.dim_users")
        assert cur.fetchall() == [(2,)]
    with acting_as(warehouse, name(applied, "analyst")) as cur:
        cur.execute("select user_id from staging.stg_users")
    with acting_as(warehouse, name(applied, "etl")) as cur:
        cur.execute("insert into marts.dim_users values (3)")
    assert plan_changes(admin, applied).is_empty


def test_a_hand_grant_is_shown_and_revoked(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    create_events(warehouse, applied)
    analyst = name(applied, "analyst")
    execute(warehouse, f"grant update, delete on raw_app.events to {analyst}")
    plan = plan_changes(admin, applied)
    assert [(s.subject, s.effect, s.text) for s in plan.statements] == [
        (analyst, "loses", f"REVOKE DELETE, UPDATE ON TABLE raw_app.events FROM {analyst}")
    ]
    assert f"-- {analyst} loses" in plan.render_text()
    apply_plan(admin, plan, apply=True)
    with acting_as(warehouse, analyst) as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege):
        cur.execute("delete from raw_app.events")
    assert plan_changes(admin, applied).is_empty


def test_functions_in_managed_schemas_are_not_executable_by_public(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    with acting_as(warehouse, name(applied, "tidewater_etl_runner"), commit=True) as cur:
        cur.execute("create function marts.answer() returns int language sql as 'select 42'")
    execute(warehouse, "create function raw_app.by_hand() returns int language sql as 'select 1'")
    rows = execute(
        warehouse,
        "select proname, proacl::text from pg_proc where pronamespace in "
        "('marts'::regnamespace, 'raw_app'::regnamespace)",
    )
    entries = dict(rows)["answer"].strip("{}").split(",")
    assert entries and not [entry for entry in entries if entry.startswith("=")]  # PUBLIC
    plan = plan_changes(admin, applied)
    texts = [s.text for s in plan.statements]
    assert "REVOKE EXECUTE ON ROUTINE raw_app.by_hand() FROM PUBLIC" in texts
    assert f"ALTER ROUTINE raw_app.by_hand() OWNER TO {name(applied, 'etl')}" in texts
    apply_plan(admin, plan, apply=True)
    # Reading marts gives no EXECUTE: only `execute:` in the spec does.
    with (
        acting_as(warehouse, name(applied, "dashboard")) as cur,
        pytest.raises(psycopg2.errors.InsufficientPrivilege),
    ):
        cur.execute("select marts.answer()")
    assert plan_changes(admin, applied).is_empty


def test_public_loses_create_on_public_and_connect_on_the_database(
    warehouse: str, admin: Connection, spec: Spec
) -> None:
    execute(warehouse, "grant create on schema public to public")
    plan = plan_changes(admin, spec)
    texts = [s.text for s in plan.statements if s.subject == "PUBLIC"]
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in texts
    apply_plan(admin, plan, apply=True)
    rows = execute(
        warehouse,
        "select has_database_privilege('public', current_database(), 'CONNECT'), "
        "has_database_privilege('public', current_database(), 'TEMP'), "
        "has_schema_privilege('public', 'public', 'CREATE')",
    )
    assert rows == [(False, False, False)]


def test_objects_outside_managed_schemas_are_reported_not_touched(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    analyst = name(applied, "analyst")
    execute(warehouse, "create schema dev_bob; create table dev_bob.scratch (id int)")
    execute(warehouse, f"grant usage on schema dev_bob to {analyst}")
    execute(warehouse, f"grant select, update on dev_bob.scratch to {analyst}")
    plan = plan_changes(admin, applied)
    assert plan.is_empty
    assert f"schema dev_bob is not managed: privileges of {analyst} there were left alone" in (
        plan.notes
    )
    assert "note: schema dev_bob" in plan.render_text()


def test_a_new_raw_schema_is_handed_to_etl_and_opened_to_analysts(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    with acting_as(warehouse, name(applied, "tidewater_etl_runner"), commit=True) as cur:
        cur.execute("create schema raw_crm")
        cur.execute("create table raw_crm.accounts (account_id int)")
    apply_plan(admin, plan_changes(admin, applied), apply=True)
    assert inspect(admin).schemas["raw_crm"] == name(applied, "etl")
    with acting_as(warehouse, name(applied, "analyst")) as cur:
        cur.execute("select * from raw_crm.accounts")
    assert plan_changes(admin, applied).is_empty


def test_escalations_are_taken_away(warehouse: str, role_prefix: str) -> None:
    # Cluster-wide changes: a prefix of its own so other tests keep a clean spec.
    spec = load_spec(ROLES_SPEC, prefix=role_prefix + "esc_")
    conn = psycopg2.connect(warehouse)
    try:
        apply_plan(conn, plan_changes(conn, spec), apply=True)
        etl, analyst, dashboard = (name(spec, r) for r in ("etl", "analyst", "dashboard"))
        execute(warehouse, f"grant {etl} to {analyst}")
        execute(warehouse, f"grant pg_write_all_data to {dashboard}")
        execute(warehouse, f"alter role {name(spec, 'dashboard_bi')} superuser createrole")
        texts = [s.text for s in plan_changes(conn, spec).statements]
        assert f"REVOKE {etl} FROM {analyst}" in texts
        assert f"REVOKE pg_write_all_data FROM {dashboard}" in texts
        assert f"ALTER ROLE {name(spec, 'dashboard_bi')} NOSUPERUSER NOCREATEROLE" in texts
        apply_plan(conn, plan_changes(conn, spec), apply=True)
        rows = execute(
            warehouse, "select pg_has_role(%s, %s, 'MEMBER'), pg_has_role(%s, %s, 'MEMBER')",
            (analyst, etl, dashboard, "pg_write_all_data"),
        )  # fmt: skip
        assert rows == [(False, False)]
        assert plan_changes(conn, spec).is_empty
    finally:
        conn.close()


def test_passwords_come_from_the_environment_and_never_show(
    warehouse: str, role_prefix: str
) -> None:
    spec = load_spec(ROLES_SPEC, prefix=role_prefix + "pw_")
    runner = name(spec, "tidewater_etl_runner")
    env = {"TIDEWATER_ETL_PASSWORD": "correct horse"}
    conn = psycopg2.connect(warehouse)
    try:
        plan = plan_changes(conn, spec, passwords=resolve_passwords(spec, env=env))
        assert f"CREATE ROLE {runner} LOGIN PASSWORD '***'" in plan.render_text()
        assert "correct horse" not in plan.render_text() + repr(plan)
        apply_plan(conn, plan, apply=True)
        stored = execute(
            warehouse, "select rolpassword from pg_authid where rolname = %s", (runner,)
        )
        assert stored[0][0].startswith("SCRAM-SHA-256$")
        assert password_matches(stored[0][0], "correct horse", runner)
        assert plan_changes(conn, spec, passwords=resolve_passwords(spec, env=env)).is_empty
        changed = resolve_passwords(spec, env={"TIDEWATER_ETL_PASSWORD": "battery staple"})
        texts = [s.text for s in plan_changes(conn, spec, passwords=changed).statements]
        assert texts == [f"ALTER ROLE {runner} PASSWORD '***'"]
        fallback = resolve_passwords(spec, env={}, fallback={runner: "tidewater"})
        assert fallback[runner] == DesiredPassword(runner, Secret("tidewater"), "the dbt profile")
    finally:
        conn.close()


def test_a_failing_statement_applies_nothing(warehouse: str, admin: Connection) -> None:
    plan = Plan(
        (
            Statement("x", "gains", sql.SQL("CREATE SCHEMA {}").format(sql.Identifier("kept"))),
            Statement("x", "gains", sql.SQL("GRANT USAGE ON SCHEMA kept TO no_such_role_zz")),
        ),
        database="warehouse",
    )
    with pytest.raises(ApplyError, match='role "no_such_role_zz" does not exist') as caught:
        apply_plan(admin, plan, apply=True)
    assert caught.value.statement == "GRANT USAGE ON SCHEMA kept TO no_such_role_zz"
    assert "nothing was applied" in str(caught.value)
    assert "kept" not in inspect(admin).schemas


def test_apply_takes_its_own_transaction(warehouse: str, spec: Spec) -> None:
    conn = psycopg2.connect(warehouse)
    try:
        conn.autocommit = True
        apply_plan(conn, plan_changes(conn, spec), apply=True)
        assert conn.autocommit
        assert plan_changes(conn, spec).is_empty
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("select 1")
        with pytest.raises(ValueError, match="open transaction"):
            apply_plan(conn, Plan(()), apply=True)
    finally:
        conn.close()
