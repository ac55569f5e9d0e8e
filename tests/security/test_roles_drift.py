"""Drift the roles tool must see: a role nobody declared (an unmanaged LOGIN
SUPERUSER), ``ALTER ROLE … SET`` and connection limits changed by hand, and grants
on schema ``public``. Plan shows them (and exits 2), ``--strict`` fails on unknown
roles, and verify reports them."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg2
import pytest

from roles import plan_changes, verify
from roles.__main__ import main

from .conftest import Warehouse, attempt


def cli(capsys: pytest.CaptureFixture[str], warehouse: Warehouse, *args: str) -> tuple[int, str]:
    code = main([*args, "--dsn", warehouse.admin_dsn, "--prefix", warehouse.spec.prefix])
    out, err = capsys.readouterr()
    print(f"python -m roles {' '.join(args)} -> exit {code}\n{out}{err}")
    return code, out + err


def test_an_unmanaged_login_superuser_is_reported_and_strict_fails(
    warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    intruder = warehouse.name("intruder")
    warehouse.admin_query(f"create role {intruder} login superuser password 'x'")
    code, out = cli(capsys, warehouse, "plan")
    assert code == 0  # nothing to change
    assert f"-- WARNING: role {intruder} (LOGIN SUPERUSER) is not in the spec" in out
    code, out = cli(capsys, warehouse, "plan", "--strict")
    assert code == 2 and "strict: " in out
    code, out = cli(capsys, warehouse, "verify")
    assert code == 0 and f"role {intruder} (LOGIN SUPERUSER) is not in the spec" in out
    code, out = cli(capsys, warehouse, "verify", "--strict")
    assert code == 2 and f"{intruder} is not known to the spec" in out


def test_settings_and_connection_limits_changed_by_hand_show_in_the_plan(
    warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    bi = warehouse.name("dashboard_bi")
    database = urlsplit(warehouse.admin_dsn).path.lstrip("/")
    # The applied spec holds: the dashboard login times out idle transactions.
    dashboard = warehouse.login("dashboard_bi")
    try:
        with dashboard.cursor() as cur:
            cur.execute("show idle_in_transaction_session_timeout")
            shown = cur.fetchone()[0]
            cur.execute("show statement_timeout")
            timeout = cur.fetchone()[0]
        print(
            f"dashboard_bi logs in with idle_in_transaction_session_timeout={shown}, "
            f"statement_timeout={timeout}"
        )
        assert (shown, timeout) == ("1min", "2min")
    finally:
        dashboard.close()
    warehouse.admin_query(f"alter role {bi} set statement_timeout = 0")
    warehouse.admin_query(f"alter role {bi} reset idle_in_transaction_session_timeout")
    warehouse.admin_query(f'alter role {bi} in database "{database}" set lock_timeout = 0')
    warehouse.admin_query(f"alter role {bi} connection limit 500")
    code, out = cli(capsys, warehouse, "plan")
    assert code == 2
    assert f"ALTER ROLE {bi} SET statement_timeout = '2min';" in out
    assert f"ALTER ROLE {bi} SET idle_in_transaction_session_timeout = '1min';" in out
    assert f"ALTER ROLE {bi} IN DATABASE {database} RESET lock_timeout;" in out
    assert f"ALTER ROLE {bi} CONNECTION LIMIT 20;" in out
    code, out = cli(capsys, warehouse, "verify")
    assert code == 2
    assert f"{bi} has statement_timeout 0; the spec says 2min" in out
    assert f"{bi} has connection limit 500; the spec says 20" in out
    code, _ = cli(capsys, warehouse, "apply")
    assert code == 0
    code, out = cli(capsys, warehouse, "plan")
    assert code == 0 and "Nothing to do" in out


def test_the_dashboard_connection_limit_holds(warehouse: Warehouse) -> None:
    bi = warehouse.name("dashboard_bi")
    warehouse.admin_query(f"alter role {bi} connection limit 2")
    opened = []
    try:
        opened = [warehouse.login("dashboard_bi") for _ in range(2)]
        print("probe: dashboard_bi opens a third connection over its limit of 2")
        with pytest.raises(psycopg2.OperationalError, match="too many connections"):
            opened.append(warehouse.login("dashboard_bi"))
    finally:
        for conn in opened:
            conn.close()
    conn = warehouse.admin()
    try:
        plan = plan_changes(conn, warehouse.spec)
    finally:
        conn.close()
    assert f"ALTER ROLE {bi} CONNECTION LIMIT 20" in [s.text for s in plan.statements]


def test_grants_on_schema_public_are_revoked_and_reported(
    warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = warehouse.name("analyst_alice")
    warehouse.admin_query(f"grant usage, create on schema public to {alice}")
    conn = warehouse.admin()
    try:
        result = verify(conn, warehouse.spec)
    finally:
        conn.close()
    found = {(v.role, v.schema, v.operation) for v in result.violations}
    print(result.render_text())
    assert (alice, "public", "CREATE") in found
    assert (alice, "(role)", "granted CREATE on schema public directly") in found
    assert (alice, "(role)", "granted USAGE on schema public directly") in found
    code, out = cli(capsys, warehouse, "plan")
    assert code == 2 and f"REVOKE CREATE, USAGE ON SCHEMA public FROM {alice};" in out
    assert cli(capsys, warehouse, "apply")[0] == 0
    login = warehouse.login("analyst_alice")
    try:
        allowed, _ = attempt(login, "analyst_alice", "create table public.planted (id int)")
        assert not allowed
    finally:
        login.close()
    assert cli(capsys, warehouse, "verify")[0] == 0
