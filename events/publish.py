"""`publish(stream, event)`: the producer's side, for applications.

The event goes to the broker with its ``event_id`` as the message id, and the call
returns only when the broker has confirmed it (RabbitMQ publisher confirms, JetStream
acks). A producer that crashes or times out publishes again with the same id: the
broker (JetStream's duplicate window) or the warehouse (the unique ``event_id``)
keeps one copy.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Protocol

from events.exceptions import EventsError

URL_ENV = "TIDEWATER_EVENTS_URL"


class Publisher(Protocol):
    def publish(self, stream: str, event_id: str, body: bytes) -> None: ...

    def close(self) -> None: ...


_publishers: dict[tuple[int, str], Publisher] = {}


def publisher_for(url: str) -> Publisher:
    """One cached publisher per broker URL (and process: a fork gets its own)."""
    key = (os.getpid(), url)
    if key not in _publishers:
        if url.startswith(("amqp://", "amqps://")):
            from events.rabbitmq import RabbitPublisher

            _publishers[key] = RabbitPublisher(url)
        elif url.startswith(("nats://", "tls://")):
            from events.jetstream import JetStreamPublisher

            _publishers[key] = JetStreamPublisher(url)
        else:
            raise EventsError(
                f"{URL_ENV} (or url=) must be an amqp:// or nats:// URL; got a "
                f"{url.split(':', 1)[0]!r} URL"
            )
    return _publishers[key]


def publish(stream: str, event: dict[str, Any], *, url: str | None = None) -> str:
    """Publish one event and wait for the broker's confirmation; returns its id.

    Args:
        stream: the stream (RabbitMQ stream queue / JetStream stream) to publish to;
            it is declared if missing.
        event: a JSON-serialisable mapping. Give it an ``event_id`` and reuse it when
            retrying, so a retry is not a second event; one is generated if missing.
        url: the broker, ``amqp://…`` or ``nats://…``; default ``TIDEWATER_EVENTS_URL``.

    Raises:
        PublishNotConfirmed: not confirmed; publish it again with the same id.
    """
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise EventsError(f"set {URL_ENV} to the broker's URL (amqp://… or nats://…) or pass url=")
    event_id = str(event.get("event_id") or uuid.uuid4())
    body = json.dumps({**event, "event_id": event_id}, default=str).encode()
    publisher_for(url).publish(stream, event_id, body)
    return event_id


def close_publishers() -> None:
    for publisher in _publishers.values():
        publisher.close()
    _publishers.clear()
