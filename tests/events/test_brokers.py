"""RabbitMQ streams and NATS JetStream into the warehouse, effectively once: every
event stored exactly once, poison in the dead letters, the stored position at the
tail, whatever the consumer's crashes (kill -9 at random points)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import signal
import threading
import time

import pytest
from psycopg2 import sql

import events
from events.consumer import consume_stream, drain_stream, prepare, stream_refs
from events.publish import close_publishers
from loaders.pipeline import connector
from tests.events.streams import (
    broker_source,
    dead_letters,
    publish_batch,
    stored_ids,
    stream_row,
)
from tests.loaders.conftest import execute

SCHEMA = "raw_events"
KILL_ROUNDS = int(os.environ.get("TIDEWATER_EVENTS_KILL_ROUNDS", "100"))


@pytest.fixture(params=["rabbitmq", "nats"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(kind, url, stream) of a fresh stream on a real broker."""
    kind = request.param
    if kind == "rabbitmq":
        url = request.getfixturevalue("rabbitmq_url")
        stream = request.getfixturevalue("rabbit_stream")
    else:
        url = request.getfixturevalue("nats_url")
        stream = request.getfixturevalue("nats_stream")
    yield kind, url, stream
    close_publishers()


def test_drain_stores_each_event_once_and_poison_in_dead_letters(
    broker: tuple[str, str, str], warehouse_dsn: str
) -> None:
    kind, url, stream = broker
    source = broker_source(kind, url, stream, schema=SCHEMA)
    connect = connector(warehouse_dsn, what="warehouse")
    ids, poison = publish_batch(url, stream, 1, 600, rng=random.Random(1), poison_every=50)

    results = events.drain([source], connect_warehouse=connect)

    assert [(r.stream, r.status) for r in results] == [(stream, "succeeded")]
    assert stored_ids(warehouse_dsn, SCHEMA, stream) == sorted(ids)
    dead = dead_letters(warehouse_dsn, SCHEMA, stream)
    assert len(dead) == poison == 12
    assert all(error for _, _, error in dead)
    row = stream_row(warehouse_dsn, stream)
    assert row["position"] == row["tail"] == results[0].tail
    assert row["lag_messages"] == 0
    assert row["events_stored"] == len(ids)
    # A second drain finds nothing new; a retried publish after it is still not stored twice.
    publish_batch(url, stream, 1, 5, rng=random.Random(2))
    again = events.drain([source], connect_warehouse=connect)
    assert again[0].stored == 0
    assert again[0].duplicates >= 5 or kind == "nats"  # JetStream drops repeats itself
    assert stored_ids(warehouse_dsn, SCHEMA, stream) == sorted(ids)
    assert stream_row(warehouse_dsn, stream)["position"] == again[0].tail


def _child(kind_of_run: str, source: object, warehouse_dsn: str) -> None:
    connect = connector(warehouse_dsn, what="warehouse")
    (ref,) = stream_refs(source)  # type: ignore[arg-type]
    if kind_of_run == "drain":
        drain_stream(source, ref, connect, batch_size=40, max_wait_s=0.05)  # type: ignore[arg-type]
    else:
        consume_stream(source, ref, connect, threading.Event(), batch_size=40, max_wait_s=0.05)  # type: ignore[arg-type]


def test_consumer_killed_at_random_points_stores_every_event_once(
    broker: tuple[str, str, str], warehouse_dsn: str
) -> None:
    kind, url, stream = broker
    source = broker_source(kind, url, stream, schema=SCHEMA)
    connect = connector(warehouse_dsn, what="warehouse")
    events.drain([source], connect_warehouse=connect)  # creates the tables
    rng = random.Random(int(time.time()))
    context = multiprocessing.get_context("fork")
    all_ids: set[str] = set()
    poison = 0
    next_id = 1
    killed_mid_batch = 0
    for round_number in range(KILL_ROUNDS):
        # Producers keep publishing while consumers die.
        ids, bad = publish_batch(url, stream, next_id, 30, rng=rng, poison_every=23)
        all_ids |= ids
        poison += bad
        next_id += 30
        child = context.Process(
            target=_child,
            args=("drain" if round_number % 2 else "consume", source, warehouse_dsn),
        )
        child.start()
        time.sleep(rng.uniform(0.02, 0.25))
        if child.is_alive():
            killed_mid_batch += 1
            os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode in (0, -signal.SIGKILL), f"consumer failed: exit {child.exitcode}"
    assert killed_mid_batch > KILL_ROUNDS // 2, "most kills must land while a consumer runs"
    stored_by_killed_consumers = len(stored_ids(warehouse_dsn, SCHEMA, stream))
    # The kills land while consumers write (not only before they start).
    assert stored_by_killed_consumers > len(all_ids) // 10, "the killed consumers made no progress"

    results = events.drain([source], connect_warehouse=connect)

    assert results[0].status == "succeeded", results[0].error
    assert stored_ids(warehouse_dsn, SCHEMA, stream) == sorted(all_ids)
    assert len(dead_letters(warehouse_dsn, SCHEMA, stream)) == poison
    row = stream_row(warehouse_dsn, stream)
    assert row["position"] == row["tail"] == results[0].tail
    assert row["events_stored"] == len(all_ids)


