"""The warehouse side every event path shares.

A batch of events is written in ONE transaction together with the stream position it
ends at, under the locks a table load takes (`hold_raw_shared`, `hold_table_load`), so
a crash anywhere leaves both as they were and dbt never reads a batch in flight.
Duplicates are dropped by the primary key on ``event_id``
(``insert … on conflict do nothing``), so a redelivery or a producer's retry lands
once. Tables are created idempotently, one creator at a time (`hold_ddl`).

Tables:

- ``raw_<source>.<stream>``: ``event_id`` (primary key), ``payload`` (jsonb),
  ``received_at`` (when the broker or collector got it), ``_loaded_at``,
  ``_stream_position`` (offset / sequence; null for the collector).
- ``raw_<source>._dead_letters``: poison messages with their stream, position,
  message id, error and raw bytes. Kept beside the raw data, not in ``ops``: the raw
  bytes are source data (they may hold personal data), so they get the raw schema's
  grants, while ``ops`` is readable by dashboards. ``ops.event_streams`` counts them.
- ``ops.event_streams``: one row per stream: the committed position (the consumer's
  only source of truth on restart) and the monitoring columns (see `STREAMS_TABLE`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from events.decode import Event, EventColumns, Poison
from tidewater.lock import hold_ddl, hold_load
from tidewater.runs import OPS_SCHEMA

DEAD_LETTERS = "_dead_letters"
STREAMS = "event_streams"
STREAMS_TABLE = sql.SQL(
    """
    create table if not exists {} (
        source_name text not null,
        stream text not null,
        kind text not null,
        raw_table text not null,
        position bigint,
        tail bigint,
        lag_messages bigint,
        lag_seconds double precision,
        events_stored bigint not null default 0,
        duplicates bigint not null default 0,
        dead_letters bigint not null default 0,
        events_per_s double precision,
        last_event_at timestamptz,
        updated_at timestamptz not null,
        primary key (source_name, stream)
    )
    """
).format(sql.Identifier(OPS_SCHEMA, STREAMS))
RAW_TABLE = """
    create table if not exists {} (
        event_id text primary key,
        payload jsonb not null,
        received_at timestamptz not null,
        _loaded_at timestamptz not null default now(),
        _stream_position bigint
    )
"""
DEAD_LETTER_TABLE = """
    create table if not exists {} (
        stream text not null,
        position bigint,
        message_id text,
        error text not null,
        raw bytea not null,
        received_at timestamptz not null default now()
    )
"""
READ_POSITION = sql.SQL(
    "select position from {} where source_name = %s and stream = %s for update"
).format(sql.Identifier(OPS_SCHEMA, STREAMS))
# Each column is bound as ONE value: ids as a text[] literal, payloads as one JSON
# array (their own text joined, nothing to escape), epoch seconds and positions as
# number[] literals. psycopg2 adapts a Python list element by element into an
# array[...] expression the server parses as 1,000 constants: both sides cost more.
INSERT_EVENTS = """
    insert into {} (event_id, payload, received_at, _stream_position)
    select batch.event_id, batch.payload,
        coalesce(to_timestamp(batch.received_at), now()), batch.position
    from rows from (
        unnest(%s::text []),
        jsonb_array_elements(%s::jsonb),
        unnest(%s::float8 []),
        unnest(%s::bigint [])
    ) as batch (event_id, payload, received_at, position)
    on conflict (event_id) do nothing
"""
INSERT_DEAD_LETTERS = """
    insert into {} (stream, position, message_id, error, raw)
    select %s, dead.position, dead.message_id, dead.error, dead.raw
    from unnest(%s::bigint [], %s::text [], %s::text [], %s::bytea [])
        as dead (position, message_id, error, raw)
    on conflict (stream, position) do nothing
