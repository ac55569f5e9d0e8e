"""The source engine: everything the per-table skeleton (`loaders.pipeline`) asks
of a source database, behind one small interface.

The skeleton owns what every load shares — the warehouse session, its locks, the
raw table, the stage, merges, marks, run records and retries — and calls an
engine for the source side, in this order::

    engine = Engine(source, connect_source)     # one connection, one load attempt
    snapshot = engine.open_snapshot(table)        # look at open writers, then snapshot
    columns = engine.columns(table)               # validate the declaration
    engine.copy_out(..., sink)                    # rows as COPY input, into a pipe
    engine.keys_unique(...) / engine.find_split_key(...)
    engine.key_summary(raw)                       # delete detection
    engine.end_read()                             # release the source
    engine.close()

Everything from `open_snapshot` to `end_read` happens in one consistent snapshot
of the source. The source is read once per window: the skeleton takes the new mark
(and the row counts) from the rows staged in the warehouse, so they are computed
from exactly the rows loaded.

Adding a source kind is one module with a `SourceEngine` subclass and one line in
`loaders.engines.ENGINES`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import IO, Any, ClassVar, Literal

from loaders.catalog import Column
from loaders.config import SourceConfig, TableConfig
from loaders.deletes import Checksum
from loaders.extract import ALL_ROWS, ReadWindow, Snapshot
from loaders.load import RawTable
from loaders.results import DEFAULT_OPTIONS, ConnectFn, LoadOptions

CopyFormat = Literal["text", "csv", "binary"]


class SourceEngine(ABC):
    """One load attempt's view of one source database.

    Class attributes describe what the skeleton may rely on:

    - ``kind``: the ``meta.tidewater.kind`` this engine serves.
    - ``copy_format``: what `copy_out` writes (PostgreSQL COPY ``text``, or ``csv``
      with ``\\N`` as NULL), unless `choose_format` picks another for a load (the
      instance's ``format``).
    - ``checksum``: how `key_summary` hashes keys, so the warehouse side of a delete
      comparison hashes the same way (`loaders.deletes.Checksum`).
    - ``detects_deletes``: whether `key_summary` and bucket reads are available
      (``detect_deletes: true`` is otherwise reported and skipped; bulk loads still
      mark rows that are gone).
    - ``sees_open_transactions``: whether `open_snapshot` can list the writers open
      at the snapshot. When False, late-commit protection is the table's ``lag``
      alone (the next read starts at the mark minus lag).
    """

    kind: ClassVar[str]
    copy_format: ClassVar[CopyFormat] = "text"
    checksum: ClassVar[Checksum] = "hashtext"
    sees_open_transactions: ClassVar[bool] = True
    detects_deletes: ClassVar[bool] = True

    def __init__(
        self, source: SourceConfig, connect: ConnectFn, *, options: LoadOptions = DEFAULT_OPTIONS
    ) -> None:
        self.source = source
        self.options = options
        self.connect = connect  # for a second connection, e.g. to diagnose bad data
        self.connection: Any = connect()
        self.format: CopyFormat = self.copy_format

    def choose_format(
        self, columns: Sequence[Column], *, warehouse: str, warehouse_version: int
    ) -> CopyFormat:
        """The format `copy_out` writes in this load (kept as ``format``), given the
        columns as the warehouse holds them, the warehouse's kind and its server
        version (``server_version``, e.g. 150004). Called once, before any read."""
        return self.format

    # -- connecting ------------------------------------------------------------

    @classmethod
    @abstractmethod
    def connector(cls, source: SourceConfig, dsn: str) -> ConnectFn:
        """A function that opens one new connection to the source (credentials from
        ``dsn``); raises a `LoaderError` that names ``source.dsn_env``, never the DSN."""

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        """Whether an error of this engine's driver is a passing fault (retried). The
        skeleton already retries psycopg2's transient errors."""
        return False

    # -- one consistent read ---------------------------------------------------

    @abstractmethod
    def open_snapshot(self, table: TableConfig) -> Snapshot:
        """Look at the transactions open on the source, then start one consistent,
        read-only snapshot; every read below happens in it. With
        ``table.detect_deletes``, the returned snapshot may carry the source's delete
        counter (``source_deletes``; None: reconcile on every load)."""

    @abstractmethod
    def columns(self, table: TableConfig) -> tuple[Column, ...]:
        """The table's columns with their warehouse types, after checking that the
        table, its primary key and its cursor exist (`DeclarationError` otherwise)."""

    def declared_ancestors(self, table: TableConfig) -> list[str]:
        """Declared tables of this source that ``table`` is a partition of."""
        return []

    @abstractmethod
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
        """Write the rows of ``columns`` in ``window`` (cursor filter; all rows when
        ``window.read_from`` is None), or in the delete-detection ``buckets`` of a raw
        table, to ``sink`` in ``format``."""

    @abstractmethod
    def keys_unique(self, table: str, keys: Sequence[str]) -> bool:
        """Whether the source itself keeps ``keys`` unique (a primary key or a unique
        index on some of them)."""

    @abstractmethod
    def find_split_key(
        self,
        table: TableConfig,
        columns: Sequence[Column],
        window: ReadWindow,
    ) -> tuple[list[object], int, int] | None:
        """A key of the read window that holds different rows anywhere in the table:
        (example key values, how many different rows, how many such keys), or None."""

    @abstractmethod
    def key_summary(self, raw: RawTable) -> dict[int, tuple[int, int]]:
        """Per key bucket (`loaders.deletes`): row count and sum of key hashes."""

    def translate_error(self, exc: BaseException, where: str) -> BaseException | None:
        """A loader error for a driver error the source raised (a lock or statement
        timeout), or None to let it through unchanged."""
        return None

    def locate_invalid_text(self, table: TableConfig) -> str:
        """When the warehouse rejected a text value as not UTF-8: where it is."""
        return ""

    @abstractmethod
    def end_read(self) -> None:
        """End the snapshot (release the source's locks and snapshot)."""

    def close(self) -> None:
        """Close the connection; never raises."""
        with contextlib.suppress(Exception):  # a connection already lost is closed enough
            self.connection.close()
