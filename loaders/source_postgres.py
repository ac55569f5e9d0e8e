"""PostgreSQL as a source: a repeatable-read, read-only snapshot taken just after a
look at every open transaction (`loaders.extract.open_snapshot`), rows streamed
with ``COPY … TO STDOUT`` and catalog questions asked of ``pg_catalog``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from loaders.catalog import (
    Column,
    binary_safe,
    declared_ancestors,
    source_keeps_unique,
    validate_table,
)
from loaders.config import SourceConfig, TableConfig
from loaders.deletes import bucket_filter, summarize
from loaders.exceptions import SourceLocked, SourceStatementTimeout
from loaders.extract import (
    ALL_ROWS,
    ReadWindow,
    Snapshot,
    build_query,
    configure_session,
    copy_out,
    find_split_key,
    open_snapshot,
)
from loaders.load import RawTable
from loaders.results import DEFAULT_OPTIONS, ConnectFn, LoadOptions
from loaders.source_engine import CopyFormat, SourceEngine
from tidewater.db import connect


class PostgresSource(SourceEngine):
    """A PostgreSQL source (``kind: postgres``, the default)."""

    kind = "postgres"
    copy_format = "text"
    checksum = "hashtext"
    sees_open_transactions = True

    connection: psycopg2.extensions.connection

    def __init__(
        self, source: SourceConfig, connect: ConnectFn, *, options: LoadOptions = DEFAULT_OPTIONS
    ) -> None:
        super().__init__(source, connect, options=options)
        self.cursor = self.connection.cursor()

    @classmethod
    def connector(cls, source: SourceConfig, dsn: str) -> ConnectFn:
        return lambda: connect(dsn, what="source", application_name="tidewater-loader")

    def open_snapshot(self, table: TableConfig) -> Snapshot:
        snapshot = open_snapshot(
            self.connection,
            relation=(self.source.source_schema, table.name) if table.detect_deletes else None,
            lock_timeout=self.source.lock_timeout,
            statement_timeout=self.source.statement_timeout,
        )
        self.cursor = self.connection.cursor()
        return snapshot

    def choose_format(
        self, columns: Sequence[Column], *, warehouse: str, warehouse_version: int
    ) -> CopyFormat:
        """Binary COPY into a PostgreSQL warehouse of the same major version when every
        column's type allows it (`loaders.catalog.binary_safe`): the select casts each
        column to its warehouse type, so every value arrives in the raw column's own
        type and neither server formats or parses text. Text otherwise."""
        self.format = "text"
        if (
            self.options.binary_copy
            and warehouse == "postgres"
            and warehouse_version // 10000 == self.connection.server_version // 10000
            and binary_safe(self.cursor, [column.warehouse_type for column in columns])
        ):
            self.format = "binary"
        return self.format

    def columns(self, table: TableConfig) -> tuple[Column, ...]:
        return validate_table(self.cursor, self.source, table)

    def declared_ancestors(self, table: TableConfig) -> list[str]:
        return declared_ancestors(self.cursor, self.source, table)

    def copy_out(
        self,
        table: str,
        columns: Sequence[Column],
        sink: IO[bytes],
        *,
        cursor: str | None = None,
        window: ReadWindow = ALL_ROWS,
        buckets: tuple[RawTable, Sequence[int]] | None = None,
    ) -> None:
        query, params = build_query(
            self.source.source_schema,
            table,
            columns,
            cursor_column=cursor,
            read_from=window.read_from,
            read_after=window.after,
            extra_filter=bucket_filter(buckets[0], list(buckets[1])) if buckets else None,
        )
        copy_out(self.cursor, query, params, sink, binary=self.format == "binary")

    def keys_unique(self, table: str, keys: Sequence[str]) -> bool:
        return source_keeps_unique(self.cursor, self.source.source_schema, table, tuple(keys))

    def find_split_key(
        self, table: TableConfig, columns: Sequence[Column], window: ReadWindow
    ) -> tuple[list[object], int, int] | None:
        assert table.cursor is not None
        return find_split_key(
            self.cursor,
            self.source.source_schema,
            table.name,
            columns,
            table.primary_key,
            cursor_column=table.cursor,
            read_from=window.read_from,
            read_after=window.after,
        )

    def key_summary(self, raw: RawTable) -> dict[int, tuple[int, int]]:
        return summarize(
            self.cursor,
            raw,
            sql.Identifier(self.source.source_schema, raw.name),
            live_only=False,
        )

    def translate_error(self, exc: BaseException, where: str) -> BaseException | None:
        if not _raised_by(exc, self.connection):
            return None
        if isinstance(exc, psycopg2.errors.LockNotAvailable):
            return SourceLocked(where, self.source.lock_timeout)
        if isinstance(exc, psycopg2.errors.QueryCanceled):
            return SourceStatementTimeout(where, self.source.statement_timeout)
        return None

    def locate_invalid_text(self, table: TableConfig) -> str:
        """Find the first key and column holding bytes that are not valid UTF-8 (on
        a connection of its own: the load's transaction has failed)."""
        return _locate_invalid_text(self.connect, self.source, table)

    def end_read(self) -> None:
        self.connection.rollback()


def _raised_by(exc: BaseException, conn: psycopg2.extensions.connection) -> bool:
    """Whether a statement on ``conn`` raised the error (COPY errors of the source
    side reach the consumer through the pipe, with the source's cursor)."""
    cursor = getattr(exc, "cursor", None)
    return cursor is not None and cursor.connection is conn


def _locate_invalid_text(
    connect_source: ConnectFn, source: SourceConfig, table: TableConfig
) -> str:
    """Find the first key and column holding bytes that are not valid UTF-8."""
    conn = connect_source()
    try:
        conn.autocommit = True
        configure_session(
            conn, lock_timeout=source.lock_timeout, statement_timeout=source.statement_timeout
        )
        cur = conn.cursor()
        columns = validate_table(cur, source, table)
        texts = [
            c.name
            for c in columns
            if c.warehouse_type in ("text", "character varying")
            or c.warehouse_type.startswith(("character varying(", "character("))
        ]
        keys = list(table.primary_key) or [columns[0].name]
        if not texts:
            return ""
        cur.execute(
            sql.SQL("select {}, {} from {}").format(
                sql.SQL(", ").join(
                    sql.SQL("cast({} as text)").format(sql.Identifier(k)) for k in keys
                ),
                sql.SQL(", ").join(
                    sql.SQL("convert_to({}, 'SQL_ASCII')").format(sql.Identifier(c)) for c in texts
                ),
                sql.Identifier(source.source_schema, table.name),
            )
        )
        for row in cur:
            for name, value in zip(texts, row[len(keys) :], strict=True):
                if value is None:
                    continue
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    key = ", ".join(f"{k}={v}" for k, v in zip(keys, row, strict=False))
                    return (
                        f" (first at key {key}, column {name}); fix the value at the source "
                        "or convert the column (e.g. with convert_from) in a view and load that"
                    )
        return ""
    except psycopg2.Error:
        return ""
    finally:
        conn.close()
