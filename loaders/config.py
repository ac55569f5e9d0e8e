"""The table declaration: the dbt sources (``meta.tidewater``), as dbt parses them.

Tables are declared once, as dbt sources, so raw tables get dbt's freshness
checks and tests and lineage runs from each source table to the marts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg2
from jsonschema import Draft202012Validator, ValidationError
from psycopg2.extensions import parse_dsn

from loaders.exceptions import DeclarationError, MalformedDsn
from tidewater.manifest import parsed_manifest
from tidewater.paths import DBT_PROJECT_DIR

Mode = Literal["incremental", "bulk"]
MODES: tuple[Mode, ...] = ("incremental", "bulk")
SourceKind = Literal["postgres", "redshift", "mysql", "http", "rabbitmq", "nats"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("postgres", "redshift", "mysql", "http", "rabbitmq", "nats")
# Event sources (the `events` package): each declared table is a stream.
EVENT_SOURCE_KINDS = frozenset({"http", "rabbitmq", "nats"})
_INTERVAL = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day)s?\s*$")

# The declaration's JSON schema: every setting the loaders read, with what each
# allows in words ("description"), which the one-line errors quote. Only the
# loaders' part (``meta.tidewater``) is closed; the rest of a sources file is dbt's.
_BOOLEAN = {"type": "boolean", "description": "true or false (unquoted)"}
_COLUMN = {"type": "string", "minLength": 1, "description": "a column name"}
TABLE_SETTINGS: dict[str, Any] = {
    "type": "object",
    "description": "a mapping of settings",
    "additionalProperties": False,
    "properties": {
        "mode": {"enum": list(MODES), "description": "incremental or bulk"},
        "cursor": {
            **_COLUMN,
            "description": "a column name (a timestamp the database sets on every write)",
        },
        "primary_key": {
            "anyOf": [
                _COLUMN,
                {"type": "array", "items": _COLUMN, "uniqueItems": True},
            ],
            "description": "a column name or a list of column names",
        },
        "detect_deletes": _BOOLEAN,
        "lag": {
            "anyOf": [
                {"const": 0},
                {"type": "string", "pattern": r"^\s*(0|\d+\s*(second|minute|hour|day)s?)\s*$"},
            ],
            "description": "an interval like '30 seconds', '5 minutes', '1 hour', or 0",
        },
        "late_commit_protection": _BOOLEAN,
        "indexes": {
            "type": "array",
            "items": {
                "anyOf": [
                    _COLUMN,
                    {"type": "array", "items": _COLUMN, "minItems": 1, "uniqueItems": True},
                ],
                "description": "a column name or a list of column names",
            },
            "description": "a list of columns (or lists of columns) to index in the raw table",
        },
        "enabled": _BOOLEAN,
        "event_id_field": {
            **_COLUMN,
            "description": "a field of each event that holds its id (event sources only)",
        },
    },
}
_TIMEOUT_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "s": 1,
    "sec": 1,
    "second": 1,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_TIMEOUT_PATTERN = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|h|d|milliseconds?|seconds?|minutes?|hours?|days?)\s*$"
)
_TIMEOUT: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": _TIMEOUT_PATTERN.pattern},
    ],
    "description": "whole seconds (e.g. 300) or an interval like '30s', '5 minutes', '500ms'",
}
SOURCE_SETTINGS: dict[str, Any] = {
    "type": "object",
    "description": "a mapping of settings",
    "additionalProperties": False,
    "properties": {
        "source_schema": {
            "type": "string",
            "minLength": 1,
            "description": "a schema name in the source database (for mysql: the database "
            "name; default: the DSN's)",
        },
        "dsn_env": {
            "type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "description": "the name of an environment variable, e.g. TIDEWATER_SOURCE_APP_DSN",
        },
        "kind": {
            "enum": list(SOURCE_KINDS),
            "description": "postgres, redshift, mysql (MySQL and MariaDB), http, rabbitmq or nats",
        },
        "source_lock_timeout": _TIMEOUT,
        "source_statement_timeout": _TIMEOUT,
    },
}


def _with_meta(settings: dict[str, Any]) -> dict[str, Any]:
    meta = {"type": "object", "properties": {"tidewater": settings}}
    return {"config": {"type": "object", "properties": {"meta": meta}}, "meta": meta}


DECLARATION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "description": "a mapping (a dbt properties file)",
    "properties": {
        "sources": {
            "type": "array",
            "description": "a list of sources",
            "items": {
                "type": "object",
                "description": "a mapping with at least name:",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "description": "a name"},
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "description": "the raw schema's name",
                    },
                    **_with_meta(SOURCE_SETTINGS),
                    "tables": {
                        "type": "array",
                        "description": "a list of tables",
                        "items": {
                            "type": "object",
                            "description": "a mapping with at least name:",
                            "required": ["name"],
                            "properties": {
                                "name": {
                                    "type": "string",
                                    "minLength": 1,
                                    "description": "the table's name in the source",
                                },
                                **_with_meta(TABLE_SETTINGS),
                            },
                        },
                    },
                },
            },
        }
    },
}
TABLE_KEYS = frozenset(TABLE_SETTINGS["properties"])
SOURCE_KEYS = frozenset(SOURCE_SETTINGS["properties"])


@dataclass(frozen=True)
class TableConfig:
    """How one source table is loaded."""

    name: str
    mode: Mode
    primary_key: tuple[str, ...] = ()
    cursor: str | None = None
    detect_deletes: bool = False
    lag: timedelta = timedelta(0)
    late_commit_protection: bool = True
    # Event streams: the payload field holding the event id (else the message id).
    event_id_field: str | None = None
    # Secondary indexes of the raw table (each a tuple of columns), e.g. foreign keys
    # the transform joins on.
    indexes: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class SourceConfig:
    """One source database and the tables to copy out of it."""

    name: str
    raw_schema: str
    source_schema: str
    dsn_env: str
    tables: tuple[TableConfig, ...] = field(default_factory=tuple)
    declared_in: Path | None = None
    kind: SourceKind = "postgres"
    # A read waits this long for a lock an application holds, then fails (and is
    # retried), rather than queue and make the application's next queries wait too.
    lock_timeout: timedelta = timedelta(seconds=5)
    statement_timeout: timedelta = timedelta(minutes=30)

    def table(self, name: str) -> TableConfig:
        for table in self.tables:
            if table.name == name:
                return table
        raise DeclarationError(
            f"source {self.name}",
            f"no table {name!r} is declared",
            candidates=[table.name for table in self.tables],
        )


def parse_timeout(value: Any) -> timedelta:
    """``300`` or ``"5 minutes"``/``"30s"``/``"500ms"`` → timedelta (validated by the schema)."""
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = _TIMEOUT_PATTERN.match(str(value))
    if not match:
        raise ValueError(f"not a timeout: {value!r}")
    amount, unit = float(match.group(1)), match.group(2)
    unit = unit[:-1] if unit.endswith("s") and len(unit) > 3 else unit
    return timedelta(seconds=amount * _TIMEOUT_UNITS[unit])


def parse_lag(value: Any, where: str) -> timedelta:
    """``"5 minutes"`` → timedelta; ``0``/``None`` → zero."""
    if value in (None, 0, "0"):
        return timedelta(0)
    match = _INTERVAL.match(str(value))
    if not match:
        raise DeclarationError(
            where, f"lag {value!r} is not an interval like '30 seconds', '5 minutes', '1 hour'"
        )
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{unit + "s": amount})


def _found(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    kind = kinds.get(type(value)) or ("a list" if isinstance(value, list) else "a mapping")
    text = json.dumps(value, default=str)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def _declaration_error(document: Any, error: ValidationError, file: str) -> DeclarationError:
    """One line from a schema violation: file, source, table, field, found, allowed."""
    path = list(error.absolute_path)
    where = [file]
    field = None
    if len(path) >= 2 and path[0] == "sources" and isinstance(path[1], int):
        source = document["sources"][path[1]]
        name = source.get("name") if isinstance(source, dict) else None
        where.append(f"source {name}" if name else f"source #{path[1] + 1}")
        if len(path) >= 4 and path[2] == "tables" and isinstance(path[3], int):
            table = source["tables"][path[3]]
            name = table.get("name") if isinstance(table, dict) else None
            where.append(f"table {name}" if name else f"table #{path[3] + 1}")
    named = [part for part in path if isinstance(part, str)]
    if named and not isinstance(path[-1], int):
        field = named[-1]
        if field in ("tidewater", "meta", "config"):
            field = ".".join(named[named.index("config") if "config" in named else -2 :])
    elif len(named) > 2 and path.index(named[-1]) > 3:
        # an item of a list setting (e.g. indexes), numbered from 1
        field = f"item {path[-1] + 1} of {named[-1]}"
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = schema.get("description", "")
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(schema.get("properties", {})))
        problem = f"unknown setting(s) {', '.join(unknown)}"
        if field:
            problem += f" in {field}"
        allowed = "; allowed: " + ", ".join(sorted(schema.get("properties", {})))
        return DeclarationError(_where(where), problem + allowed)
    if error.validator == "required":
        missing = [key for key in schema.get("required", []) if key not in error.instance]
        what = "table's name in the source" if len(where) > 2 else "source's name"
        return DeclarationError(
            _where(where),
            f"the entry has no {', '.join(missing)}; it is required: add name: <the {what}>",
        )
    subject = field or "the file"
    return DeclarationError(
        _where(where), f"{subject} is {_found(error.instance)}; allowed: {allowed or error.message}"
    )


def _where(parts: list[str]) -> str:
    return parts[0] + (": " + ", ".join(parts[1:]) if parts[1:] else "")


def validate_declaration(document: Any, file: str) -> None:
    """Check a sources file against `DECLARATION_SCHEMA` before anything runs.

    Raises:
        DeclarationError: for the first violation, in file order.
    """
    validator = Draft202012Validator(DECLARATION_SCHEMA)
    errors = sorted(
        validator.iter_errors(document),
        key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in e.absolute_path],
    )
    if errors:
        raise _declaration_error(document, errors[0], file)


def _tidewater_meta(entry: dict[str, Any]) -> Any:
    """``config.meta.tidewater`` (dbt 1.10+), or the older top-level ``meta.tidewater``."""
    in_config = ((entry.get("config") or {}).get("meta") or {}).get("tidewater")
    return in_config if in_config is not None else (entry.get("meta") or {}).get("tidewater")


def _table_config(
    entry: dict[str, Any], where: str, *, default_meta: dict[str, Any] | None = None
) -> TableConfig | None:
    meta = _tidewater_meta(entry)
    meta = default_meta if meta is None else meta
    if meta is None:
        return None
    if meta.get("enabled") is False:
        return None
    primary_key = meta.get("primary_key") or ()
    if isinstance(primary_key, str):
        primary_key = (primary_key,)
    mode = meta.get("mode") or ("incremental" if meta.get("cursor") else "bulk")
    cursor = meta.get("cursor")
    if mode == "incremental" and not cursor:
        raise DeclarationError(
            where, "incremental mode needs a cursor column (e.g. cursor: updated_at)"
        )
    if mode == "incremental" and not primary_key:
        raise DeclarationError(
            where,
            "incremental mode needs primary_key to merge on; tables without a primary key "
            "load with mode: bulk",
        )
    return TableConfig(
        name=entry["name"],
        mode=mode,
        primary_key=tuple(str(column) for column in primary_key),
        cursor=str(cursor) if cursor else None,
        detect_deletes=bool(meta.get("detect_deletes", False)),
        lag=parse_lag(meta.get("lag"), where),
        late_commit_protection=bool(meta.get("late_commit_protection", True)),
        event_id_field=meta.get("event_id_field"),
        indexes=tuple(
            (str(index),) if isinstance(index, str) else tuple(str(c) for c in index)
            for index in meta.get("indexes") or ()
        ),
    )


def _source_config(source: dict[str, Any], path: Path, file: str) -> SourceConfig | None:
    name = str(source["name"])
    where = f"{file}: source {name}"
    meta = _tidewater_meta(source) or {}
    if source.get("loader") != "tidewater" and not meta:
        return None
    kind = meta.get("kind", "postgres")
    tables = []
    for entry in source.get("tables") or []:
        # Every table of an event source is a stream, with or without settings.
        table = _table_config(
            entry,
            f"{where}, table {entry['name']}",
            default_meta={} if kind in EVENT_SOURCE_KINDS else None,
        )
        if table is not None and table.indexes and kind in EVENT_SOURCE_KINDS:
            raise DeclarationError(
                f"{where}, table {entry['name']}",
                "indexes are declared for tables of database sources; an event stream's "
                "raw table is indexed on event_id already, so remove indexes",
            )
        if table is not None:
            tables.append(table)
    return SourceConfig(
        name=name,
        raw_schema=str(source.get("schema") or f"raw_{name}"),
        # MySQL: the database, by default the one the DSN names (see loaders.source_mysql)
        source_schema=str(meta.get("source_schema") or ("" if kind == "mysql" else "public")),
        dsn_env=str(meta.get("dsn_env") or f"TIDEWATER_SOURCE_{name.upper()}_DSN"),
        tables=tuple(tables),
        declared_in=path,
        kind=kind,
        lock_timeout=parse_timeout(meta.get("source_lock_timeout", "5 seconds")),
        statement_timeout=parse_timeout(meta.get("source_statement_timeout", "30 minutes")),
    )


def _documents(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's sources, regrouped as one properties document per file.

    dbt merges ``meta`` down from ``dbt_project.yml`` and the source into each
    table, one key deep: a table's ``tidewater`` entry is either its own or
    inherited whole. An inherited one holds source settings, not table settings,
    so it is left out here (as it is absent from the table's YAML).
    """
    documents: dict[str, dict[str, Any]] = {}
    by_source: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in (manifest.get("sources") or {}).values():
        file = str(entry.get("original_file_path") or "models")
        source_name = str(entry["source_name"])
        source_meta = (entry.get("source_meta") or {}).get("tidewater")
        source = by_source.get((file, source_name))
        if source is None:
            source = {"name": source_name, "schema": entry.get("schema"), "tables": []}
            if entry.get("loader"):
                source["loader"] = entry["loader"]
            if source_meta is not None:
                source["config"] = {"meta": {"tidewater": source_meta}}
            by_source[(file, source_name)] = source
            documents.setdefault(file, {"sources": []})["sources"].append(source)
        table: dict[str, Any] = {"name": entry["name"]}
        meta = _tidewater_meta(entry)
        if meta is not None and meta != source_meta:
            table["config"] = {"meta": {"tidewater": meta}}
        source["tables"].append(table)
    return dict(sorted(documents.items()))


