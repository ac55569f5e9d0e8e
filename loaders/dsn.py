"""MySQL/MariaDB connection URLs: ``mysql://user:password@host:3306/database``.

libpq's parser (which `tidewater.db.redact_dsn` uses) cannot read them, so the
loaders parse and redact them here, with `urllib.parse`; no message ever shows the
password."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from loaders.exceptions import MalformedDsn

MYSQL_SCHEMES = ("mysql", "mariadb")


@dataclass(frozen=True)
class MySQLDsn:
    """The parts of a MySQL URL; ``repr`` never shows the password."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str | None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def redacted(self) -> str:
        user = f"{self.user}@" if self.user else ""
        database = f"/{self.database}" if self.database else ""
        return f"mysql://{user}{self.host}:{self.port}{database}"


def parse_mysql_dsn(value: str, *, env: str) -> MySQLDsn:
    """Parse ``mysql://user:password@host:port/database[?unix_socket=…]``.

    Raises:
        MalformedDsn: naming ``env``, never the value.
    """
    try:
        parts = urlsplit(value)
        port = parts.port or 3306
    except ValueError:
        raise MalformedDsn(env, "the port is not a number", example=EXAMPLE) from None
    if parts.scheme not in MYSQL_SCHEMES:
        raise MalformedDsn(env, "the URL does not start with mysql://", example=EXAMPLE)
    if not parts.hostname:
        raise MalformedDsn(env, "the URL names no host", example=EXAMPLE)
    database = unquote(parts.path.lstrip("/")) or None
    return MySQLDsn(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
        options=dict(parse_qsl(parts.query)),
    )


def redact_mysql_dsn(value: str) -> str:
    """``mysql://user@host:port/database``: the URL without its password."""
    try:
        return parse_mysql_dsn(value, env="DSN").redacted
    except MalformedDsn:
        return "<unparseable DSN>"


EXAMPLE = "mysql://user:password@host:3306/database"
