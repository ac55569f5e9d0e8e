"""Connections, with errors that say what to fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from tidewater.exceptions import ConnectionFailed
from tidewater.profile import Target

# A zero-argument function that opens a new connection (to retry with, or one per thread).
ConnectFn = Callable[[], psycopg2.extensions.connection]

# SQLSTATE classes and codes worth a retry: the fault is in the moment, not the request.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
        "08000",
        "08003",
        "08006",
        "08001",
        "08004",
    }
)


# What libpq says, with no SQLSTATE, when a server is down, restarting, recovering from
# a crash or has dropped the connection: worth a retry. A wrong password, an unknown
# database or host name says something else, and is not.
TRANSIENT_MESSAGES = (
    "connection refused",
    "server closed the connection unexpectedly",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "terminating connection",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "connection already closed",
    "ssl connection has been closed unexpectedly",
    "timeout expired",
    "connection timed out",
    "sorry, too many clients already",
    "no message from the libpq",
)


def _says_transient(message: str) -> bool:
    lowered = " ".join(message.lower().split())
    return any(pattern in lowered for pattern in TRANSIENT_MESSAGES)


def is_transient(exc: BaseException) -> bool:
    """Whether an error is a passing fault (retry) rather than a real one (stop).

    Transient: serialization failures, deadlocks, lock timeouts, admin and crash
    shutdowns (57P01-57P03), lost connections, and a server that refuses
    connections, is starting, recovering or shutting down — also when `connect`
    has wrapped that in `ConnectionFailed`, and when psycopg2 reports a connection
    lost mid-COPY as a bare `DatabaseError` or a `SystemError` chained to it.
    """
    if isinstance(exc, ConnectionFailed):
        return _says_transient(exc.reason)
    if isinstance(exc, SystemError):
        cause = exc.__cause__ or exc.__context__
        return isinstance(cause, psycopg2.Error) and is_transient(cause)
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        code = getattr(exc, "pgcode", None)
        if code is None:
            # Lost connection, server restart, network: no SQLSTATE at all.
            return True
        return code in TRANSIENT_SQLSTATES or code.startswith("08")
    code = getattr(exc, "pgcode", None)
    if code is None and isinstance(exc, psycopg2.DatabaseError):
        cursor = getattr(exc, "cursor", None)
        closed = cursor is not None and bool(cursor.connection.closed)
        return closed or _says_transient(str(exc))
    return code in TRANSIENT_SQLSTATES


def _hint(message: str) -> str:
    lowered = message.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return "check the user and the password (env_var) in the profile"
    if "does not exist" in lowered and "database" in lowered:
        return "check dbname in the profile, or create the database"
    if "does not exist" in lowered and "role" in lowered:
        return "check the user in the profile, or run `invoke roles --apply` to create it"
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return "check host in the profile (unknown host name)"
    if "connection refused" in lowered or "timeout" in lowered or "timed out" in lowered:
        return "is the server running? Check host and port, or run `invoke up` for the embedded one"
    return "check the connection settings"


def connect(
    params: Target | str | dict[str, Any],
    *,
    what: str = "the warehouse",
    dbname: str | None = None,
    application_name: str = "tidewater",
    autocommit: bool = False,
    connect_timeout: int = 10,
) -> psycopg2.extensions.connection:
    """Open a connection to a target, a DSN, or psycopg2 keyword arguments.

    Raises:
        ConnectionFailed: one line naming what could not be reached and what to fix.
    """
    if isinstance(params, Target):
        kwargs = params.connect_kwargs(dbname=dbname)
        where = params.dsn(dbname=dbname)
    elif isinstance(params, str):
        kwargs = {"dsn": params}
        if dbname:
            kwargs["dbname"] = dbname
        where = redact_dsn(params)
        if where == UNPARSEABLE_DSN:
            # libpq's own message quotes the text it choked on, which may be a password.
            raise ConnectionFailed(
                what,
                where,
                "not a libpq connection string",
                "write it as postgresql://user@host:5432/dbname or as key=value pairs",
            )
    else:
        kwargs = dict(params)
        where = f"{kwargs.get('host')}:{kwargs.get('port')}/{dbname or kwargs.get('dbname')}"
        if dbname:
            kwargs["dbname"] = dbname
    try:
        conn = psycopg2.connect(
            **kwargs, application_name=application_name, connect_timeout=connect_timeout
        )
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        raise ConnectionFailed(what, where, reason, _hint(reason)) from exc
    conn.autocommit = autocommit
    return conn


UNPARSEABLE_DSN = "<unparseable DSN>"
_SECRET_KEYS = ("password",)


def redact_dsn(dsn: str) -> str:
    """A connection string fit to print or record: parsed by libpq itself (URL or
    key=value form, ``?password=`` included) and rebuilt with the password as
    ``***``. A string libpq cannot parse is shown as ``<unparseable DSN>``, with
    none of its content (the password might be what is malformed). URLs of other
    servers (``mysql://``, ``amqp://``, ``nats://``) are parsed as URLs."""
    scheme, separator, _ = dsn.partition("://")
    if separator and scheme.lower() not in ("postgres", "postgresql"):
        return _redact_url(dsn)
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return UNPARSEABLE_DSN
    if not any(key in params for key in _SECRET_KEYS):
        return dsn  # libpq finds no secret in it: show it as written
    for key in _SECRET_KEYS:
        if key in params:
            params[key] = "***"
    return psycopg2.extensions.make_dsn(**params)


def _redact_url(url: str) -> str:
    """A URL with its password (in the user part or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return UNPARSEABLE_DSN
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    if parts.username is not None:
        secret = ":***" if parts.password is not None else ""
        netloc = f"{quote(unquote(parts.username), safe='')}{secret}@{netloc}"
    query = urlencode(
        [
            (key, "***" if key.lower() in _SECRET_KEYS else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


# PostgreSQL's server_version as Redshift reports it (8.0.2).
REDSHIFT_SERVER_VERSION = 80002


def is_redshift(conn: psycopg2.extensions.connection) -> bool:
    """Whether the connection's server is Redshift (it reports PostgreSQL 8.0.2)."""
    return bool(conn.server_version <= REDSHIFT_SERVER_VERSION)


def warehouse_connector(target: Target) -> ConnectFn:
    """Connections to the warehouse as the target's (ETL) user."""
    return lambda: connect(
        target, what=f"the warehouse (target {target.name})", application_name="tidewater"
    )
