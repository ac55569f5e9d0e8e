"""Fixtures for the role manager: the shipped spec under the session's role prefix,
a fresh warehouse database, and ways to act as a role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from roles import Spec, apply_plan, load_spec, plan_changes
from tidewater.paths import ROLES_SPEC

Cursor = psycopg2.extensions.cursor


@pytest.fixture
def spec(role_prefix: str) -> Spec:
    """The shipped spec with every role and user named ``<role_prefix><name>``."""
    return load_spec(ROLES_SPEC, prefix=role_prefix)


@pytest.fixture
def warehouse(make_database: Callable[[str], str]) -> str:
    """Superuser DSN of an empty database."""
    return make_database("roles")


@pytest.fixture
def admin(warehouse: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(warehouse)
    yield conn
    conn.close()


@pytest.fixture
def applied(admin: psycopg2.extensions.connection, spec: Spec) -> Spec:
    """The database after `apply`."""
    apply_plan(admin, plan_changes(admin, spec), apply=True)
    return spec


def name(spec: Spec, bare: str) -> str:
    """The prefixed name of a role or user of the spec."""
    return spec.prefix + bare


@contextmanager
def acting_as(dsn: str, role: str, *, commit: bool = False) -> Iterator[Cursor]:
    """A cursor whose statements run as ``role`` (``SET ROLE`` from the superuser)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            yield cur
        if commit:
            conn.commit()
    finally:
        conn.rollback()
        conn.close()


def execute(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement as the superuser, committed; returns rows if any."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params or None)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()