def test_consume_runs_until_stopped_and_keeps_up(
    broker: tuple[str, str, str], warehouse_dsn: str
) -> None:
    kind, url, stream = broker
    source = broker_source(kind, url, stream, schema=SCHEMA)
    connect = connector(warehouse_dsn, what="warehouse")
    stop = threading.Event()
    thread = threading.Thread(
        target=events.consume, args=([source],), kwargs={"connect_warehouse": connect, "stop": stop}
    )
    thread.start()
    try:
        ids, _ = publish_batch(url, stream, 1, 300, rng=random.Random(3))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if len(stored_ids(warehouse_dsn, SCHEMA, stream)) == len(ids):
                    break
            except Exception:
                pass
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive(), "consume did not stop when asked"
    assert stored_ids(warehouse_dsn, SCHEMA, stream) == sorted(ids)


def test_a_missing_stream_fails_alone_and_says_how_to_create_it(
    rabbitmq_url: str, rabbit_stream: str, warehouse_dsn: str
) -> None:
    present = broker_source("rabbitmq", rabbitmq_url, rabbit_stream, schema=SCHEMA)
    missing = broker_source("rabbitmq", rabbitmq_url, rabbit_stream + "_nope", schema=SCHEMA)
    missing = dataclasses.replace(missing, name="other", raw_schema="raw_other")
    publish_batch(rabbitmq_url, rabbit_stream, 1, 20, rng=random.Random(4))
    close_publishers()

    results = events.drain(
        [missing, present], connect_warehouse=connector(warehouse_dsn, what="wh")
    )

    by_stream = {result.stream: result for result in results}
    assert by_stream[rabbit_stream + "_nope"].status == "failed"
    assert "x-queue-type: stream" in (by_stream[rabbit_stream + "_nope"].error or "")
    assert by_stream[rabbit_stream].status == "succeeded"
    assert len(stored_ids(warehouse_dsn, SCHEMA, rabbit_stream)) == 20


@pytest.mark.parametrize("kind", ["rabbitmq", "nats"])
def test_an_unreachable_broker_is_named_with_what_to_check(
    kind: str, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("events.jetstream.CONNECT_TIMEOUT_S", 1.0)
    url = "amqp://guest:guest@127.0.0.1:1/%2F" if kind == "rabbitmq" else "nats://127.0.0.1:1"
    source = broker_source(kind, url, "anything", schema=SCHEMA)

    (result,) = events.drain([source], connect_warehouse=connector(warehouse_dsn, what="wh"))

    assert result.status == "failed"
    assert "cannot reach" in (result.error or "")
    assert "127.0.0.1:1" in (result.error or "")
    assert "TIDEWATER_SOURCE_" in (result.error or "")


def test_a_stream_created_again_is_not_silently_skipped(
    rabbitmq_url: str, rabbit_stream: str, warehouse_dsn: str
) -> None:
    import pika

    source = broker_source("rabbitmq", rabbitmq_url, rabbit_stream, schema=SCHEMA)
    connect = connector(warehouse_dsn, what="warehouse")
    publish_batch(rabbitmq_url, rabbit_stream, 1, 30, rng=random.Random(5), poison_every=1000)
    close_publishers()
    assert events.drain([source], connect_warehouse=connect)[0].status == "succeeded"
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.queue_delete(rabbit_stream)
    channel.queue_declare(rabbit_stream, durable=True, arguments={"x-queue-type": "stream"})
    connection.close()
    publish_batch(rabbitmq_url, rabbit_stream, 100, 5, rng=random.Random(6), poison_every=1000)
    close_publishers()

    (result,) = events.drain([source], connect_warehouse=connect)

    assert result.status == "failed"
    assert "deleted and created again" in (result.error or "")
    assert "delete from ops.event_streams" in (result.error or "")


def test_batches_read_ahead_commit_in_order_with_their_positions(
    broker: tuple[str, str, str], warehouse_dsn: str
) -> None:
    """Batches of 5 are read far faster than they are written, so the read-ahead
    queue is full all along: every batch must still commit in stream order, with the
    position it ends at (a batch written after a later one would be dropped as a
    replay, or move the stored position back)."""
    kind, url, stream = broker
    source = broker_source(kind, url, stream, schema=SCHEMA)
    connect = connector(warehouse_dsn, what="warehouse")
    ids, _ = publish_batch(url, stream, 1, 400, rng=random.Random(3), poison_every=10**6)
    (ref,) = stream_refs(source)
    prepare([source], connect)
    result = drain_stream(source, ref, connect, batch_size=5, max_wait_s=0.2)

    assert result.stored == len(set(ids))
    assert stored_ids(warehouse_dsn, SCHEMA, stream) == sorted(set(ids))
    row = stream_row(warehouse_dsn, stream)
    assert row["position"] == row["tail"] == result.tail
    positions = _positions_in_commit_order(warehouse_dsn, stream)
    assert positions == sorted(positions)


def _positions_in_commit_order(dsn: str, stream: str) -> list[int]:
    """Stream positions of the stored rows, in the order their batches committed
    (``_loaded_at`` is the batch transaction's start)."""
    rows = execute(
        dsn,
        sql.SQL("select _stream_position from {} order by _loaded_at, _stream_position").format(
            sql.Identifier(SCHEMA, stream)
        ),
    )
    return [position for (position,) in rows]
