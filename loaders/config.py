"""The table declaration: read from the dbt sources YAML (``meta.tidewater``).

Tables are declared once, as dbt sources, so raw tables get dbt's freshness
checks and tests and lineage runs from each source table to the marts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml

from loaders.exceptions import DeclarationError
from tidewater.paths import DBT_PROJECT_DIR

Mode = Literal["incremental", "bulk"]
MODES: tuple[Mode, ...] = ("incremental", "bulk")
TABLE_KEYS = frozenset(
    {"mode", "cursor", "primary_key", "detect_deletes", "lag", "late_commit_protection", "enabled"}
)
SOURCE_KEYS = frozenset(
    {"source_schema", "dsn_env", "kind", "source_lock_timeout", "source_statement_timeout"}
)
SourceKind = Literal["postgres", "redshift"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("postgres", "redshift")
_INTERVAL = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day)s?\s*$")


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


def _tidewater_meta(entry: dict[str, Any]) -> Any:
    """``config.meta.tidewater`` (dbt 1.10+), or the older top-level ``meta.tidewater``."""
    in_config = ((entry.get("config") or {}).get("meta") or {}).get("tidewater")
    return in_config if in_config is not None else (entry.get("meta") or {}).get("tidewater")


def _table_config(entry: dict[str, Any], where: str) -> TableConfig | None:
    meta = _tidewater_meta(entry)
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise DeclarationError(where, "meta.tidewater must be a mapping")
    unknown = sorted(set(meta) - TABLE_KEYS)
    if unknown:
        raise DeclarationError(
            where, f"unknown setting(s) {', '.join(unknown)}", candidates=sorted(TABLE_KEYS)
        )
    if meta.get("enabled") is False:
        return None
    primary_key = meta.get("primary_key") or ()
    if isinstance(primary_key, str):
        primary_key = (primary_key,)
    mode = meta.get("mode") or ("incremental" if meta.get("cursor") else "bulk")
    if mode not in MODES:
        raise DeclarationError(where, f"mode {mode!r} is not known", candidates=MODES)
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
        name=str(entry["name"]),
        mode=mode,
        primary_key=tuple(str(column) for column in primary_key),
        cursor=str(cursor) if cursor else None,
        detect_deletes=bool(meta.get("detect_deletes", False)),
        lag=parse_lag(meta.get("lag"), where),
        late_commit_protection=bool(meta.get("late_commit_protection", True)),
    )


def _source_config(source: dict[str, Any], path: Path) -> SourceConfig | None:
    name = str(source.get("name", ""))
    where = f"{path.name}: source {name}"
    meta = _tidewater_meta(source) or {}
    if source.get("loader") != "tidewater" and not meta:
        return None
    unknown = sorted(set(meta) - SOURCE_KEYS)
    if unknown:
        raise DeclarationError(
            where, f"unknown setting(s) {', '.join(unknown)}", candidates=sorted(SOURCE_KEYS)
        )
    kind = meta.get("kind", "postgres")
    if kind not in SOURCE_KINDS:
        raise DeclarationError(where, f"kind {kind!r} is not known", candidates=SOURCE_KINDS)
    tables = []
    for entry in source.get("tables") or []:
        table = _table_config(entry, f"{where}, table {entry.get('name')}")
        if table is not None:
            tables.append(table)
    return SourceConfig(
        name=name,
        raw_schema=str(source.get("schema") or f"raw_{name}"),
        source_schema=str(meta.get("source_schema") or "public"),
        dsn_env=str(meta.get("dsn_env") or f"TIDEWATER_SOURCE_{name.upper()}_DSN"),
        tables=tuple(tables),
        declared_in=path,
        kind=kind,
        lock_timeout=parse_lag(meta.get("source_lock_timeout", "5 seconds"), where),
        statement_timeout=parse_lag(meta.get("source_statement_timeout", "30 minutes"), where),
    )


def load_sources(project_dir: Path = DBT_PROJECT_DIR) -> tuple[SourceConfig, ...]:
    """Every source declared for the loaders in the dbt project's models."""
    sources: list[SourceConfig] = []
    for path in sorted((project_dir / "models").rglob("*.yml")):
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DeclarationError(str(path), f"not valid YAML: {exc}") from exc
        for source in document.get("sources") or []:
            config = _source_config(source, path)
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


def source_dsn(source: SourceConfig) -> str | None:
    """The source's DSN from its environment variable, if set."""
    return os.environ.get(source.dsn_env) or None
