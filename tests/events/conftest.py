"""Fixtures for the event tests: an empty warehouse (the embedded server of
`tests/conftest.py`), the real RabbitMQ and NATS services, and unique stream names
that are deleted afterwards. A broker that cannot be reached skips its tests with a
message naming it, and fails them when ``CI=true`` (CI starts the services)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

RABBITMQ_URL = os.environ.get(
    "TIDEWATER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
)
NATS_URL = os.environ.get("TIDEWATER_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def warehouse_dsn(make_database: Callable[[str], str]) -> str:
    return make_database("wh")


def unreachable(what: str, url: str, reason: str) -> None:
    message = f"{what} is not reachable at {url} ({reason}); start it to run these tests"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: a missing service fails the run)")
    pytest.skip(message)


@pytest.fixture
def rabbitmq_url() -> str:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except Exception as exc:
        unreachable("RabbitMQ", RABBITMQ_URL, " ".join(str(exc).split()) or type(exc).__name__)
    return RABBITMQ_URL


@pytest.fixture
def nats_url() -> str:
    import nats

    async def check() -> None:
        client = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
        try:
            await client.jetstream().account_info()
        finally:
            await client.close()

    try:
        asyncio.run(check())
    except Exception as exc:
        unreachable("NATS JetStream", NATS_URL, " ".join(str(exc).split()) or type(exc).__name__)
    return NATS_URL


@pytest.fixture
def stream_name() -> str:
    return f"twt_ev_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rabbit_stream(rabbitmq_url: str, stream_name: str) -> Iterator[str]:
    """A fresh stream queue, deleted after the test."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    connection.channel().queue_declare(
        stream_name, durable=True, arguments={"x-queue-type": "stream"}
    )
    connection.close()
    yield stream_name
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    with contextlib.suppress(Exception):
        connection.channel().queue_delete(stream_name)
    connection.close()


@pytest.fixture
def nats_stream(nats_url: str, stream_name: str) -> Iterator[str]:
    """A fresh JetStream stream (subject: its name), deleted after the test."""
    import nats

    async def run(action: str) -> None:
        client = await nats.connect(nats_url)
        try:
            js = client.jetstream()
            if action == "add":
                await js.add_stream(name=stream_name, subjects=[stream_name])
            else:
                await js.delete_stream(stream_name)
        finally:
            await client.close()

    asyncio.run(run("add"))
    yield stream_name
    with contextlib.suppress(Exception):
        asyncio.run(run("delete"))
