"""Rendering: PostgreSQL statements from changes, the Redshift script from the spec."""

from __future__ import annotations

import pytest

from roles.diff import Changes, OwnerChange, RoleChange, SettingChange
from roles.inspect import PUBLIC, DefaultGrant, Grant, Membership
from roles.passwords import DesiredPassword, Secret, md5_verifier, password_matches
from roles.plan import Plan, as_text, quote_ident, render_postgres, render_redshift
from roles.spec import load_spec

from .test_diff import SPEC


def render(**fields: object) -> list[str]:
    changes = Changes(database="warehouse", server_version=fields.pop("version", 150000), **fields)  # type: ignore[arg-type]
    return [statement.text for statement in render_postgres(changes).statements]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"create_roles": (RoleChange("etl", True, ("NOLOGIN",)),)},
            ["CREATE ROLE etl NOLOGIN"],
        ),
        (
            {"alter_roles": (RoleChange("dashboard", False, ("NOSUPERUSER", "NOBYPASSRLS")),)},
            ["ALTER ROLE dashboard NOSUPERUSER NOBYPASSRLS"],
        ),
        (
            {"grant_memberships": (Membership("etl", "runner"),)},
            ["GRANT etl TO runner"],
        ),
        (
            {"grant_memberships": (Membership("etl", "runner"),), "version": 160000},
            ["GRANT etl TO runner WITH INHERIT TRUE, SET TRUE"],
        ),
        (
            {"revoke_memberships": (Membership("pg_write_all_data", "dashboard"),)},
            ["REVOKE pg_write_all_data FROM dashboard"],
        ),
        (
            {"create_schemas": (("raw_app", "etl"),)},
            ["CREATE SCHEMA raw_app AUTHORIZATION etl"],
        ),
        (
            {
                "owners": (
                    OwnerChange("schema", "raw_crm", "", "", "", "runner", "etl"),
                    OwnerChange("table", "marts", "m", "", "m", "postgres", "etl"),
                    OwnerChange("table", "marts", "v", "", "v", "postgres", "etl"),
                    OwnerChange("sequence", "marts", "s", "", "S", "postgres", "etl"),
                    OwnerChange("function", "marts", "f", "a integer", "f", "postgres", "etl"),
                )
            },
            [
                "ALTER SCHEMA raw_crm OWNER TO etl",
                "ALTER MATERIALIZED VIEW marts.m OWNER TO etl",
                "ALTER VIEW marts.v OWNER TO etl",
                "ALTER SEQUENCE marts.s OWNER TO etl",
                "ALTER ROUTINE marts.f(a integer) OWNER TO etl",
            ],
        ),
        (
            {
                "grants": (
                    Grant("schema", "marts", "", "analyst", "USAGE"),
                    Grant("schema", "raw_app", "", "analyst", "USAGE"),
                    Grant("table", "marts", "orders", "analyst", "SELECT"),
                    Grant("table", "marts", "users", "analyst", "SELECT"),
                    Grant("sequence", "raw_app", "s", "etl", "USAGE"),
                    Grant("sequence", "raw_app", "s", "etl", "UPDATE"),
                    Grant("database", "", "warehouse", "etl", "CREATE"),
                    Grant("database", "", "warehouse", "etl", "CONNECT"),
                )
            },
            [
                "GRANT CONNECT, CREATE ON DATABASE warehouse TO etl",
                "GRANT USAGE ON SCHEMA marts, raw_app TO analyst",
                "GRANT SELECT ON TABLE marts.orders, marts.users TO analyst",
                "GRANT UPDATE, USAGE ON SEQUENCE raw_app.s TO etl",
            ],
        ),
        (
            {
                "revokes": (
                    Grant("table", "raw_app", "events", "analyst", "UPDATE"),
                    Grant("table", "raw_app", "events", "analyst", "UPDATE", grant_option=True),
                    Grant("table", "raw_app", "users", "analyst", "SELECT", grant_option=True),
                    Grant("column", "raw_app", "events", "dashboard", "SELECT", "payload"),
                    Grant("column", "raw_app", "events", "dashboard", "UPDATE", "payload"),
                    Grant("function", "marts", "f", PUBLIC, "EXECUTE", "a integer"),
                    Grant("schema", "public", "", PUBLIC, "CREATE"),
                )
            },
            [
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                "REVOKE UPDATE ON TABLE raw_app.events FROM analyst",
                "REVOKE GRANT OPTION FOR SELECT ON TABLE raw_app.users FROM analyst",
                "REVOKE EXECUTE ON ROUTINE marts.f(a integer) FROM PUBLIC",
                "REVOKE SELECT (payload), UPDATE (payload) ON TABLE raw_app.events FROM dashboard",
            ],
        ),
        (
            {
                "default_grants": (
                    DefaultGrant("etl", "marts", "tables", "analyst", "SELECT"),
                    DefaultGrant("etl", "raw_app", "tables", "analyst", "SELECT"),
                    DefaultGrant("runner", "marts", "tables", "analyst", "SELECT"),
                    DefaultGrant("runner", "raw_app", "tables", "analyst", "SELECT"),
                    DefaultGrant("runner", "marts", "sequences", "etl", "USAGE"),
                ),
                "default_revokes": (DefaultGrant("runner", "", "functions", PUBLIC, "EXECUTE"),),
            },
            [
                "ALTER DEFAULT PRIVILEGES FOR ROLE runner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
                "ALTER DEFAULT PRIVILEGES FOR ROLE etl, runner IN SCHEMA marts, raw_app "
                "GRANT SELECT ON TABLES TO analyst",
                "ALTER DEFAULT PRIVILEGES FOR ROLE runner IN SCHEMA marts "
                "GRANT USAGE ON SEQUENCES TO etl",
            ],
        ),
    ],
)
def test_changes_render_as_postgres_sql(fields: dict, expected: list[str]) -> None:
    assert render(**fields) == expected


