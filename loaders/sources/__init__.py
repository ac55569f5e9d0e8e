"""Source engines, by ``meta.tidewater.kind``.

A kind maps to the engine class that reads it (`loaders.sources.base.SourceEngine`);
modules are imported when a source of their kind is loaded, so a driver only one
kind needs (MySQL's) is needed only then. Adding a source kind: one module with an
engine class, one line here, and the kind in `loaders.config.SOURCE_KINDS`.
"""

from __future__ import annotations

import importlib

from loaders.config import SourceConfig
from loaders.exceptions import DeclarationError
from loaders.results import ConnectFn
from loaders.sources.base import SourceEngine

ENGINES: dict[str, str] = {
    "postgres": "loaders.sources.postgres:PostgresSource",
    "redshift": "loaders.sources.redshift:RedshiftSource",
    "mysql": "loaders.sources.mysql:MySQLSource",
}


def engine_for(kind: str) -> type[SourceEngine]:
    """The engine class for a source kind."""
    try:
        module, _, name = ENGINES[kind].partition(":")
    except KeyError:
        raise DeclarationError(
            f"kind {kind!r}", "is not a source kind", candidates=sorted(ENGINES)
        ) from None
    engine: type[SourceEngine] = getattr(importlib.import_module(module), name)
    return engine


def connector_for(source: SourceConfig, dsn: str) -> ConnectFn:
    """A function that opens one new connection to ``source`` at ``dsn`` (with the
    driver of its kind); what `loaders.pipeline.load_all` takes per source."""
    return engine_for(source.kind).connector(source, dsn)


def check_source(source: SourceConfig, dsn: str) -> None:
    """Connect to the source once and close again, so a wrong DSN is one clear line
    before any table starts.

    Raises:
        SourceUnreachable: names the source and its DSN's environment variable, with
            the driver's reason (never the password).
    """
    from loaders.exceptions import SourceUnreachable
    from tidewater.exceptions import ConnectionFailed

    try:
        connection = connector_for(source, dsn)()
    except SourceUnreachable:
        raise
    except ConnectionFailed as exc:
        raise SourceUnreachable(source.name, source.dsn_env, exc.reason, exc.where) from exc
    connection.close()


__all__ = ["ENGINES", "SourceEngine", "check_source", "connector_for", "engine_for"]
