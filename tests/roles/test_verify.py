"""Verify by trying: the allowed/denied matrix, and differences from the spec."""

from __future__ import annotations

import psycopg2
import pytest

from roles import Spec, VerifyError, verify
from roles.verify import DATABASE, OPERATIONS

from .conftest import acting_as, execute, name
from .test_apply import create_events

Connection = psycopg2.extensions.connection


def test_verify_has_no_violations_after_apply(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    create_events(warehouse, applied)
    result = verify(admin, applied)
    assert not result.violations, result.render_text()
    matrix = result.matrix
    analyst, dashboard, etl = (name(applied, r) for r in ("analyst", "dashboard", "etl"))
    assert matrix[(analyst, "raw_app")] == {op: op == "SELECT" for op in OPERATIONS}
    assert matrix[(dashboard, "marts")] == {op: op == "SELECT" for op in OPERATIONS}
    assert not any(matrix[(dashboard, "raw_app")].values())
    assert all(matrix[(etl, "staging")].values())
    assert matrix[(name(applied, "tidewater_etl_runner"), "marts")]["DROP"]
    assert matrix[(analyst, DATABASE)] == {"CONNECT": True, "TEMP": True, "CREATE SCHEMA": False}
    sandbox = f"sandbox_{name(applied, 'analyst_alice')}"
    assert all(matrix[(name(applied, "analyst_alice"), sandbox)].values())
    assert not any(matrix[(analyst, sandbox)].values())
    text = result.render_text()
    assert "no differences from the spec" in text
    assert f"{analyst} " in text and "nextval" in text
    # Probes were created and tried inside a transaction that was rolled back.
    assert "_tidewater_verify" not in str(execute(warehouse, "select relname from pg_class"))


def test_verify_reports_a_hand_made_extra_grant(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    create_events(warehouse, applied)
    analyst = name(applied, "analyst")
    execute(warehouse, f"grant update on raw_app.events to {analyst}")
    result = verify(admin, applied)
    found = {(v.role, v.operation, v.detail) for v in result.violations}
    assert (analyst, "UPDATE", "raw_app.events") in found
    assert f"{analyst} may UPDATE on raw_app.events; the spec says it may not" in (
        result.render_text()
    )


def test_verify_tries_the_operations_rather_than_reading_grants(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    # Membership in pg_write_all_data grants nothing visible on any table, but it works.
    dashboard = name(applied, "dashboard")
    execute(warehouse, f"grant pg_write_all_data to {dashboard}")
    try:
        result = verify(admin, applied)
    finally:
        execute(warehouse, f"revoke pg_write_all_data from {dashboard}")
    cells = {(v.role, v.schema, v.operation) for v in result.violations if not v.detail}
    assert (dashboard, "raw_app", "INSERT") in cells
    assert (dashboard, "raw_app", "SELECT") not in cells  # write-all cannot read
    assert any(v.operation == "a member of pg_write_all_data" for v in result.violations)
    assert "INSERT" in result.render_text() and "yes!" in result.render_text()


def test_verify_finds_missing_default_privileges(
    warehouse: str, admin: Connection, applied: Spec
) -> None:
    runner, analyst = name(applied, "tidewater_etl_runner"), name(applied, "analyst")
    execute(
        warehouse,
        f"alter default privileges for role {runner} in schema marts "
        f"revoke select on tables from {analyst}",
    )
    result = verify(admin, applied)
    assert (analyst, "SELECT", f"a table {runner} created in marts") in {
        (v.role, v.operation, v.detail) for v in result.violations
    }


def test_verify_needs_a_superuser(warehouse: str, applied: Spec) -> None:
    with acting_as(warehouse, name(applied, "etl")) as cur:
        conn = cur.connection
        conn.commit()  # keep SET ROLE for the session
        with pytest.raises(VerifyError, match="needs a superuser connection"):
            verify(conn, applied)