def test_passwords_are_bound_as_verifiers_and_printed_as_stars() -> None:
    from roles.diff import PasswordChange

    changes = Changes(
        database="warehouse",
        server_version=150000,
        create_roles=(RoleChange("runner", True, ("LOGIN",)),),
        passwords=(
            PasswordChange("runner", Secret("hunter2"), "RUNNER_PASSWORD"),
            PasswordChange("alice", Secret("s3cret"), "ALICE_PASSWORD"),
        ),
    )
    plan = render_postgres(changes)
    assert [s.text for s in plan.statements] == [
        "CREATE ROLE runner LOGIN PASSWORD '***'",
        "ALTER ROLE alice PASSWORD '***'",
    ]
    verifier = plan.statements[0].params[0]
    assert isinstance(verifier, Secret)
    assert verifier.reveal().startswith("SCRAM-SHA-256$4096:")
    assert password_matches(verifier.reveal(), "hunter2", "runner")
    shown = plan.render_text() + repr(plan) + repr(changes)
    assert "hunter2" not in shown and "s3cret" not in shown and "SCRAM" not in shown


def test_the_plan_is_grouped_by_who_gains_or_loses_what() -> None:
    plan = render_postgres(
        Changes(
            database="warehouse",
            server_version=150000,
            create_roles=(RoleChange("analyst", True, ("NOLOGIN",)),),
            grants=(Grant("schema", "marts", "", "analyst", "USAGE"),),
            revokes=(
                Grant("table", "raw_app", "events", "analyst", "UPDATE"),
                Grant("database", "", "warehouse", PUBLIC, "CONNECT"),
            ),
            notes=("schema dev is not managed",),
        )
    )
    assert plan.render_text() == (
        "-- Plan for database warehouse (postgres): 4 statements, run in one transaction.\n"
        "\n-- analyst is created\nCREATE ROLE analyst NOLOGIN;\n"
        "\n-- analyst gains\nGRANT USAGE ON SCHEMA marts TO analyst;\n"
        "\n-- analyst loses\nREVOKE UPDATE ON TABLE raw_app.events FROM analyst;\n"
        "\n-- PUBLIC loses\nREVOKE CONNECT ON DATABASE warehouse FROM PUBLIC;\n"
        "\n-- note: schema dev is not managed\n"
    )


def test_an_empty_plan_says_so() -> None:
    plan = Plan((), database="warehouse")
    assert plan.is_empty
    assert plan.render_text().startswith("-- Nothing to do: database warehouse matches the spec.")


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("events", "events"),
        ("user", '"user"'),
        ("Events", '"Events"'),
        ('we"ird', '"we""ird"'),
        ("a b; drop", '"a b; drop"'),
    ],
)
def test_names_print_quoted_only_when_they_must_be(name: str, shown: str) -> None:
    assert quote_ident(name) == shown


def test_identifiers_from_the_catalog_cannot_inject_sql() -> None:
    statement = render(
        revokes=(Grant("table", "raw_app", 'x"; drop table y; --', "bob", "SELECT"),)
    )
    assert statement == ['REVOKE SELECT ON TABLE raw_app."x""; drop table y; --" FROM bob']


def test_unknown_privileges_are_refused_not_rendered() -> None:
    with pytest.raises(ValueError, match="unknown privilege"):
        render(grants=(Grant("table", "s", "t", "bob", "SELECT; DROP"),))


REDSHIFT = render_redshift(load_spec(), database="warehouse")
REDSHIFT_TEXT = [statement.text for statement in REDSHIFT.statements]


