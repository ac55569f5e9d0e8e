"""The warehouse engine: everything the per-table skeleton (`loaders.pipeline`) asks
of the warehouse, behind one small interface.

The skeleton owns the order of a table's load — session, locks, raw table, stage,
merge, mark, all in one warehouse transaction, with retries around it — and calls a
warehouse engine for the statements, in this order::

    warehouse = warehouse_for(options.warehouse_type, options=options)
    warehouse.begin(cur, batch_id)                    # session settings
    warehouse.hold_locks(cur, "raw_app.orders")       # before anything is written
    warehouse.fit_columns(cur, columns)               # types the warehouse has
    warehouse.ensure_schema(cur, schema); warehouse.ensure_state_table(cur)
    warehouse.prepare_raw_table(cur, ...)             # create or evolve (Redshift: and lock it)
    warehouse.read_mark(cur, source, table)
    warehouse.create_stage(cur, raw); warehouse.copy_into(cur, stage, names, produce, ...)
    warehouse.merge(cur, raw, batch_id, ...)          # or replace / mark_missing_deleted
    warehouse.settle_created_table(cur, raw)          # a table created by this load
    warehouse.ensure_indexes(cur, raw)
    warehouse.write_mark(cur, source, table, mark, batch_id)
    connection.commit()

`PostgresWarehouse` sends exactly the statements the skeleton always sent (it calls
`loaders.load`, `loaders.state` and `tidewater.lock`); `loaders.warehouse_redshift.
RedshiftWarehouse` sends only what Redshift has. Class attributes say what an engine
can do: ``detects_deletes`` (key checksums per range), ``direct_first_load`` (a first
load COPYs straight into the raw table), ``has_indexes`` (declared secondary indexes are
built), ``checks_row_versions`` (a duplicated key
holding the same row twice passes the uniqueness check).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO, ClassVar, Literal

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from loaders.catalog import Column, fit_to_warehouse
from loaders.load import (
    STAGE,
    RawTable,
    check_unique_keys,
    copy_in,
    create_stage,
    ensure_indexes,
    ensure_schema,
    mark_missing_deleted,
    merge_stage,
    prepare_raw_table,
    replace_if_changed,
    settle_batch_default,
)
from loaders.results import DEFAULT_OPTIONS, LoadOptions
from loaders.state import Mark, ensure_state_table, read_mark, write_mark
from tidewater.lock import hold_ddl, hold_raw_shared, hold_table_load

WarehouseKind = Literal["postgres", "redshift"]
# What a read staged, in SQL both warehouses speak (Redshift has no filter clause).
WINDOW_STATS = (
    "select count(*), max({cursor}), "
    "sum(case when {cursor} <= %(previous_mark)s then 1 else 0 end) from {relation}"
)
CopyFormat = Literal["text", "csv", "binary"]
# Writes the rows of one read into a byte stream (a source engine's `copy_out`).
Produce = Callable[[IO[bytes]], None]


class Pipe:
    """Stream what one thread writes into what another reads, through an OS pipe, so
    no table is ever held in memory."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=1 << 16)
        self.writer = os.fdopen(write_fd, "wb", buffering=1 << 16)
        self.error: BaseException | None = None

    def produce(self, work: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # re-raised in the consuming thread
                self.error = exc
            finally:
                with contextlib.suppress(OSError):
                    self.writer.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def stream_between(produce: Produce, consume: Callable[[IO[bytes]], int]) -> int:
    """Run ``produce(sink)`` in a thread and ``consume(stream)`` here, joined by a pipe;
    returns what ``consume`` returns (rows). The producer's error wins when it failed
    first (the consumer then saw a stream that ended, maybe mid-row)."""
    pipe = Pipe()
    thread = pipe.produce(lambda: produce(pipe.writer))
    try:
        count = consume(pipe.reader)
    except BaseException:
        producer_failed_first = pipe.error is not None
        pipe.reader.close()  # unblocks the producer if the consumer failed
        thread.join()
        if producer_failed_first:
            assert pipe.error is not None
            raise pipe.error from None
        raise
    pipe.reader.close()
    thread.join()
    if pipe.error is not None:
        raise pipe.error
    return count


class WarehouseEngine(ABC):
    """One warehouse's statements for one table load; every method runs in the
    caller's transaction and commits nothing."""

    kind: ClassVar[WarehouseKind]
    detects_deletes: ClassVar[bool] = True
    direct_first_load: ClassVar[bool] = True
    has_indexes: ClassVar[bool] = True
    checks_row_versions: ClassVar[bool] = True

    def __init__(self, *, options: LoadOptions = DEFAULT_OPTIONS) -> None:
        self.options = options
        self.batch_id = ""

    @abstractmethod
    def begin(self, cur: Cursor, batch_id: str) -> None:
        """Session settings of a load transaction (UTC; the batch id)."""

    @abstractmethod
    def hold_locks(self, cur: Cursor, raw_table: str) -> None:
        """Locks held until commit: no transform reads raw mid-load, and two loads of
        one raw table never run at once. A bounded wait raises `LockTimeout`."""

    @abstractmethod
    def hold_ddl(self, cur: Cursor) -> None:
        """The lock of a transaction that creates raw schemas and the mark table."""

    @abstractmethod
    def existing_schemas(self, cur: Cursor, schemas: Sequence[str]) -> set[str]:
        """Which of ``schemas`` exist."""

    def fit_columns(
        self, cur: Cursor, columns: tuple[Column, ...]
    ) -> tuple[tuple[Column, ...], list[str]]:
        """Columns as this warehouse can hold them, and notes on what changed."""
        return fit_to_warehouse(cur, columns)

    @abstractmethod
    def ensure_schema(self, cur: Cursor, schema: str) -> None: ...

    @abstractmethod
    def ensure_state_table(self, cur: Cursor) -> None: ...

    @abstractmethod
    def prepare_raw_table(
        self,
        cur: Cursor,
        schema: str,
        name: str,
        columns: Sequence[Column],
        primary_key: Sequence[str],
        *,
        sort_key: str | None = None,
    ) -> tuple[RawTable, bool]:
        """Create the raw table or evolve it; returns it and whether it was created."""

    @abstractmethod
    def read_mark(self, cur: Cursor, source: str, table: str) -> Mark | None: ...

    @abstractmethod
    def write_mark(self, cur: Cursor, source: str, table: str, mark: Mark) -> None: ...

    @abstractmethod
    def is_empty(self, cur: Cursor, raw: RawTable) -> bool: ...

    @abstractmethod
    def create_stage(self, cur: Cursor, raw: RawTable, *, name: str = STAGE) -> None:
        """A temporary table shaped like the source columns."""

    @abstractmethod
    def copy_into(
        self,
        cur: Cursor,
        target: sql.Identifier,
        columns: Sequence[str],
        produce: Produce,
        *,
        copy_format: CopyFormat,
    ) -> int:
        """Fill ``target`` with what ``produce`` writes (in ``copy_format``); rows."""

    def window_stats(
        self,
        cur: Cursor,
        relation: sql.Identifier,
        cursor: str,
        previous_mark: datetime | None,
    ) -> tuple[int, datetime | None, int]:
        """Of the rows a read just staged in ``relation`` (a stage, or the raw table a
        first load filled): how many, the largest ``cursor`` value, and how many sit at
        or below ``previous_mark`` (re-read at the boundary)."""
        cur.execute(
            sql.SQL(WINDOW_STATS).format(cursor=sql.Identifier(cursor), relation=relation),
            # ISO text in UTC, typed by the column (psycopg2 would add PostgreSQL's `::`
            # cast; a cursor without a time zone holds UTC, see `loaders.results.aware`)
            {"previous_mark": previous_mark.astimezone(UTC).isoformat() if previous_mark else None},
        )
        rows, maximum, reread = cur.fetchone()
        return int(rows), maximum, int(reread or 0)

    @abstractmethod
    def ensure_indexes(self, cur: Cursor, raw: RawTable) -> None:
        """Indexes merges and incremental models need (none where there are none)."""

    def settle_created_table(self, cur: Cursor, raw: RawTable) -> None:  # noqa: B027
        """After the first rows of a table created in this load: what only its creation
        needed is undone (PostgreSQL: the constant default of ``_batch_id``)."""

    def analyze(self, cur: Cursor, relation: sql.Identifier) -> None:
        cur.execute(sql.SQL("analyze {}").format(relation))

    @abstractmethod
    def check_unique_keys(
        self, cur: Cursor, raw: RawTable, *, where: str, stage: str = STAGE
    ) -> None:
        """Raise `NonUniqueKey` when the stage holds one key with different rows."""

    @abstractmethod
    def merge(
        self, cur: Cursor, raw: RawTable, *, stage: str = STAGE, newest_by: str | None = None
    ) -> tuple[int, int]:
        """Upsert the stage by primary key; (inserted, updated)."""

    @abstractmethod
    def mark_missing_deleted(
        self, cur: Cursor, raw: RawTable, *, keys: str, within: sql.Composable | None = None
    ) -> int:
        """Set ``_deleted_at`` on live rows whose key is not in ``keys``; how many."""

    @abstractmethod
    def replace(self, cur: Cursor, raw: RawTable) -> tuple[int, int]:
        """Keyless bulk load: the raw rows become the stage's; (inserted, deleted)."""


class PostgresWarehouse(WarehouseEngine):
    """PostgreSQL: the statements of `loaders.load`, `loaders.state`, `tidewater.lock`."""

    kind = "postgres"

    def begin(self, cur: Cursor, batch_id: str) -> None:
        self.batch_id = batch_id
        cur.execute("set local timezone = 'UTC'")
        cur.execute("select set_config('tidewater.batch_id', %s, true)", (batch_id,))

    def hold_locks(self, cur: Cursor, raw_table: str) -> None:
        # No transform reads raw while this load is in flight (tidewater.lock.raw_settled).
        hold_raw_shared(cur)
        # Two loads of the same table never run at once, whoever starts them.
        hold_table_load(cur, raw_table)

    def hold_ddl(self, cur: Cursor) -> None:
        hold_ddl(cur)

    def existing_schemas(self, cur: Cursor, schemas: Sequence[str]) -> set[str]:
        cur.execute("select nspname from pg_namespace where nspname = any(%s)", (list(schemas),))
        return {row[0] for row in cur.fetchall()}

    def ensure_schema(self, cur: Cursor, schema: str) -> None:
        ensure_schema(cur, schema)

    def ensure_state_table(self, cur: Cursor) -> None:
        ensure_state_table(cur)

    def prepare_raw_table(
        self,
        cur: Cursor,
        schema: str,
        name: str,
        columns: Sequence[Column],
        primary_key: Sequence[str],
        *,
        sort_key: str | None = None,
    ) -> tuple[RawTable, bool]:
        return prepare_raw_table(cur, schema, name, columns, primary_key, batch_id=self.batch_id)

    def read_mark(self, cur: Cursor, source: str, table: str) -> Mark | None:
        return read_mark(cur, source, table)

    def write_mark(self, cur: Cursor, source: str, table: str, mark: Mark) -> None:
        write_mark(cur, source, table, mark, self.batch_id)

    def is_empty(self, cur: Cursor, raw: RawTable) -> bool:
        cur.execute(sql.SQL("select exists (select from {})").format(raw.identifier))
        return not cur.fetchone()[0]

    def create_stage(self, cur: Cursor, raw: RawTable, *, name: str = STAGE) -> None:
        create_stage(cur, raw, name=name)

    def copy_into(
        self,
        cur: Cursor,
        target: sql.Identifier,
        columns: Sequence[str],
        produce: Produce,
        *,
        copy_format: CopyFormat,
    ) -> int:
        return stream_between(
            produce, lambda stream: copy_in(cur, target, columns, stream, format=copy_format)
        )

    def ensure_indexes(self, cur: Cursor, raw: RawTable) -> None:
        ensure_indexes(cur, raw)

    def settle_created_table(self, cur: Cursor, raw: RawTable) -> None:
        settle_batch_default(cur, raw)

    def check_unique_keys(
        self, cur: Cursor, raw: RawTable, *, where: str, stage: str = STAGE
    ) -> None:
        check_unique_keys(cur, raw, where=where, stage=stage)

    def merge(
        self, cur: Cursor, raw: RawTable, *, stage: str = STAGE, newest_by: str | None = None
    ) -> tuple[int, int]:
        return merge_stage(cur, raw, self.batch_id, stage=stage, newest_by=newest_by)

    def mark_missing_deleted(
        self, cur: Cursor, raw: RawTable, *, keys: str, within: sql.Composable | None = None
    ) -> int:
        return mark_missing_deleted(cur, raw, self.batch_id, keys=keys, within=within)

    def replace(self, cur: Cursor, raw: RawTable) -> tuple[int, int]:
        return replace_if_changed(cur, raw, self.batch_id)


# kind → "module:Class"; a module is imported only when its warehouse is loaded into
# (and names its base class here without this module naming it back).
WAREHOUSES: dict[str, str] = {
    "postgres": "loaders.warehouse_engine:PostgresWarehouse",
    "redshift": "loaders.warehouse_redshift:RedshiftWarehouse",
}


def warehouse_for(
    kind: WarehouseKind, *, options: LoadOptions = DEFAULT_OPTIONS
) -> WarehouseEngine:
    """The engine of a warehouse kind."""
    module, _, name = WAREHOUSES[kind].partition(":")
    engine: type[WarehouseEngine] = getattr(importlib.import_module(module), name)
    return engine(options=options)