"""
UPSERT_STREAM = sql.SQL(
    """
    insert into {table} as streams (source_name, stream, kind, raw_table, position, tail,
        lag_messages, lag_seconds, events_stored, duplicates, dead_letters, events_per_s,
        last_event_at, updated_at)
    values (%(source)s, %(stream)s, %(kind)s, %(raw_table)s, %(position)s, %(tail)s,
        %(lag_messages)s, %(lag_seconds)s, %(stored)s, %(duplicates)s, %(dead)s,
        %(rate)s, to_timestamp(%(last_event_at)s), now())
    on conflict (source_name, stream) do update set
        position = coalesce(excluded.position, streams.position),
        tail = coalesce(excluded.tail, streams.tail),
        lag_messages = coalesce(excluded.lag_messages, streams.lag_messages),
        lag_seconds = coalesce(excluded.lag_seconds, streams.lag_seconds),
        events_stored = streams.events_stored + excluded.events_stored,
        duplicates = streams.duplicates + excluded.duplicates,
        dead_letters = streams.dead_letters + excluded.dead_letters,
        events_per_s = coalesce(excluded.events_per_s, streams.events_per_s),
        last_event_at = coalesce(excluded.last_event_at, streams.last_event_at),
        updated_at = now()
    """
).format(table=sql.Identifier(OPS_SCHEMA, STREAMS))


@dataclass(frozen=True)
class StreamRef:
    """One declared stream and where it lands."""

    source: str
    kind: str
    raw_schema: str
    stream: str
    id_field: str | None = None

    @property
    def raw_table(self) -> str:
        return f"{self.raw_schema}.{self.stream}"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.raw_schema, self.stream)

    @property
    def dead_letters(self) -> sql.Identifier:
        return sql.Identifier(self.raw_schema, DEAD_LETTERS)


@dataclass(frozen=True)
class Progress:
    """Monitoring values written with a batch (None: unknown, keep the stored one)."""

    tail: int | None = None
    lag_seconds: float | None = None
    events_per_s: float | None = None


@dataclass(frozen=True)
class BatchWritten:
    """What one committed batch did."""

    stored: int
    duplicates: int
    dead_letters: int
    replayed: int
    position: int | None


def ensure_stream_tables(
    conn: psycopg2.extensions.connection, streams: Sequence[StreamRef]
) -> None:
    """Create the raw schemas, stream tables, dead-letter tables and
    ``ops.event_streams`` if missing (idempotent; one creator at a time)."""
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(OPS_SCHEMA)))
        hold_ddl(cur)
        cur.execute(STREAMS_TABLE)
        for schema in sorted({ref.raw_schema for ref in streams}):
            cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            cur.execute(sql.SQL(DEAD_LETTER_TABLE).format(sql.Identifier(schema, DEAD_LETTERS)))
            cur.execute(
                sql.SQL("create unique index if not exists {} on {} (stream, position)").format(
                    sql.Identifier("_dead_letters_position"),
                    sql.Identifier(schema, DEAD_LETTERS),
                )
            )
        for ref in streams:
            cur.execute(sql.SQL(RAW_TABLE).format(ref.identifier))
            cur.execute(
                sql.SQL("create index if not exists {} on {} (_loaded_at)").format(
                    sql.Identifier(f"{ref.stream}_events_loaded_at"[:63]), ref.identifier
                )
            )


def read_position(conn: psycopg2.extensions.connection, ref: StreamRef) -> int | None:
    """The position the last committed batch of this stream ended at (None: none yet)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("select position from {} where source_name = %s and stream = %s").format(
                sql.Identifier(OPS_SCHEMA, STREAMS)
            ),
            (ref.source, ref.stream),
        )
        row = cur.fetchone()
    return None if row is None else row[0]


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL text[] literal: every element quoted, ``\\`` and ``"`` escaped."""
    quoted = ['"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values]
    return "{" + ",".join(quoted) + "}"


def _number_array(values: Sequence[float | int | None]) -> str:
    """A PostgreSQL bigint[] / float8[] literal (None: NULL)."""
    return "{" + ",".join(["NULL" if value is None else repr(value) for value in values]) + "}"


def _insert_events(cur: psycopg2.extensions.cursor, ref: StreamRef, events: EventColumns) -> int:
    if not events:
        return 0
    cur.execute(
        sql.SQL(INSERT_EVENTS).format(ref.identifier),
        (
            _text_array(events.event_ids),
            "[" + ",".join(events.payloads) + "]",
            _number_array(events.received_at),
            _number_array(events.positions),
        ),
    )
    return cur.rowcount


def _insert_dead(cur: psycopg2.extensions.cursor, ref: StreamRef, poison: list[Poison]) -> int:
    if not poison:
        return 0
    cur.execute(
        sql.SQL(INSERT_DEAD_LETTERS).format(ref.dead_letters),
        (
            ref.stream,
            [dead.position for dead in poison],
            [dead.message_id for dead in poison],
            [dead.reason for dead in poison],
            [psycopg2.Binary(dead.body) for dead in poison],
        ),
    )
    return cur.rowcount


def _one_by_one(
    cur: psycopg2.extensions.cursor, ref: StreamRef, events: EventColumns
) -> tuple[int, list[Poison]]:
    """Insert each event under a savepoint; what the database refuses is poison."""
    stored, poison = 0, []
    for index in range(len(events)):
        event = events.event(index)
        cur.execute("savepoint tidewater_event")
        try:
            stored += _insert_events(cur, ref, EventColumns.of([event]))
        except psycopg2.DataError as exc:
            cur.execute("rollback to savepoint tidewater_event")
            reason = " ".join(str(exc).split())
            poison.append(
                Poison(
                    f"refused by the warehouse: {reason}", event.payload.encode(), event.position
                )
            )
        else:
            cur.execute("release savepoint tidewater_event")
    return stored, poison


def _start(cur: psycopg2.extensions.cursor, ref: StreamRef, *, read_position: bool) -> int | None:
    """Take the load locks and read (and lock) the stored position: one round trip."""
    if not read_position:
        hold_load(cur, ref.raw_table)
        return None
    hold_load(cur, ref.raw_table, then=READ_POSITION, params=(ref.source, ref.stream))
    row = cur.fetchone()
    return None if row is None else row[0]


def write_batch(
    conn: psycopg2.extensions.connection,
    ref: StreamRef,
    events: Sequence[Event] | EventColumns,
    poison: Sequence[Poison] = (),
    *,
    position: int | None,
    progress: Progress = Progress(),
) -> BatchWritten:
    """Write events, dead letters and the position they end at in one transaction.

    Events at or before the stored position (a replay by a second consumer) are
    dropped; the rest are inserted unless their ``event_id`` is already stored. When
    the database refuses a value the batch is written again event by event, and the
    refused ones become dead letters (nothing stalls). ``events`` may come as the
    columns `events.decode.decode_batch` fills, which spares building them here.
    """
    columns = events if isinstance(events, EventColumns) else EventColumns.of(events)
    for attempt in ("batch", "one by one"):
        try:
            with conn, conn.cursor() as cur:
                stored_position = _start(cur, ref, read_position=position is not None)
                fresh = columns.after(stored_position)
                dead = _after(poison, stored_position)
                replayed = len(columns) + len(poison) - len(fresh) - len(dead)
                refused: list[Poison] = []
                if attempt == "batch":
                    stored = _insert_events(cur, ref, fresh)
                else:
                    stored, refused = _one_by_one(cur, ref, fresh)
                dead_count = _insert_dead(cur, ref, [*dead, *refused])
                duplicates = len(fresh) - stored - len(refused)
                end = position
                if position is not None and stored_position is not None:
                    end = max(position, stored_position)
                lag_messages = None
                if progress.tail is not None and end is not None:
                    lag_messages = max(progress.tail - end, 0)
                last_event_at = fresh.latest()
                cur.execute(
                    UPSERT_STREAM,
                    {
                        "source": ref.source,
                        "stream": ref.stream,
                        "kind": ref.kind,
                        "raw_table": ref.raw_table,
                        "position": end,
                        "tail": progress.tail,
                        "lag_messages": lag_messages,
                        "lag_seconds": progress.lag_seconds,
                        "stored": stored,
                        "duplicates": duplicates,
                        "dead": dead_count,
                        "rate": progress.events_per_s,
                        "last_event_at": last_event_at,
                    },
                )
            return BatchWritten(stored, duplicates, dead_count, replayed, end)
        except psycopg2.DataError:
            if attempt != "batch":
                raise
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
    raise AssertionError("unreachable")


def _after(items: Sequence[Poison], position: int | None) -> list[Poison]:
    if position is None:
        return list(items)
    return [item for item in items if item.position is None or item.position > position]
