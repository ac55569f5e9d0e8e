"""The per-stream skeleton every broker shares: resume from the warehouse, write each
batch with its position in one transaction, only then acknowledge.

A crash at any point is harmless: before the commit, the batch and its position are
both absent and the next run reads them again; after it, both are there and the
next run starts after them. Redeliveries and producer retries are dropped by
``event_id``. Poison goes to the dead-letter table in the same transaction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

from events.decode import EventColumns, Message, Poison, decode_batch
from events.engine import READ_AHEAD, StreamReader, open_reader
from events.exceptions import (
    BrokerUnreachable,
    EventsError,
    MissingBrokerUrl,
    StreamMissing,
    StreamReset,
)
from events.readahead import ReadAhead
from events.warehouse import (
    BatchWritten,
    Progress,
    StreamRef,
    ensure_stream_tables,
    read_position,
    write_batch,
)
from loaders.config import SourceConfig
from tidewater.db import is_transient
from tidewater.exceptions import TidewaterError

log = logging.getLogger(__name__)
ConnectFn = Callable[[], psycopg2.extensions.connection]
BROKER_KINDS = ("rabbitmq", "nats")
DEFAULT_BATCH = 1000
DEFAULT_MAX_WAIT_S = 0.5
TAIL_REFRESH_S = 5.0
# A drain that sees nothing for this long although the tail is further on stops
# (the stream was truncated under it, or the broker went quiet) and says so.
DRAIN_STALL_S = 10.0


@dataclass
class StreamResult:
    """What draining (or consuming) one stream did."""

    source: str
    stream: str
    kind: str
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    position: int | None = None
    tail: int | None = None
    seconds: float = 0.0
    status: str = "succeeded"
    error: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0


def stream_refs(source: SourceConfig) -> list[StreamRef]:
    return [
        StreamRef(source.name, source.kind, source.raw_schema, table.name, table.event_id_field)
        for table in source.tables
    ]


class RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.samples: list[tuple[float, int]] = []

    def add(self, count: int) -> float:
        now = time.monotonic()
        self.samples.append((now, count))
        self.samples = [(at, n) for at, n in self.samples if now - at <= self.window_s]
        span = max(now - self.samples[0][0], 0.5)
        return sum(n for _, n in self.samples) / span


Decoded = tuple[EventColumns, list[Poison]]


class StreamConsumer:
    """Reads one stream into the warehouse, batch by batch.

    After `begin`, a thread of its own (`ReadAhead`) fetches and decodes the next
    batches while this one writes the current batch; acknowledgements go back through
    that thread after each commit."""

    def __init__(
        self,
        ref: StreamRef,
        reader: StreamReader,
        conn: psycopg2.extensions.connection,
        *,
        batch_size: int = DEFAULT_BATCH,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self.ref = ref
        self.reader = reader
        self.conn = conn
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.result = StreamResult(ref.source, ref.stream, ref.kind)
        self.rate = RateMeter()
        self.caught_up_at = time.time()
        self.tail: int | None = None
        self.tail_read_at = 0.0
        self.read_ahead = ReadAhead(
            reader,
            self.decode,
            batch_size=batch_size,
            max_wait_s=max_wait_s,
            depth=READ_AHEAD,
        )

    def decode(self, messages: list[Message]) -> Decoded:
        return decode_batch(messages, id_field=self.ref.id_field, stream=self.ref.stream)

    def begin(self) -> int | None:
        position = read_position(self.conn, self.ref)
        self.result.position = position
        if self.tail is not None and position is not None and self.tail < position:
            raise StreamReset(self.ref.source, self.ref.stream, self.tail, position)
        self.reader.start(after=position)
        self.read_ahead.start()
        return position

    def close(self) -> None:
        """Stop reading ahead and close the broker connection (never raises)."""
        self.read_ahead.close()

    def refresh_tail(self, *, force: bool = False) -> int | None:
        if force or time.monotonic() - self.tail_read_at > TAIL_REFRESH_S:
            self.tail = self.read_ahead.call(self.reader.tail)
            self.tail_read_at = time.monotonic()
            self.result.tail = self.tail
            position = self.result.position
            if self.tail is not None and position is not None and self.tail < position:
                raise StreamReset(self.ref.source, self.ref.stream, self.tail, position)
        return self.tail

    def step(self) -> BatchWritten | None:
        """One bounded batch: fetch, decode, write with its position, acknowledge."""
        fetched = self.read_ahead.next(self.max_wait_s)
        if fetched is None:
            self.caught_up_at = time.time()
            return None
        messages, (events, poison) = fetched.messages, fetched.prepared
        previous = self.result.position
        if previous is not None and messages[0].position > previous + 1:
            # Messages the broker no longer keeps (retention) or deleted ones.
            log.warning(
                "stream %s: positions %s to %s are gone from the broker (retention or "
                "deletion); reading on from %s",
                self.ref.stream,
                previous + 1,
                messages[0].position - 1,
                messages[0].position,
            )
        end = messages[-1].position
        tail = self.tail if self.tail is not None and self.tail >= end else end
        lag_seconds = 0.0
        if tail > end:
            newest = messages[-1].published_at
            lag_seconds = (
                max(time.time() - newest, 0.0)
                if newest is not None
                else time.time() - self.caught_up_at
            )
        else:
            self.caught_up_at = time.time()
        written = write_batch(
            self.conn,
            self.ref,
            events,
            poison,
            position=end,
            progress=Progress(
                tail=tail, lag_seconds=lag_seconds, events_per_s=self.rate.add(len(events))
            ),
        )
        reader = self.reader
        self.read_ahead.post(lambda: reader.acknowledge(end))  # after the commit, never before
        self.result.stored += written.stored
        self.result.duplicates += written.duplicates
        self.result.dead_letters += written.dead_letters
        self.result.batches += 1
        self.result.position = written.position
        return written

    def record_idle(self) -> None:
        """Write the tail and lag when no batch did (caught up, or nothing to read)."""
        write_batch(
            self.conn,
            self.ref,
            [],
            position=self.result.position,
            progress=Progress(
                tail=self.tail,
                lag_seconds=0.0 if _caught_up(self.result.position, self.tail) else None,
                events_per_s=self.rate.add(0),
            ),
        )


def _caught_up(position: int | None, tail: int | None) -> bool:
    return tail is None or (position is not None and position >= tail)


def drain_stream(
    source: SourceConfig,
    ref: StreamRef,
    connect_warehouse: ConnectFn,
    *,
    batch_size: int = DEFAULT_BATCH,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
) -> StreamResult:
    """Read one stream from the stored position to the tail it has now, then stop."""
    started = time.perf_counter()
    conn = connect_warehouse()
    reader = open_reader(source, ref.stream, batch_size=batch_size)
    consumer = StreamConsumer(ref, reader, conn, batch_size=batch_size, max_wait_s=max_wait_s)
    try:
        tail = consumer.refresh_tail(force=True)
        position = consumer.begin()
        quiet_since = time.monotonic()
        while not _caught_up(position, tail):
            written = consumer.step()
            if written is None:
                if time.monotonic() - quiet_since > DRAIN_STALL_S:
                    raise EventsError(
                        f"stream {ref.stream} stopped delivering at position {position} before "
                        f"its tail {tail}; check the broker, then run the drain again"
                    )
                continue
            quiet_since = time.monotonic()
            position = written.position
        consumer.record_idle()
    finally:
        consumer.close()
        with contextlib.suppress(psycopg2.Error):
            conn.close()
    consumer.result.seconds = time.perf_counter() - started
    return consumer.result


def consume_stream(
    source: SourceConfig,
    ref: StreamRef,
    connect_warehouse: ConnectFn,
    stop: threading.Event,
    *,
    batch_size: int = DEFAULT_BATCH,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    retry_delays: Sequence[float] = (0.5, 1, 2, 5, 10, 30),
) -> StreamResult:
    """Read one stream continuously until ``stop`` is set; reconnect (and resume from
    the stored position) after a transient failure of the warehouse or the broker."""
    started = time.perf_counter()
    failures = 0
    result = StreamResult(ref.source, ref.stream, ref.kind)
    while not stop.is_set():
        conn: psycopg2.extensions.connection | None = None
        reader: StreamReader | None = None
        consumer: StreamConsumer | None = None
        try:
            conn = connect_warehouse()
            reader = open_reader(source, ref.stream, batch_size=batch_size)
            consumer = StreamConsumer(
                ref, reader, conn, batch_size=batch_size, max_wait_s=max_wait_s
            )
            consumer.result = result
            # The tail is for monitoring only here: read it after the first batches.
            consumer.tail_read_at = time.monotonic()
            consumer.begin()
            idle_written = time.monotonic()
            while not stop.is_set():
                written = consumer.step()
                failures = 0
                consumer.refresh_tail()
                if written is None and time.monotonic() - idle_written > TAIL_REFRESH_S:
                    consumer.refresh_tail(force=True)
                    consumer.record_idle()
                    idle_written = time.monotonic()
        except Exception as exc:
            if not _transient(exc) or failures >= len(retry_delays):
                result.status, result.error = "failed", " ".join(str(exc).split())
                raise
            delay = retry_delays[failures]
            failures += 1
            log.warning("stream %s: %s; resuming in %ss", ref.stream, exc, delay)
            stop.wait(delay)
        finally:
            if consumer is not None:
                consumer.close()
            elif reader is not None:
                reader.close()
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
    result.seconds = time.perf_counter() - started
    return result


def _transient(exc: BaseException) -> bool:
    """A lost warehouse or broker connection is retried; a configuration error is not."""
    if isinstance(exc, MissingBrokerUrl | StreamMissing | TidewaterError):
        return isinstance(exc, BrokerUnreachable)
    if isinstance(exc, psycopg2.Error):
        return is_transient(exc)
    return True


def prepare(sources: Sequence[SourceConfig], connect_warehouse: ConnectFn) -> None:
    """Create every declared stream's tables (idempotent)."""
    refs = [ref for source in sources for ref in stream_refs(source)]
    if not refs:
        return
    conn = connect_warehouse()
    try:
        ensure_stream_tables(conn, refs)
    finally:
        conn.close()
