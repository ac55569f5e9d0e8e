"""From a broker message or a posted object to an event, or to the reason it is poison.

The consumer, not the broker, decides what is poison: a message is poison when it is
not a JSON object in UTF-8, has no usable id, is too large, or holds what a jsonb
column cannot (``\\u0000``). Poison goes to the dead-letter table and never stalls a
stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

# A jsonb column refuses this escape; a message holding it is poison, not a crash.
_NUL_ESCAPE = "\\u0000"
MAX_EVENT_BYTES = 256 * 1024
MAX_ID_CHARS = 200


@dataclass(frozen=True)
class Message:
    """One message as a broker delivered it (``published_at``: epoch seconds, which
    cost nothing per message; the warehouse turns them into timestamps)."""

    position: int
    body: bytes
    message_id: str | None = None
    published_at: float | None = None


@dataclass(frozen=True)
class Event:
    """An event ready for the warehouse: its id and its payload as JSON text
    (``received_at``: epoch seconds)."""

    event_id: str
    payload: str
    received_at: float | None = None
    position: int | None = None


@dataclass
class EventColumns:
    """A batch of events as the columns the warehouse's insert binds, filled while
    decoding (one append per column instead of an object per event)."""

    event_ids: list[str] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)
    received_at: list[float | None] = field(default_factory=list)
    positions: list[int | None] = field(default_factory=list)

    @classmethod
    def of(cls, events: Iterable[Event]) -> EventColumns:
        columns = cls()
        for event in events:
            columns.append(event.event_id, event.payload, event.received_at, event.position)
        return columns

    def __len__(self) -> int:
        return len(self.event_ids)

    def append(
        self, event_id: str, payload: str, received_at: float | None, position: int | None
    ) -> None:
        self.event_ids.append(event_id)
        self.payloads.append(payload)
        self.received_at.append(received_at)
        self.positions.append(position)

    def event(self, index: int) -> Event:
        return Event(
            self.event_ids[index],
            self.payloads[index],
            self.received_at[index],
            self.positions[index],
        )

    def after(self, position: int | None) -> EventColumns:
        """The events after ``position`` (and those without one): what a replay adds."""
        if position is None or all(at is None or at > position for at in self.positions):
            return self
        keep = [n for n, at in enumerate(self.positions) if at is None or at > position]
        return EventColumns(
            [self.event_ids[n] for n in keep],
            [self.payloads[n] for n in keep],
            [self.received_at[n] for n in keep],
            [self.positions[n] for n in keep],
        )

    def latest(self) -> float | None:
        """The newest ``received_at`` (None: none known)."""
        return max((at for at in self.received_at if at is not None), default=None)


@dataclass(frozen=True)
class Poison:
    """A message the consumer will not store, and why."""

    reason: str
    body: bytes
    position: int | None = None
    message_id: str | None = None


def _usable_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str) and str(value).strip():
        return str(value)
    return None


_BEYOND_64_BITS = float(2**63)


def _parse(text: str) -> Any:
    """orjson (a third of the standard parser's time per event). What it refuses goes
    through ``json`` again, which words the reason as people know it; so does an
    object with an integer beyond 64 bits at the top, which orjson turns into a float
    (an id field must keep every digit, or two ids could become one)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if isinstance(value, dict):
        for field in value.values():
            if type(field) is float and abs(field) >= _BEYOND_64_BITS and field.is_integer():
                return json.loads(text)
    return value


def check_payload(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed object, or why it cannot be stored."""
    if len(text) > MAX_EVENT_BYTES:
        return None, f"event is larger than {MAX_EVENT_BYTES} bytes"
    if _NUL_ESCAPE in text:
        return None, "event holds \\u0000, which a jsonb column cannot store"
    try:
        value = _parse(text)
    except ValueError as exc:
        return None, f"not valid JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"an event is a JSON object, not {type(value).__name__}"
    return value, None


def event_id_of(
    value: dict[str, Any], *, message_id: str | None, id_field: str | None
) -> tuple[str | None, str | None]:
    """The id: the declared field, else the broker's message id, else ``event_id``."""
    if id_field:
        found = _usable_id(value.get(id_field))
        if found is None:
            return None, f"field {id_field!r} (the declared event_id_field) is missing or empty"
    else:
        found = message_id or _usable_id(value.get("event_id"))
    if found is not None and len(found) > MAX_ID_CHARS:
        return None, f"event id is longer than {MAX_ID_CHARS} characters"
    if found is not None and "\x00" in found:
        return None, "event id holds a NUL byte (\\x00), which a text column cannot store"
    if found is not None and not found.isascii() and not _encodes(found):
        return (
            None,
            "event id holds a lone UTF-16 surrogate (e.g. \\ud800), which UTF-8 cannot store",
        )
    return found, None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(message_id: str | None) -> str | None:
    """The broker's message id as a dead letter can keep it (a NUL byte or a lone
    surrogate written out)."""
    if message_id is None:
        return None
    kept = message_id.replace("\x00", "\\x00")
    return kept if _encodes(kept) else kept.encode("utf-8", "backslashreplace").decode("utf-8")


def _poison(message: Message, reason: str) -> Poison:
    return Poison(reason, message.body, message.position, _storable(message.message_id))


def _decode(message: Message, *, id_field: str | None, stream: str) -> tuple[str, str] | Poison:
    """A broker message → its event id and payload text (the id from the declared
    field, the message id, the payload's ``event_id``, else the stream position), or
    poison."""
    if len(message.body) > MAX_EVENT_BYTES:
        return _poison(message, f"event is larger than {MAX_EVENT_BYTES} bytes")
    try:
        text = message.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _poison(message, f"not UTF-8: {exc}")
    value, reason = check_payload(text)
    if value is None:
        return _poison(message, reason or "unreadable")
    event_id, reason = event_id_of(value, message_id=message.message_id, id_field=id_field)
    if reason is not None:
        return _poison(message, reason)
    if event_id is None:
        # No id anywhere: the stream position is unique within the stream, so a
        # redelivery still lands once (a producer's retry, though, is a new event).
        event_id = f"{stream}@{message.position}"
    return event_id, text


def decode_message(message: Message, *, id_field: str | None, stream: str) -> Event | Poison:
    """A broker message → event or poison (see `_decode`)."""
    decoded = _decode(message, id_field=id_field, stream=stream)
    if isinstance(decoded, Poison):
        return decoded
    return Event(decoded[0], decoded[1], message.published_at, message.position)


def decode_batch(
    messages: Iterable[Message], *, id_field: str | None, stream: str
) -> tuple[EventColumns, list[Poison]]:
    """Broker messages → the columns of their events, and the poison among them."""
    columns, poison = EventColumns(), []
    for message in messages:
        decoded = _decode(message, id_field=id_field, stream=stream)
        if isinstance(decoded, Poison):
            poison.append(decoded)
        else:
            columns.append(decoded[0], decoded[1], message.published_at, message.position)
    return columns, poison
