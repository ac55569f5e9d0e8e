"""The interface a broker implements to be read by the shared consumer.

A broker engine is one small class: it knows its broker, never the warehouse. The
consumer (`events.consumer`) owns the guarantee: it reads the stored position from
the warehouse, asks the reader to `start` after it, writes each batch together with
the position it ends at, and only then calls `acknowledge`. Positions are integers
that grow along the stream (a RabbitMQ stream offset, a JetStream stream sequence;
for Kafka, one reader per partition with its offset).
"""

from __future__ import annotations

import os
from typing import Protocol

from events.decode import Message
from events.exceptions import MissingBrokerUrl
from loaders.config import SourceConfig

# Batches a consumer fetches ahead of the one it is writing (`events.readahead`);
# the broker lets this many, plus the one being written and the one being fetched,
# be unacknowledged at once: the bound on what a consumer holds (backpressure).
READ_AHEAD = 2
DEFAULT_URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "nats": "nats://127.0.0.1:4222",
}


class StreamReader(Protocol):
    """One stream on a broker, read in order from a position on."""

    broker: str

    def start(self, after: int | None) -> None:
        """Deliver from the message after ``after`` (None: from the first one kept)."""

    def fetch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        """Up to ``max_messages`` in position order, waiting at most ``max_wait_s``;
        holds no more than a bounded number in memory (backpressure)."""

    def tail(self) -> int | None:
        """The position of the last message in the stream now (None: empty)."""

    def acknowledge(self, through: int) -> None:
        """Everything up to ``through`` is committed in the warehouse."""

    def close(self) -> None:
        """Release the connection (never raises)."""


def broker_url(source: SourceConfig) -> str:
    """The source's broker URL from its DSN variable."""
    value = os.environ.get(source.dsn_env)
    if not value:
        raise MissingBrokerUrl(source.name, source.dsn_env, DEFAULT_URLS[source.kind])
    return value


def open_reader(source: SourceConfig, stream: str, *, batch_size: int) -> StreamReader:
    """A reader for one declared stream of a broker source."""
    url = broker_url(source)
    if source.kind == "rabbitmq":
        from events.rabbitmq import RabbitStreamReader

        return RabbitStreamReader(url, stream, prefetch=(READ_AHEAD + 2) * batch_size)
    if source.kind == "nats":
        from events.jetstream import JetStreamReader

        return JetStreamReader(url, stream, max_pending=(READ_AHEAD + 2) * batch_size)
    raise ValueError(f"source {source.name} of kind {source.kind} has no broker to read")
