"""Benchmarks (`invoke bench`): long runs at millions of rows, not part of CI."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg2


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server URL (query, e.g. ``?passfile=``, kept) for another database."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


def execute(dsn: str, statement: str) -> list[tuple]:
    """Run one statement in autocommit and return its rows (benchmark setup only)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