def load_sources(project_dir: Path = DBT_PROJECT_DIR) -> tuple[SourceConfig, ...]:
    """Every source declared for the loaders, as dbt parses the project
    (``manifest.json``: ``.yml`` and ``.yaml`` files, Jinja such as ``env_var``,
    source config from ``dbt_project.yml``), each checked against the schema.

    Raises:
        DeclarationError: a declaration breaks the schema (file, source, table, field).
        ProjectParseFailed: dbt itself rejects the project.
    """
    sources: list[SourceConfig] = []
    for file, document in _documents(parsed_manifest(project_dir)).items():
        validate_declaration(document, file)
        for source in document["sources"]:
            config = _source_config(source, project_dir / file, file)
            if config is not None:
                sources.append(config)
    return tuple(sources)


def select_sources(
    sources: tuple[SourceConfig, ...], names: list[str] | None = None
) -> tuple[SourceConfig, ...]:
    """Filter by name; an unknown name is an error that lists the declared ones."""
    if not names:
        return sources
    known = {source.name: source for source in sources}
    for name in names:
        if name not in known:
            raise DeclarationError("--source", f"no source {name!r} is declared", candidates=known)
    return tuple(known[name] for name in names)


def check_dsn(source: SourceConfig) -> None:
    """Check that the source's DSN variable (if set) holds a connection string, before
    anything connects: libpq's own complaints are tracebacks or echo the string."""
    value = os.environ.get(source.dsn_env)
    if not value:
        return
    if source.kind == "mysql":
        from loaders.dsn import parse_mysql_dsn

        parse_mysql_dsn(value, env=source.dsn_env)
        return
    try:
        params = parse_dsn(value)
    except psycopg2.ProgrammingError:
        raise MalformedDsn(
            source.dsn_env, "neither a postgresql:// URL nor key=value pairs"
        ) from None
    if "://" in value and not value.startswith(("postgresql://", "postgres://")):
        raise MalformedDsn(source.dsn_env, "the URL does not start with postgresql://")
    port = params.get("port")
    if port and not all(part.strip().isdigit() for part in port.split(",")):
        raise MalformedDsn(source.dsn_env, "the port is not a number")


def source_dsn(source: SourceConfig) -> str | None:
    """The source's DSN from its environment variable, if set."""
    return os.environ.get(source.dsn_env) or None