@pytest.mark.parametrize(
    "expected",
    [
        "CREATE GROUP etl",
        "CREATE GROUP analyst",
        "CREATE USER tidewater_etl_runner PASSWORD DISABLE NOCREATEDB NOCREATEUSER IN GROUP etl",
        "CREATE SCHEMA IF NOT EXISTS raw_app",
        "CREATE SCHEMA IF NOT EXISTS sandbox_analyst_alice AUTHORIZATION analyst_alice",
        "REVOKE ALL ON SCHEMA intermediate, marts, marts_build, ops, raw_app, raw_web, sandbox_analyst_alice, "
        "snapshots, staging FROM PUBLIC",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "REVOKE CREATE, TEMPORARY ON DATABASE warehouse FROM PUBLIC",
        "GRANT USAGE ON SCHEMA marts TO GROUP dashboard",
        "GRANT SELECT ON ALL TABLES IN SCHEMA marts TO GROUP dashboard",
        "GRANT CREATE, USAGE ON SCHEMA intermediate, marts, marts_build, ops, raw_app, raw_web, snapshots, staging "
        "TO GROUP etl",
        "GRANT DELETE, INSERT, SELECT, UPDATE ON ALL TABLES IN SCHEMA intermediate, marts, marts_build, ops, "
        "raw_app, raw_web, snapshots, staging TO GROUP etl",
        "ALTER DEFAULT PRIVILEGES FOR USER tidewater_etl_runner IN SCHEMA intermediate, marts, marts_build, "
        "ops, raw_app, raw_web, snapshots, staging GRANT SELECT ON TABLES TO GROUP analyst",
        "ALTER DEFAULT PRIVILEGES FOR USER tidewater_etl_runner IN SCHEMA marts "
        "GRANT SELECT ON TABLES TO GROUP dashboard",
        "ALTER DEFAULT PRIVILEGES FOR USER tidewater_etl_runner IN SCHEMA intermediate, marts, marts_build, "
        "ops, raw_app, raw_web, snapshots, staging GRANT DELETE, INSERT, SELECT, UPDATE ON TABLES "
        "TO GROUP etl",
        "ALTER DEFAULT PRIVILEGES FOR USER analyst_alice, tidewater_etl_runner "
        "REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        "GRANT CREATE, TEMPORARY ON DATABASE warehouse TO GROUP etl",
        "ALTER USER dashboard_bi CONNECTION LIMIT 20",
        "ALTER USER dashboard_bi SET statement_timeout = '2min'",
        "GRANT TEMPORARY ON DATABASE warehouse TO GROUP analyst",
    ],
)
def test_the_spec_renders_redshift_sql(expected: str) -> None:
    assert expected in REDSHIFT_TEXT


@pytest.mark.parametrize("absent", ["SEQUENCE", "CONNECT ON", "ROLE ", "TRUNCATE", "INHERIT"])
def test_redshift_sql_uses_only_what_redshift_has(absent: str) -> None:
    assert not [text for text in REDSHIFT_TEXT if absent in text]


def test_redshift_groups_are_created_before_users_and_users_before_grants() -> None:
    first_user = next(i for i, t in enumerate(REDSHIFT_TEXT) if t.startswith("CREATE USER"))
    last_group = max(i for i, t in enumerate(REDSHIFT_TEXT) if t.startswith("CREATE GROUP"))
    first_grant = next(i for i, t in enumerate(REDSHIFT_TEXT) if t.startswith("GRANT"))
    assert last_group < first_user < first_grant
    assert REDSHIFT.dialect == "redshift"
    assert any("patterns (raw_*)" in note for note in REDSHIFT.notes)


def test_redshift_passwords_are_md5_verifiers_printed_as_stars() -> None:
    passwords = {
        "tidewater_etl_runner": DesiredPassword(
            "tidewater_etl_runner", Secret("hunter2"), "TIDEWATER_ETL_PASSWORD"
        )
    }
    plan = render_redshift(load_spec(), database="warehouse", passwords=passwords)
    runner = next(s for s in plan.statements if s.subject == "tidewater_etl_runner")
    assert runner.text == (
        "CREATE USER tidewater_etl_runner PASSWORD '***' NOCREATEDB NOCREATEUSER IN GROUP etl"
    )
    assert runner.params[0].reveal() == md5_verifier("hunter2", "tidewater_etl_runner")
    assert "hunter2" not in plan.render_text()


def test_as_text_renders_literals_and_redacts_secrets() -> None:
    from psycopg2 import sql

    query = sql.SQL("{} {} {}").format(
        sql.Literal("it's"), sql.Literal(Secret("x")), sql.Placeholder()
    )
    assert as_text(query) == "'it''s' '***' '***'"
    assert SPEC.role("analyst").level("raw_crm") == "read"


def test_settings_and_connection_limits_render_as_alter_role() -> None:
    texts = render(
        settings=(
            SettingChange("bi", "statement_timeout", "2min", "0"),
            SettingChange("bi", "work_mem", None, "1GB"),
            SettingChange("bi", "lock_timeout", None, "0", database="warehouse"),
        ),
        connection_limits=(("bi", 20),),
    )
    assert texts == [
        "ALTER ROLE bi CONNECTION LIMIT 20",
        "ALTER ROLE bi SET statement_timeout = '2min'",
        "ALTER ROLE bi RESET work_mem",
        "ALTER ROLE bi IN DATABASE warehouse RESET lock_timeout",
    ]


def test_redshift_readers_execute_no_functions_and_unknown_settings_are_noted() -> None:
    assert not [t for t in REDSHIFT_TEXT if "EXECUTE" in t and "dashboard" in t]
    assert not [t for t in REDSHIFT_TEXT if "EXECUTE" in t and "GROUP analyst" in t]
    assert any("no per-user idle_in_transaction_session_timeout" in n for n in REDSHIFT.notes)
