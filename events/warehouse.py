"""The warehouse side every event path shares.

A batch of events is written in ONE transaction together with the stream position it
ends at, under the locks a table load takes (`hold_raw_shared`, `hold_table_load`), so
a crash anywhere leaves both as they were and dbt never reads a batch in flight.
Duplicates are dropped by the primary key on ``event_id``
(``insert … on conflict do nothing``), so a redelivery or a producer's retry lands
once. Tables are created idempotently, one creator at a time (`hold_ddl`). A batch
goes to the server in two round trips (begin, the locks and the stored position; then
one statement, `WRITE_AND_COMMIT`, and the commit); a batch the server refuses is
written again statement by statement.

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
import json
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
    "select position from {} where source_name = %(source)s and stream = %(stream)s for update"
).format(sql.Identifier(OPS_SCHEMA, STREAMS))
# Each column is bound as ONE value: ids as a text[] literal, payloads as one JSON
# array (their own text joined, nothing to escape), epoch seconds and positions as
# number[] literals. psycopg2 adapts a Python list element by element into an
# array[...] expression the server parses as 1,000 constants: both sides cost more.
INSERT_EVENTS = """
    insert into {raw} (event_id, payload, received_at, _stream_position)
    select batch.event_id, batch.payload,
        coalesce(to_timestamp(batch.received_at), now()), batch.position
    from rows from (
        unnest(%(event_ids)s::text []),
        jsonb_array_elements(%(payloads)s::jsonb),
        unnest(%(received_at)s::float8 []),
        unnest(%(positions)s::bigint [])
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
STREAM_COLUMNS = """
    insert into {streams} as streams (source_name, stream, kind, raw_table, position, tail,
        lag_messages, lag_seconds, events_stored, duplicates, dead_letters, events_per_s,
        last_event_at, updated_at)
"""
STREAM_TOTALS = """
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
UPSERT_STREAM = sql.SQL(
    STREAM_COLUMNS
    + """
    values (%(source)s, %(stream)s, %(kind)s, %(raw_table)s, %(position)s, %(tail)s,
        %(lag_messages)s, %(lag_seconds)s, %(stored)s, %(duplicates)s, %(dead)s,
        %(rate)s, to_timestamp(%(last_event_at)s), now())
"""
    + STREAM_TOTALS
).format(streams=sql.Identifier(OPS_SCHEMA, STREAMS))
# The rest of a batch once the locks are held and the replayed part dropped: the
# events, the dead letters and the stream's row (with the counts the inserts return)
# in one statement, then the commit. The counts are kept in a session setting, which
# outlives the commit that follows in the same round trip (the round trip's answer).
WRITE_AND_COMMIT = (
    "with inserted as ("
    + INSERT_EVENTS
    + """    returning 1
),

dead_inserted as (
    insert into {dead} (stream, position, message_id, error, raw)
    select %(stream)s, dead.position, dead.message_id, dead.error, dead.raw
    from unnest(
        %(dead_positions)s::bigint [],
        %(dead_ids)s::text [],
        %(dead_errors)s::text [],
        %(dead_raw)s::bytea []
    ) as dead (position, message_id, error, raw)
    on conflict (stream, position) do nothing
    returning 1
),

written as (
    select
        (select count(*) from inserted) as stored,
        (select count(*) from dead_inserted) as dead_letters
),

stream_row as ("""
    + STREAM_COLUMNS
    + """
    select %(source)s, %(stream)s, %(kind)s, %(raw_table)s, %(position)s, %(tail)s,
        %(lag_messages)s, %(lag_seconds)s, written.stored, %(fresh)s - written.stored,
        written.dead_letters, %(rate)s, to_timestamp(%(last_event_at)s), now()
    from written
"""
    + STREAM_TOTALS
    + """
)

select set_config(
    'tidewater.batch_written', json_build_array(written.stored, written.dead_letters)::text, false
)
from written;
commit;
select current_setting('tidewater.batch_written');
"""
)


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


def _event_columns(events: EventColumns) -> dict[str, str]:
    """The insert's four parameters, one value per column."""
    return {
        "event_ids": _text_array(events.event_ids),
        "payloads": "[" + ",".join(events.payloads) + "]",
        "received_at": _number_array(events.received_at),
        "positions": _number_array(events.positions),
    }


