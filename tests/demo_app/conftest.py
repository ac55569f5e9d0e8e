"""Fixtures for the demo app tests: a small app database, and table fingerprints."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import pytest
from psycopg2 import sql

from demo_app import create_app

PRIMARY_KEYS: dict[str, str] = {
    "countries": "country_code",
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
    "payments": "payment_id",
    "events": "event_id",
}

FINGERPRINT = (
    "select md5(coalesce(string_agg(t::text, '|' order by t.{key}), '')) from {table} as t"
)


def query(dsn: str, statement: str | sql.Composable, params: object = None) -> list[tuple]:
    """Rows of one statement, on a connection of its own."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def execute(dsn: str, statement: str | sql.Composable, params: object = None) -> None:
    """Run one statement and commit."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


def scalar(dsn: str, statement: str | sql.Composable, params: object = None) -> object:
    """The single value of a one-row, one-column statement."""
    return query(dsn, statement, params)[0][0]


def fingerprints(dsn: str) -> dict[str, str]:
    """An md5 of every table's full content, in primary key order."""
    return {
        table: str(
            scalar(
                dsn,
                sql.SQL(FINGERPRINT).format(key=sql.Identifier(key), table=sql.Identifier(table)),
            )
        )
        for table, key in PRIMARY_KEYS.items()
    }


def row_counts(dsn: str) -> dict[str, int]:
    """``count(*)`` per table."""
    return {
        table: int(scalar(dsn, sql.SQL("select count(*) from {}").format(sql.Identifier(table))))
        for table in PRIMARY_KEYS
    }


@pytest.fixture
def app_dsn(make_database: Callable[[str], str]) -> str:
    """A fresh demo app at scale 0.1 (100 customers, 300 orders), seed 7."""
    dsn = make_database("app")
    create_app(dsn, scale=0.1, seed=7)
    return dsn
