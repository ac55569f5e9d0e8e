"""Helpers for the broker tests: a declared source for one stream, publishing good,
duplicate and poison messages, and reading what the warehouse holds."""

from __future__ import annotations

import os
import random
import uuid

from events.decode import MAX_EVENT_BYTES
from events.publish import publisher_for
from loaders.config import SourceConfig, TableConfig
from tests.loaders.conftest import execute

POISON_BODIES = (
    b"not json at all",
    b"[1, 2, 3]",
    b'{"text": "a NUL \\u0000 inside"}',
    b"\xff\xfe not utf-8",
    b'{"unterminated": ',
    b'{"big": "' + b"x" * (MAX_EVENT_BYTES + 10) + b'"}',
)


def broker_source(kind: str, url: str, stream: str, *, schema: str = "raw_events") -> SourceConfig:
    """A ``kind`` source with one stream, its URL in a variable of its own."""
    variable = f"TIDEWATER_SOURCE_T{uuid.uuid4().hex[:8].upper()}_DSN"
    os.environ[variable] = url
    return SourceConfig(
        name="events",
        raw_schema=schema,
        source_schema="",
        dsn_env=variable,
        tables=(TableConfig(name=stream, mode="bulk"),),
        kind=kind,  # type: ignore[arg-type]
    )


def publish_batch(
    url: str, stream: str, first: int, count: int, *, rng: random.Random, poison_every: int = 97
) -> tuple[set[str], int]:
    """Publish events ``first … first+count-1`` (ids ``e<n>``); about one in ten is sent
    twice (a producer's retry) and one in ``poison_every`` is followed by a poison
    message. Returns the ids and the number of poison messages."""
    publisher = publisher_for(url)
    ids: set[str] = set()
    poison = 0
    for number in range(first, first + count):
        event_id = f"e{number}"
        body = f'{{"event_id": "{event_id}", "n": {number}, "page": "/p/{number % 7}"}}'.encode()
        publisher.publish(stream, event_id, body)
        ids.add(event_id)
        if rng.random() < 0.1:
            publisher.publish(stream, event_id, body)
        if number % poison_every == 0:
            publisher.publish(stream, f"poison{number}", rng.choice(POISON_BODIES))
            poison += 1
    return ids, poison


def stored_ids(dsn: str, schema: str, stream: str) -> list[str]:
    return [
        row[0]
        for row in execute(dsn, f'select event_id from {schema}."{stream}" order by event_id')
    ]


def dead_letters(dsn: str, schema: str, stream: str) -> list[tuple]:
    return execute(
        dsn,
        f"select position, message_id, error from {schema}._dead_letters where stream = %s "
        "order by position",
        (stream,),
    )


def stream_row(dsn: str, stream: str) -> dict:
    rows = execute(
        dsn,
        "select position, tail, lag_messages, events_stored, dead_letters from ops.event_streams "
        "where stream = %s",
        (stream,),
    )
    assert rows, f"no row for {stream} in ops.event_streams"
    return dict(
        zip(
            ("position", "tail", "lag_messages", "events_stored", "dead_letters"),
            rows[0],
            strict=True,
        )
    )
