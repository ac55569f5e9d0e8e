"""What the consumer stores and what it calls poison (pure, table-driven)."""

from __future__ import annotations

import json

import pytest

from events.decode import MAX_EVENT_BYTES, Event, Message, Poison, decode_message


@pytest.mark.parametrize(
    ("body", "message_id", "id_field", "expected_id"),
    [
        (b'{"event_id": "p1", "x": 1}', "m1", None, "m1"),  # the message id first
        (b'{"event_id": "p1", "x": 1}', None, None, "p1"),  # then the payload's event_id
        (b'{"event_id": 42}', None, None, "42"),
        (b'{"x": 1}', None, None, "views@7"),  # else the stream position
        (b'{"order_id": "o9", "event_id": "p1"}', "m1", "order_id", "o9"),  # a declared field wins
    ],
)
def test_event_id_comes_from_the_declared_field_the_message_id_or_the_position(
    body: bytes, message_id: str | None, id_field: str | None, expected_id: str
) -> None:
    decoded = decode_message(Message(7, body, message_id), id_field=id_field, stream="views")
    assert isinstance(decoded, Event)
    assert decoded.event_id == expected_id
    assert decoded.payload == body.decode()
    assert decoded.position == 7


@pytest.mark.parametrize(
    ("body", "id_field", "reason"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object, not list"),
        (b'"text"', None, "JSON object, not str"),
        (b"\xff\xfe", None, "not UTF-8"),
        (b'{"a": "\\u0000"}', None, "\\u0000"),
        (b'{"a": "' + b"x" * MAX_EVENT_BYTES + b'"}', None, "larger than"),
        (b'{"order_id": null}', "order_id", "'order_id'"),
        (b'{"event_id": "' + b"i" * 201 + b'"}', None, "longer than 200"),
    ],
)
def test_poison_keeps_its_bytes_position_and_reason(
    body: bytes, id_field: str | None, reason: str
) -> None:
    decoded = decode_message(Message(3, body, None), id_field=id_field, stream="views")
    assert isinstance(decoded, Poison)
    assert reason in decoded.reason
    assert decoded.body == body
    assert decoded.position == 3


def test_an_id_beyond_64_bits_keeps_every_digit() -> None:
    # orjson reads such an integer as a float: two ids would become one
    for number in (2**64 + 1, 2**64 + 2, -(2**70) - 1):
        body = json.dumps({"order_id": number, "price": 1e20}).encode()
        event = decode_message(Message(7, body), id_field="order_id", stream="s")
        assert isinstance(event, Event)
        assert event.event_id == str(number)
