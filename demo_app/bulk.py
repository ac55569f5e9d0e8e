"""Streaming COPY: rows go to the server in chunks, never one INSERT per row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor


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
