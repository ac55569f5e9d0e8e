"""Getting a warehouse and its sources ready: start the embedded server, create
the warehouse database, apply the role spec, and stand up the demo app when no
source is configured."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from tidewater import embedded
from tidewater.cli import say
from tidewater.db import ConnectFn, connect, warehouse_connector
from tidewater.exceptions import ConfigError
from tidewater.profile import Target, admin_target_name, load_target

DEMO_SOURCE = "app"
DEMO_DATABASE = "app"
# The login the loaders read the demo app as: SELECT on its tables, nothing else
# (and pg_read_all_stats, so the late-commit protection sees open transactions).
DEMO_READER = "tidewater_demo_reader"


def admin_target(target: Target) -> Target:
    """The administrative output of the same profile (``<target>_admin``)."""
    name = admin_target_name(target)
    try:
        return load_target(name, profiles_dir=target.profiles_dir)
    except ConfigError as exc:
        # A development target (an analyst's) shares the default target's admin.
        default = load_target(None, profiles_dir=target.profiles_dir)
        if default.name != target.name and default.host == target.host:
            with contextlib.suppress(ConfigError):
                return load_target(admin_target_name(default), profiles_dir=target.profiles_dir)
        raise ConfigError(
            f"roles and setup need an administrative target {name!r} in "
            f"{target.profiles_dir / 'profiles.yml'} (a user that may create roles); "
            f"add it, or set TIDEWATER_ADMIN_TARGET ({exc})"
        ) from exc


def create_database_if_missing(admin: Target, dbname: str) -> bool:
    """Create ``dbname`` on the admin target's server; returns whether it was created."""
    conn = connect(admin, what="the warehouse server (admin)", dbname="postgres", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (dbname,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
            return True
    finally:
        conn.close()


def apply_roles(
    admin: Target, *, etl: Target | None = None, spec_path: Any = None, quiet: bool = False
) -> int:
    """Apply the role spec (creating roles, users and schemas); returns statements run.

    The ETL login user gets the password the profile logs in with when its
    environment variable is unset (as `invoke roles` does). On the embedded server
    every other login whose variable is unset gets a generated password, kept in
    the server's password file (0600), so `psql` and dbt log in without typing one.
    """
    import roles

    prefix = os.environ.get("TIDEWATER_ROLE_PREFIX", "")
    spec = (
        roles.load_spec(spec_path, prefix=prefix) if spec_path else roles.load_spec(prefix=prefix)
    )
    fallback = _fallback_passwords(spec, admin=admin, etl=etl)
    conn = connect(admin, what="the warehouse (admin)")
    try:
        plan = roles.plan_changes(
            conn, spec, passwords=roles.resolve_passwords(spec, fallback=fallback)
        )
        if plan.is_empty:
            conn.rollback()
            return 0
        roles.apply_plan(conn, plan, apply=True)
        if not quiet:
            say(f"roles: applied {len(plan.statements)} statement(s) from the role spec")
        return len(plan.statements)
    finally:
        conn.close()


def _fallback_passwords(spec: Any, *, admin: Target, etl: Target | None) -> dict[str, str]:
    """The password each login gets when its ``password_env`` is unset."""
    fallback: dict[str, str] = {}
    server = embedded.configured_server() if admin.is_embedded else None
    for user in spec.users:
        if user.password_env and os.environ.get(user.password_env):
            continue
        if etl is not None and user.name == etl.user and etl.password:
            fallback[user.name] = etl.password
            if server is not None:
                embedded.remember_password(server, user.name, etl.password)
        elif server is not None:
            fallback[user.name] = embedded.login_password(server, user.name)
    return fallback


def grant_new_schemas(target: Target, schemas: Sequence[str]) -> None:
    """Schemas a load just created get the role spec's grants now, not on the next run.

    On the embedded warehouse the spec is applied again (as at every start); elsewhere
    the grants are the owners' to apply, so this says what to run.
    """
    names = ", ".join(schemas)
    if target.is_embedded:
        apply_roles(admin_target(target), etl=target, quiet=True)
        say(f"created {names} and applied the role spec to it: analysts can read it now")
    else:
        say(
            f"created {names}; run `invoke roles --apply` (as the warehouse's owner) so the "
            "role spec's grants, e.g. analysts reading raw_*, cover it"
        )


def ensure_warehouse(target: Target) -> None:
    """For the embedded warehouse: start it, create the database, apply the roles.

    Other warehouses are set up by their owners (`invoke roles --apply`); this
    only checks that they answer.
    """
    if target.is_embedded:
        embedded.start()
        admin = admin_target(target)
        if create_database_if_missing(admin, target.dbname):
            say(f"created warehouse database {target.dbname} on the embedded server")
        apply_roles(admin, etl=target)
    conn = warehouse_connector(target)()
    conn.close()


def ensure_demo_app(*, scale: float | None = None, refresh: bool = False) -> str:
    """The demo app on the embedded server, created if missing; returns the DSN of
    its owner (the superuser), for creating and simulating it. Loaders read it
    through `demo_reader_dsn`."""
    import demo_app

    server = embedded.start()
    admin_dsn = server.admin_dsn("postgres")
    conn = connect(admin_dsn, what="the embedded server", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (DEMO_DATABASE,))
            exists = cur.fetchone() is not None
            if not exists:
                cur.execute(sql.SQL("create database {}").format(sql.Identifier(DEMO_DATABASE)))
            _ensure_demo_reader(cur, server)
    finally:
        conn.close()
    dsn = server.admin_dsn(DEMO_DATABASE)
    if refresh or not exists or not _has_tables(dsn):
        scale = scale if scale is not None else float(os.environ.get("TIDEWATER_DEMO_SCALE", "1"))
        counts = demo_app.create_app(dsn, scale=scale)
        say(
            f"demo app: created database {DEMO_DATABASE} at scale {scale:g} "
            f"({', '.join(f'{table} {count:,}' for table, count in counts.items())})"
        )
    _grant_demo_reader(dsn)
    return dsn


def demo_reader_dsn(*, scale: float | None = None, refresh: bool = False) -> str:
    """The demo app (created if missing) as its read-only login; the password comes
    from the embedded server's password file, so the URL holds none."""
    ensure_demo_app(scale=scale, refresh=refresh)
    return embedded.configured_server().login_dsn(DEMO_READER, DEMO_DATABASE)


def _ensure_demo_reader(cur: psycopg2.extensions.cursor, server: embedded.EmbeddedServer) -> None:
    verifier = embedded.scram_verifier(embedded.login_password(server, DEMO_READER))
    cur.execute("select 1 from pg_roles where rolname = %s", (DEMO_READER,))
    verb = "alter" if cur.fetchone() else "create"
    cur.execute(
        sql.SQL(
            verb + " role {} login nosuperuser nocreatedb nocreaterole noinherit password %s"
        ).format(sql.Identifier(DEMO_READER)),
        (verifier,),
    )
    cur.execute(sql.SQL("grant pg_read_all_stats to {}").format(sql.Identifier(DEMO_READER)))


def _grant_demo_reader(dsn: str) -> None:
    """SELECT on the demo app's tables for its reader, nothing else (the schema is
    recreated with the app, so this runs after every refresh)."""
    reader = sql.Identifier(DEMO_READER)
    conn = connect(dsn, what="the demo app", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("revoke create, temporary on database {} from public").format(
                    sql.Identifier(DEMO_DATABASE)
                )
            )
            cur.execute("revoke create on schema public from public")
            cur.execute(sql.SQL("grant usage on schema public to {}").format(reader))
            cur.execute(sql.SQL("grant select on all tables in schema public to {}").format(reader))
    finally:
        conn.close()


def _has_tables(dsn: str) -> bool:
    conn = connect(dsn, what="the demo app")
    try:
        with conn.cursor() as cur:
            cur.execute("select to_regclass('public.events') is not null")
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def resolve_sources(sources: Sequence[Any], *, target: Target) -> dict[str, ConnectFn]:
    """A connector per source, each checked once (a bad DSN is one clear line before
    any table starts).

    A source's DSN comes from its environment variable; with none set, the
    ``app`` source falls back to the demo app on the embedded server.
    """
    from loaders import check_source, connector_for
    from loaders.config import source_dsn

    connectors: dict[str, ConnectFn] = {}
    for source in sources:
        dsn = source_dsn(source)
        if dsn is None:
            if source.name != DEMO_SOURCE:
                raise ConfigError(
                    f"source {source.name} has no DSN; export {source.dsn_env}="
                    "postgresql://user:password@host:5432/dbname"
                )
            say(
                f"no source configured ({source.dsn_env} is unset): loading the demo app "
                "on the embedded server"
            )
            dsn = demo_reader_dsn()
        check_source(source, dsn)
        connectors[source.name] = connector_for(source, dsn)
    return connectors