def _insert_events(cur: psycopg2.extensions.cursor, ref: StreamRef, events: EventColumns) -> int:
    if not events:
        return 0
    cur.execute(
        sql.SQL(INSERT_EVENTS).format(raw=ref.identifier),
        _event_columns(events),
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


def _start(
    cur: psycopg2.extensions.cursor, ref: StreamRef, *, read_position: bool, begin: bool = False
) -> int | None:
    """Take the load locks and read (and lock) the stored position: one round trip
    (``begin``: which opens the transaction too)."""
    if not read_position:
        hold_load(cur, ref.raw_table, begin=begin)
        return None
    hold_load(
        cur,
        ref.raw_table,
        then=READ_POSITION,
        params={"source": ref.source, "stream": ref.stream},
        begin=begin,
    )
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
    The whole batch is two round trips (`_write_at_once`) unless the connection is
    already in a transaction: then the batch joins it, statement by statement.
    """
    columns = events if isinstance(events, EventColumns) else EventColumns.of(events)
    if conn.status == psycopg2.extensions.STATUS_READY:
        try:
            return _write_at_once(conn, ref, columns, poison, position=position, progress=progress)
        except psycopg2.DataError:
            pass  # rolled back: written again, event by event
    else:
        try:
            return _write_in_steps(
                conn, ref, columns, poison, position=position, progress=progress, one_by_one=False
            )
        except psycopg2.DataError:
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
    return _write_in_steps(
        conn, ref, columns, poison, position=position, progress=progress, one_by_one=True
    )


def _write_at_once(
    conn: psycopg2.extensions.connection,
    ref: StreamRef,
    events: EventColumns,
    poison: Sequence[Poison],
    *,
    position: int | None,
    progress: Progress,
) -> BatchWritten:
    """The batch in two round trips: begin, the locks and the stored position; then
    `WRITE_AND_COMMIT`. After an error the transaction is rolled back and the
    connection left as it was."""
    autocommit = conn.autocommit
    conn.autocommit = True  # the begin … commit is ours, inside the round trips
    try:
        with conn.cursor() as cur:
            stored_position = _start(cur, ref, read_position=position is not None, begin=True)
            fresh = events.after(stored_position)
            dead = _after(poison, stored_position)
            end = _end(position, stored_position)
            cur.execute(
                sql.SQL(WRITE_AND_COMMIT).format(
                    raw=ref.identifier,
                    streams=sql.Identifier(OPS_SCHEMA, STREAMS),
                    dead=ref.dead_letters,
                ),
                {
                    **_event_columns(fresh),
                    "source": ref.source,
                    "stream": ref.stream,
                    "kind": ref.kind,
                    "raw_table": ref.raw_table,
                    "dead_positions": [item.position for item in dead],
                    "dead_ids": [item.message_id for item in dead],
                    "dead_errors": [item.reason for item in dead],
                    "dead_raw": [psycopg2.Binary(item.body) for item in dead],
                    "position": end,
                    "tail": progress.tail,
                    "lag_messages": _lag(progress.tail, end),
                    "lag_seconds": progress.lag_seconds,
                    "fresh": len(fresh),
                    "rate": progress.events_per_s,
                    "last_event_at": fresh.latest(),
                },
            )
            (written,) = cur.fetchone()
    except BaseException:
        _roll_back(conn)
        raise
    finally:
        if not conn.closed:
            conn.autocommit = autocommit
    stored, dead_letters = json.loads(written)
    replayed = len(events) + len(poison) - len(fresh) - len(dead)
    return BatchWritten(stored, len(fresh) - stored, dead_letters, replayed, end)


def _end(position: int | None, stored_position: int | None) -> int | None:
    """Where the stream stands after the batch (never before the stored position)."""
    if position is not None and stored_position is not None:
        return max(position, stored_position)
    return position


def _lag(tail: int | None, end: int | None) -> int | None:
    return None if tail is None or end is None else max(tail - end, 0)


def _roll_back(conn: psycopg2.extensions.connection) -> None:
    """End the transaction the server has open, if any (never raises)."""
    idle = psycopg2.extensions.TRANSACTION_STATUS_IDLE
    if conn.closed or conn.info.transaction_status == idle:
        return
    with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
        cur.execute("rollback")


def _write_in_steps(
    conn: psycopg2.extensions.connection,
    ref: StreamRef,
    columns: EventColumns,
    poison: Sequence[Poison],
    *,
    position: int | None,
    progress: Progress,
    one_by_one: bool,
) -> BatchWritten:
    """The batch statement by statement; ``one_by_one``: each event under a savepoint,
    what the database refuses becoming a dead letter."""
    with conn, conn.cursor() as cur:
        stored_position = _start(cur, ref, read_position=position is not None)
        fresh = columns.after(stored_position)
        dead = _after(poison, stored_position)
        replayed = len(columns) + len(poison) - len(fresh) - len(dead)
        refused: list[Poison] = []
        if one_by_one:
            stored, refused = _one_by_one(cur, ref, fresh)
        else:
            stored = _insert_events(cur, ref, fresh)
        dead_count = _insert_dead(cur, ref, [*dead, *refused])
        duplicates = len(fresh) - stored - len(refused)
        end = _end(position, stored_position)
        cur.execute(
            UPSERT_STREAM,
            {
                "source": ref.source,
                "stream": ref.stream,
                "kind": ref.kind,
                "raw_table": ref.raw_table,
                "position": end,
                "tail": progress.tail,
                "lag_messages": _lag(progress.tail, end),
                "lag_seconds": progress.lag_seconds,
                "stored": stored,
                "duplicates": duplicates,
                "dead": dead_count,
                "rate": progress.events_per_s,
                "last_event_at": fresh.latest(),
            },
        )
    return BatchWritten(stored, duplicates, dead_count, replayed, end)


def _after(items: Sequence[Poison], position: int | None) -> list[Poison]:
    if position is None:
        return list(items)
    return [item for item in items if item.position is None or item.position > position]
