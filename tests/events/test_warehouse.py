"""The warehouse contract every path shares, on a real warehouse: one transaction per
batch with its position, dedupe by event_id, what the database refuses becomes a dead
letter without losing the rest, and a replayed batch is not applied twice."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg2
import pytest

from events.decode import Event, Message, Poison, decode_batch, decode_message
from events.warehouse import (
    Progress,
    StreamRef,
    ensure_stream_tables,
    read_position,
    write_batch,
)
from tests.loaders.conftest import execute
from tidewater.lock import LockTimeout

REF = StreamRef("shop", "rabbitmq", "raw_shop", "orders_placed")


@pytest.fixture
def conn(warehouse_dsn: str):
    connection = psycopg2.connect(warehouse_dsn)
    ensure_stream_tables(connection, [REF])
    ensure_stream_tables(connection, [REF])  # idempotent
    yield connection
    connection.close()


def batch(*bodies: bytes, first: int = 0) -> list:
    return [
        decode_message(Message(first + n, body, None), id_field=None, stream=REF.stream)
        for n, body in enumerate(bodies)
    ]


def test_a_value_the_warehouse_refuses_is_a_dead_letter_and_the_rest_is_stored(
    conn: psycopg2.extensions.connection, warehouse_dsn: str
) -> None:
    # Python's json accepts NaN; jsonb does not: only the database can tell.
    events = batch(
        b'{"event_id": "o1"}', b'{"event_id": "o2", "total": NaN}', b'{"event_id": "o3"}'
    )

    written = write_batch(conn, REF, events, position=2)

    assert (written.stored, written.dead_letters, written.position) == (2, 1, 2)
    assert execute(warehouse_dsn, "select event_id from raw_shop.orders_placed order by 1") == [
        ("o1",),
        ("o3",),
    ]
    ((position, error),) = execute(
        warehouse_dsn, "select position, error from raw_shop._dead_letters"
    )
    assert position == 1
    assert "refused by the warehouse" in error
    assert read_position(conn, REF) == 2
    # the refused batch's transaction is gone and the session is as it was
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert conn.autocommit is False


def test_a_replayed_batch_and_a_repeated_id_are_not_stored_twice(
    conn: psycopg2.extensions.connection, warehouse_dsn: str
) -> None:
    write_batch(conn, REF, batch(b'{"event_id": "a"}', b'{"event_id": "b"}'), position=1)
    # A second consumer replays positions 0-1 and reads on to 2-3 (3 repeats "a").
    replay = batch(
        b'{"event_id": "a"}', b'{"event_id": "b"}', b'{"event_id": "c"}', b'{"event_id": "a"}'
    )

    written = write_batch(conn, REF, replay, position=3)

    assert (written.replayed, written.stored, written.duplicates) == (2, 1, 1)
    assert execute(warehouse_dsn, "select count(*) from raw_shop.orders_placed") == [(3,)]
    row = execute(
        warehouse_dsn,
        "select position, events_stored, duplicates from ops.event_streams where stream = %s",
        (REF.stream,),
    )
    assert row == [(3, 3, 1)]
    # A batch older than the stored position never moves it back.
    assert write_batch(conn, REF, batch(b'{"event_id": "z"}'), position=0).position == 3


def test_a_message_id_with_a_nul_byte_is_a_dead_letter_and_the_stream_moves_on(
    conn: psycopg2.extensions.connection, warehouse_dsn: str
) -> None:
    # An AMQP message id may hold \x00; a text column cannot. Such a message must not
    # fail the batch (the stream would stall on it) nor its own dead letter.
    decoded = [
        decode_message(Message(0, b'{"x": 1}', "ok-1"), id_field=None, stream=REF.stream),
        decode_message(Message(1, b'{"x": 2}', "bad\x00id"), id_field=None, stream=REF.stream),
        decode_message(Message(2, b'{"x": 3}', "ok-3"), id_field=None, stream=REF.stream),
    ]
    events = [item for item in decoded if isinstance(item, Event)]
    poison = [item for item in decoded if isinstance(item, Poison)]

    written = write_batch(conn, REF, events, poison, position=2)

    assert (written.stored, written.dead_letters, written.position) == (2, 1, 2)
    assert execute(warehouse_dsn, "select event_id from raw_shop.orders_placed order by 1") == [
        ("ok-1",),
        ("ok-3",),
    ]
    ((position, message_id, error, raw),) = execute(
        warehouse_dsn, "select position, message_id, error, raw from raw_shop._dead_letters"
    )
    assert position == 1
    assert "\x00" not in message_id and "bad" in message_id
    assert "NUL" in error
    assert bytes(raw) == b'{"x": 2}'


def test_ids_and_payloads_are_stored_exactly_as_sent_with_their_publish_time(
    conn: psycopg2.extensions.connection, warehouse_dsn: str
) -> None:
    # Each column is bound as one array literal: quoting must not change a value.
    awkward = [
        "plain",
        'a "quoted" id',
        "back\\slash\\",
        "{braces},commas",
        "NULL",
        " sp ace ",
        "ü €",
    ]
    messages = [
        Message(n, json.dumps({"event_id": event_id, "n": n}).encode(), None, 1764918000.25 + n)
        for n, event_id in enumerate(awkward)
    ]
    events, poison = decode_batch(messages, id_field=None, stream=REF.stream)

    written = write_batch(conn, REF, events, poison, position=len(awkward) - 1)

    assert (written.stored, written.dead_letters) == (len(awkward), 0)
    rows = execute(
        warehouse_dsn,
        "select event_id, payload, extract(epoch from received_at), _stream_position "
        "from raw_shop.orders_placed order by _stream_position",
    )
    expected = [
        (event_id, {"event_id": event_id, "n": n}, Decimal(str(1764918000.25 + n)), n)
        for n, event_id in enumerate(awkward)
    ]
    assert rows == expected


@pytest.mark.parametrize(
    ("holding", "named"),
    [
        ("lock table ops.raw_lock in exclusive mode", "the raw lock (ops.raw_lock)"),
        (
            "update ops.table_locks set locked_by = 'a transform' where raw_table = %s",
            f"the load lock of {REF.raw_table} (ops.table_locks)",
        ),
    ],
)
def test_a_batch_waits_a_bounded_time_for_each_lock_names_it_and_leaves_the_session_as_it_was(
    conn: psycopg2.extensions.connection,
    warehouse_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    holding: str,
    named: str,
) -> None:
    write_batch(conn, REF, batch(b'{"event_id": "a"}'), position=0)  # the lock rows exist
    monkeypatch.setenv("TIDEWATER_LOCK_TIMEOUT", "0.2")
    with conn.cursor() as cur:
        cur.execute("set lock_timeout = '7s'")
    conn.commit()
    holder = psycopg2.connect(warehouse_dsn, application_name="lock holder")
    try:
        with holder.cursor() as cur:
            cur.execute(holding, (REF.raw_table,))
        with pytest.raises(LockTimeout) as raised:
            write_batch(conn, REF, batch(b'{"event_id": "b"}', first=1), position=1)
    finally:
        holder.close()

    assert raised.value.lock == named
    assert "(lock holder, pid " in str(raised.value)
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert write_batch(conn, REF, batch(b'{"event_id": "b"}', first=1), position=1).stored == 1
    with conn.cursor() as cur:
        cur.execute("show lock_timeout")
        assert cur.fetchone() == ("7s",)


def test_a_batch_without_events_keeps_the_position_and_a_batch_joins_an_open_transaction(
    conn: psycopg2.extensions.connection, warehouse_dsn: str
) -> None:
    write_batch(conn, REF, batch(b'{"event_id": "a"}', b'{"event_id": "b"}'), position=1)
    # what the consumer writes when idle: no events, the tail, no position
    idle = write_batch(conn, REF, [], position=None, progress=Progress(tail=5, lag_seconds=0.0))
    assert (idle.stored, idle.position) == (0, None)
    with conn.cursor() as cur:
        cur.execute("create table kept_with_the_batch (n int)")  # a transaction is open
    write_batch(conn, REF, batch(b'{"event_id": "c"}', first=2), position=2)

    assert execute(warehouse_dsn, "select count(*) from kept_with_the_batch") == [(0,)]
    row = execute(
        warehouse_dsn,
        "select position, tail, lag_messages, events_stored from ops.event_streams "
        "where stream = %s",
        (REF.stream,),
    )
    assert row == [(2, 5, None, 3)]  # no batch knew both the tail and its end


def test_an_id_with_a_lone_surrogate_is_a_dead_letter_and_the_rest_is_stored(
    conn: psycopg2.extensions.connection, warehouse_dsn: str
) -> None:
    # JSON may spell half a UTF-16 pair ("\ud800"); Python reads it, UTF-8 cannot
    # carry it, so the batch must not fail on it (the stream would stall).
    decoded = batch(b'{"event_id": "s1"}', b'{"event_id": "\\ud800"}', b'{"event_id": "s3"}')
    events = [item for item in decoded if isinstance(item, Event)]
    poison = [item for item in decoded if isinstance(item, Poison)]

    written = write_batch(conn, REF, events, poison, position=2)

    assert (written.stored, written.dead_letters, written.position) == (2, 1, 2)
    assert execute(warehouse_dsn, "select event_id from raw_shop.orders_placed order by 1") == [
        ("s1",),
        ("s3",),
    ]
    ((position, error),) = execute(
        warehouse_dsn, "select position, error from raw_shop._dead_letters"
    )
    assert position == 1
    assert "surrogate" in error


def test_a_wait_of_zero_gives_up_at_once_on_the_table_load_lock(
    conn: psycopg2.extensions.connection, warehouse_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lock_timeout = 0 means "wait forever" to PostgreSQL; TIDEWATER_LOCK_TIMEOUT=0 means
    # "do not wait". statement_timeout turns a wait that never ends into another error.
    write_batch(conn, REF, batch(b'{"event_id": "a"}'), position=0)  # the lock rows exist
    monkeypatch.setenv("TIDEWATER_LOCK_TIMEOUT", "0")
    with conn.cursor() as cur:
        cur.execute("set statement_timeout = '5s'")
    conn.commit()
    holder = psycopg2.connect(warehouse_dsn, application_name="lock holder")
    try:
        with holder.cursor() as cur:
            cur.execute(
                "update ops.table_locks set locked_by = 'a transform' where raw_table = %s",
                (REF.raw_table,),
            )
        with pytest.raises(LockTimeout) as raised:
            write_batch(conn, REF, batch(b'{"event_id": "b"}', first=1), position=1)
    finally:
        holder.close()
    assert raised.value.lock == f"the load lock of {REF.raw_table} (ops.table_locks)"
