"""Functions: reading a schema gives no EXECUTE. An etl-owned SECURITY DEFINER
function in ops runs with etl's rights, so a reader who could call it would write
as etl; only the spec's `execute:` grants EXECUTE, and verify reports the function."""

from __future__ import annotations

import yaml

from roles import parse_spec, verify
from tidewater.paths import ROLES_SPEC

from .conftest import Warehouse, attempt, run_as

DEFINER = (
    "create function ops.bump_watermark(note text) returns integer language sql "
    "security definer as $f$ insert into ops.watermarks (note) values (note) returning 1 $f$"
)


def plant_definer(warehouse: Warehouse) -> None:
    etl = warehouse.login("tidewater_etl_runner")
    try:
        run_as(
            etl,
            "tidewater_etl_runner",
            "create table ops.watermarks (note text)",
            DEFINER,
            "create function ops.harmless() returns integer language sql as 'select 1'",
        )
    finally:
        etl.close()


def readers_cannot_execute(warehouse: Warehouse) -> None:
    for user in ("analyst_alice", "dashboard_bi"):
        conn = warehouse.login(user)
        try:
            for statement in (
                "select ops.bump_watermark('from a reader')",
                "select ops.harmless()",
            ):
                allowed, error = attempt(conn, user, statement)
                assert not allowed, f"{user} executed {statement}"
                assert "permission denied" in error
        finally:
            conn.close()
    assert warehouse.admin_query("select count(*) from ops.watermarks") == [(0,)]


def test_readers_cannot_execute_an_etl_security_definer_function(warehouse: Warehouse) -> None:
    plant_definer(warehouse)
    print("right after etl created the functions (default privileges):")
    readers_cannot_execute(warehouse)
    warehouse.apply()
    print("after another `roles apply`:")
    readers_cannot_execute(warehouse)


def test_verify_reports_security_definer_functions_and_who_may_execute(
    warehouse: Warehouse,
) -> None:
    plant_definer(warehouse)
    conn = warehouse.admin()
    try:
        result = verify(conn, warehouse.spec)
    finally:
        conn.close()
    text = result.render_text()
    print(text)
    runner = warehouse.name("tidewater_etl_runner")
    assert f"function ops.bump_watermark(note text) is SECURITY DEFINER (runs as {runner})" in text
    assert not result.violations, text
    executes = {
        (check.role, check.allowed)
        for check in result.checks
        if check.operation == "EXECUTE" and check.detail == "ops.bump_watermark(note text)"
    }
    assert (warehouse.name("analyst"), False) in executes
    assert (warehouse.name("dashboard_bi"), False) in executes
    assert (warehouse.name("etl"), True) in executes
    # A grant by hand is a difference verify finds (the analyst may use schema ops).
    warehouse.admin_query(
        f"grant execute on function ops.bump_watermark(text) to {warehouse.name('analyst')}"
    )
    conn = warehouse.admin()
    try:
        result = verify(conn, warehouse.spec)
    finally:
        conn.close()
    found = {(v.role, v.operation, v.detail) for v in result.violations}
    print(found)
    assert (warehouse.name("analyst"), "EXECUTE", "ops.bump_watermark(note text)") in found


def test_execute_is_granted_where_the_spec_says_so(warehouse: Warehouse) -> None:
    data = yaml.safe_load(ROLES_SPEC.read_text())
    data["roles"]["analyst"]["execute"] = ["ops"]
    spec = parse_spec(data, prefix=warehouse.spec.prefix)
    warehouse.apply(spec)
    plant_definer(warehouse)
    alice = warehouse.login("analyst_alice")
    try:
        allowed, _ = attempt(alice, "analyst_alice", "select ops.harmless()")
        assert allowed, "execute: [ops] should let the analyst call ops.harmless()"
    finally:
        alice.close()
    dashboard = warehouse.login("dashboard_bi")
    try:
        allowed, _ = attempt(dashboard, "dashboard_bi", "select ops.harmless()")
        assert not allowed
    finally:
        dashboard.close()
