"""With ``log_statement = 'all'`` on the admin session, a dry run (and an apply)
must not write password verifiers to the server log: a SCRAM verifier can be
attacked offline, and the log is read by more people than pg_authid is."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import psycopg2.extensions
import pytest

from roles import apply_plan, plan_changes, resolve_passwords

from .conftest import Warehouse


def server_log(conn: psycopg2.extensions.connection) -> tuple[str, Path | None]:
    """Where the server writes its log: the collector's file (read through
    pg_read_file), or the embedded server's file next to its data directory."""
    with conn.cursor() as cur:
        cur.execute("select pg_current_logfile()")
        current = cur.fetchone()[0]
        if current:
            return current, None
        cur.execute("show data_directory")
        data = Path(cur.fetchone()[0])
    conn.rollback()
    local = data.parent / f"{data.name}.log"
    if not local.exists():
        pytest.skip(f"the server log is neither collected nor at {local} on this machine")
    return "", local


def read_log(conn: psycopg2.extensions.connection, where: tuple[str, Path | None]) -> str:
    collected, local = where
    if local is not None:
        return local.read_text(errors="replace")
    with conn.cursor() as cur:
        cur.execute("select pg_read_file(%s)", (collected,))
        text = cur.fetchone()[0]
    conn.rollback()
    return text


@pytest.mark.parametrize("apply", [False, True])
def test_password_statements_never_reach_the_statement_log(
    warehouse: Warehouse, apply: bool
) -> None:
    env = {name: secrets.token_urlsafe(18) for name in warehouse.env}  # new passwords
    marker = secrets.token_hex(6)
    conn = warehouse.admin()
    try:
        where = server_log(conn)
        before = len(read_log(conn, where))
        with conn.cursor() as cur:
            cur.execute("set log_statement = 'all'")
            cur.execute("select %s", (f"tidewater-log-start-{marker}",))
        conn.commit()
        plan = plan_changes(
            conn, warehouse.spec, passwords=resolve_passwords(warehouse.spec, env=env)
        )
        changed = [s.text for s in plan.statements if "PASSWORD" in s.text]
        print(
            f"{'apply' if apply else 'dry run'} with log_statement=all; password statements: {changed}"
        )
        assert len(changed) == len(env)
        apply_plan(conn, plan, apply=apply)
        with conn.cursor() as cur:
            cur.execute("select %s", (f"tidewater-log-end-{marker}",))
        conn.commit()
        logged = read_log(conn, where)[before:]
    finally:
        conn.close()
    start = logged.find(f"tidewater-log-start-{marker}")
    end = logged.find(f"tidewater-log-end-{marker}")
    print(f"server log during the run: {end - start} characters")
    assert start >= 0 and end > start, "statement logging was not on; the test proves nothing"
    during = logged[start:end]
    assert "pg_namespace" in during  # the plan's catalog reads were logged ...
    assert "SCRAM-SHA-256$" not in during, "a password verifier reached the server log"
    assert not re.search(r"ROLE\s+\S+\s+PASSWORD", during, re.IGNORECASE)  # ... not these
    for password in env.values():
        assert password not in during
