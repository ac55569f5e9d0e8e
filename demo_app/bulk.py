"""Streaming COPY: rows go to the server in chunks, never one INSERT per row."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

T = TypeVar("T")


class ChunkReader:
    """A file-like object over an iterable of COPY text chunks.

    ``read`` hands out one whole chunk per call, whatever size is asked for
    (psycopg2 sends any length it gets), so only one chunk is in memory at a
    time while the server parses the previous one.
    """

    def __init__(self, chunks: Iterable[str]) -> None:
        self._chunks = iter(chunks)

    def read(self, size: int = -1) -> str:
        """The next non-empty chunk, or ``""`` at the end."""
        for chunk in self._chunks:
            if chunk:
                return chunk
        return ""


def copy_chunks(
    cur: Cursor,
    table: str,
    columns: Sequence[str],
    chunks: Iterable[str],
    *,
    freeze: bool = False,
) -> None:
    """``COPY table (columns) FROM STDIN`` fed from text chunks.

    ``freeze`` writes the rows already frozen; PostgreSQL allows it only for a
    table created or truncated in the current transaction.
    """
    statement = sql.SQL("copy {table} ({columns}) from stdin{freeze}").format(
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(sql.Identifier(column) for column in columns),
        freeze=sql.SQL(" with (freeze)") if freeze else sql.SQL(""),
    )
    cur.copy_expert(statement, ChunkReader(chunks), size=1 << 20)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetch(items: Iterable[T], *, depth: int = 2) -> Iterator[T]:
    """Produce ``items`` in a background thread, at most ``depth`` ahead.

    While psycopg2 waits for the server (it releases the GIL there), the next
    rows are already being made: generating and loading overlap on two cores.
    An error in the producer is raised in the consumer.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    cancelled = threading.Event()

    def put(item: object) -> bool:
        while not cancelled.is_set():
            try:
                buffer.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # handed over to the consumer
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="demo-app-rows", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        cancelled.set()
        thread.join()
