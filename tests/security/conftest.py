"""Fixtures for the attack suite: a warehouse after `roles apply`, with a password
for every login, and real logins over TCP (host 127.0.0.1, the user's password),
never ``SET ROLE`` from a superuser.

Every probe says what it tried (``attempt`` prints it) and the tests fail on any
success that should have been refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import pytest

from roles import Spec, apply_plan, load_spec, plan_changes, resolve_passwords
from tidewater.paths import ROLES_SPEC

Connection = psycopg2.extensions.connection

USERS = ("tidewater_etl_runner", "analyst_alice", "dashboard_bi")


def login_dsn(dsn: str, user: str, password: str) -> str:
    """The database of ``dsn``, as ``user`` with ``password``, over TCP to 127.0.0.1."""
    parts = urlsplit(dsn)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Warehouse:
    """A warehouse database after `roles apply`, and how to log in to it."""

    admin_dsn: str
    spec: Spec
    passwords: dict[str, str]  # prefixed user name -> password
    env: dict[str, str]  # the password_env variables, as `roles apply` read them

    def name(self, bare: str) -> str:
        return self.spec.prefix + bare

    def dsn(self, bare_user: str) -> str:
        user = self.name(bare_user)
        return login_dsn(self.admin_dsn, user, self.passwords[user])

    def login(self, bare_user: str, *, application_name: str = "tidewater-attack") -> Connection:
        """A real login over TCP as one of the spec's users."""
        return psycopg2.connect(self.dsn(bare_user), application_name=application_name)

    def admin(self) -> Connection:
        return psycopg2.connect(self.admin_dsn)

    def apply(self, spec: Spec | None = None) -> None:
        spec = spec or self.spec
        conn = self.admin()
        try:
            passwords = resolve_passwords(spec, env=self.env)
            apply_plan(conn, plan_changes(conn, spec, passwords=passwords), apply=True)
        finally:
            conn.close()

    def admin_query(self, statement: str, params: tuple = ()) -> list[tuple]:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params or None)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()


@pytest.fixture
def warehouse(
    make_database: Callable[[str], str], role_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Warehouse]:
    """A fresh database with the shipped spec applied; every user has a password.

    The password variables are exported too, so the roles CLI a test runs reads the
    same passwords (and plans no password change)."""
    spec = load_spec(ROLES_SPEC, prefix=role_prefix)
    passwords = {user.name: secrets.token_urlsafe(18) for user in spec.users}
    env = {user.password_env: passwords[user.name] for user in spec.users if user.password_env}
    for variable, password in env.items():
        monkeypatch.setenv(variable, password)
    built = Warehouse(make_database("sec"), spec, passwords, env)
    built.apply()
    yield built


def attempt(
    conn: Connection, who: str, statement: str, params: tuple = (), *, fetch: bool = False
) -> tuple[bool, str]:
    """Try one statement in its own transaction, print what was tried and what came of it.

    Returns (succeeded, error message). The transaction is rolled back either way.
    """
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
            rows = cur.fetchall() if fetch and cur.description else None
        conn.rollback()
    except psycopg2.Error as exc:
        conn.rollback()
        reason = " ".join(str(exc.pgerror or exc).split())
        print(f"probe: {who}: {statement!r} -> refused ({reason})")
        return False, reason
    print(f"probe: {who}: {statement!r} -> ALLOWED" + (f" {rows}" if rows is not None else ""))
    return True, ""


def run_as(conn: Connection, who: str, *statements: str) -> None:
    """Run setup statements as a login and commit (printing each)."""
    with conn.cursor() as cur:
        for statement in statements:
            print(f"setup: {who}: {statement}")
            cur.execute(statement)
    conn.commit()
