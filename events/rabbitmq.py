"""RabbitMQ stream queues over AMQP 0-9-1 (pika): reading and publishing.

A stream queue keeps its messages on disk after they are read; a consumer chooses
where to start with ``x-stream-offset`` and each delivery carries its offset in the
``x-stream-offset`` header. Acknowledgements only return credit (the prefetch bounds
what is in flight: the backpressure); the position that counts is the one committed
in the warehouse.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from events.decode import Message
from events.exceptions import BrokerUnreachable, PublishNotConfirmed, StreamMissing

BROKER = "RabbitMQ"
OFFSET_HEADER = "x-stream-offset"
# How long the tail probe waits for the last chunk, and then for silence after it.
TAIL_FIRST_WAIT_S = 0.5
TAIL_IDLE_S = 0.1
TAIL_MAX_S = 2.0


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


def connect(url: str) -> pika.BlockingConnection:
    """A blocking connection, or `BrokerUnreachable` naming host and reason."""
    try:
        parameters = pika.URLParameters(url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = 5
        return pika.BlockingConnection(parameters)
    except (pika.exceptions.AMQPError, OSError) as exc:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        raise BrokerUnreachable(BROKER, _where(url), reason) from None


def check_stream(channel: BlockingChannel, stream: str) -> None:
    try:
        channel.queue_declare(stream, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            raise StreamMissing(
                BROKER,
                stream,
                "declare it as a stream queue (x-queue-type: stream), or publish with "
                "events.publish, which declares it",
            ) from None
        raise


def declare_stream(channel: BlockingChannel, stream: str) -> None:
    """Declare a durable stream queue (idempotent)."""
    channel.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})


def _published_at(properties: pika.BasicProperties) -> float | None:
    """The AMQP timestamp property (epoch seconds), if the producer set one."""
    return float(properties.timestamp) if properties.timestamp else None


class RabbitStreamReader:
    """Reads one stream queue in offset order; at most ``prefetch`` unacknowledged."""

    broker = BROKER

    def __init__(self, url: str, stream: str, *, prefetch: int) -> None:
        self.url = url
        self.stream = stream
        self.prefetch = prefetch
        self.connection = connect(url)
        self.channel = self.connection.channel()
        check_stream(self.channel, stream)
        self.channel.basic_qos(prefetch_count=prefetch)
        self._buffer: deque[tuple[int, Message]] = deque()
        self._tags: dict[int, int] = {}

    def _on_message(
        self, _channel: Any, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        offset = int((properties.headers or {})[OFFSET_HEADER])
        message = Message(offset, body, properties.message_id, _published_at(properties))
        self._buffer.append((method.delivery_tag, message))

    def start(self, after: int | None) -> None:
        offset: int | str = "first" if after is None else after + 1
        self.channel.basic_consume(
            self.stream,
            self._on_message,
            auto_ack=False,
            arguments={OFFSET_HEADER: offset},
        )

    def fetch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        deadline = time.monotonic() + max_wait_s
        while len(self._buffer) < max_messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.connection.process_data_events(time_limit=min(remaining, 0.05))
        batch = []
        while self._buffer and len(batch) < max_messages:
            tag, message = self._buffer.popleft()
            self._tags[message.position] = tag
            batch.append(message)
        return batch

    def acknowledge(self, through: int) -> None:
        tag = self._tags.get(through)
        if tag is not None:
            self.channel.basic_ack(delivery_tag=tag, multiple=True)
        self._tags = {pos: tag for pos, tag in self._tags.items() if pos > through}

    def tail(self) -> int | None:
        return stream_tail(self.url, self.stream)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def stream_tail(url: str, stream: str) -> int | None:
    """The offset of the last message: read the last chunk (``x-stream-offset:
    last``) on a connection of its own until it goes quiet. None: the stream is empty."""
    connection = connect(url)
    last: list[int] = []

    def on_message(channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        last.append(int(properties.headers[OFFSET_HEADER]))
        channel.basic_ack(method.delivery_tag)

    try:
        channel = connection.channel()
        check_stream(channel, stream)
        channel.basic_qos(prefetch_count=1000)
        channel.basic_consume(stream, on_message, arguments={OFFSET_HEADER: "last"})
        started = time.monotonic()
        while not last and time.monotonic() - started < TAIL_FIRST_WAIT_S:
            connection.process_data_events(time_limit=0.02)
        seen = -1
        while last and len(last) != seen and time.monotonic() - started < TAIL_MAX_S:
            seen = len(last)
            connection.process_data_events(time_limit=TAIL_IDLE_S)
        return max(last) if last else None
    finally:
        with contextlib.suppress(Exception):
            connection.close()


class RabbitPublisher:
    """Publishes events to stream queues with publisher confirms and message ids."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: pika.BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.declared: set[str] = set()

    def _channel(self) -> BlockingChannel:
        if self.channel is None or not self.channel.is_open:
            self.close()
            self.connection = connect(self.url)
            self.channel = self.connection.channel()
            self.channel.confirm_delivery()
            self.declared.clear()
        return self.channel

    def publish(self, stream: str, event_id: str, body: bytes) -> None:
        """Returns once the broker confirmed the message is on disk."""
        channel = self._channel()
        try:
            if stream not in self.declared:
                declare_stream(channel, stream)
                self.declared.add(stream)
            channel.basic_publish(
                "",
                stream,
                body,
                pika.BasicProperties(
                    message_id=event_id,
                    delivery_mode=2,
                    content_type="application/json",
                    timestamp=int(time.time()),
                ),
                mandatory=True,
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            reason = " ".join(str(exc).split()) or exc.__class__.__name__
            raise PublishNotConfirmed(stream, event_id, reason) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.connection is not None:
                self.connection.close()
        self.connection = None
        self.channel = None
