"""Benchmarks (`invoke bench`): long runs at millions of rows, not part of CI."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import yaml
from psycopg2 import sql

from tidewater.profile import PROFILE_NAME


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server URL (query, e.g. ``?passfile=``, kept) for another database."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


def execute(dsn: str, statement: str | sql.Composable) -> list[tuple]:
    """Run one statement in autocommit and return its rows (benchmark setup only)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a scratch database, if it exists, whoever is connected to it."""
    execute(
        admin_dsn, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
    )


def recreate_database(admin_dsn: str, name: str) -> None:
    """A new, empty scratch database of this name."""
    drop_database(admin_dsn, name)
    execute(admin_dsn, sql.SQL("create database {}").format(sql.Identifier(name)))


def write_profile(directory: str | Path, *, port: int, dbname: str, logins: dict[str, str]) -> None:
    """``profiles.yml`` in ``directory``: the tidewater profile on the embedded server's
    ``port`` and ``dbname``, one output per target name → login (the first is the
    default target; passwords come from the server's password file)."""
    outputs = {
        name: {
            "type": "postgres",
            "host": "127.0.0.1",
            "port": port,
            "user": user,
            "password": "",
            "dbname": dbname,
            "schema": "analytics",
            "threads": 4 if index == 0 else 1,
        }
        for index, (name, user) in enumerate(logins.items())
    }
    profile = {PROFILE_NAME: {"target": next(iter(logins)), "outputs": outputs}}
    (Path(directory) / "profiles.yml").write_text(yaml.safe_dump(profile, sort_keys=False))
