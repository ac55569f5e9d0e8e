"""NATS JetStream (nats-py): reading and publishing, on the same contract as RabbitMQ.

Each declared table is a JetStream stream of that name (subject: its name, unless the
stream says otherwise). The reader makes an ephemeral pull consumer that starts at
the sequence after the one stored in the warehouse; the broker's consumer state is
never trusted for where to resume. It acknowledges (ack policy ``all``: one ack for
the last message of a batch) only after the batch is committed. nats-py is asyncio; the reader and publisher run their own event
loop, so the shared consumer stays plain blocking code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from events.decode import Message
from events.exceptions import BrokerUnreachable, PublishNotConfirmed, StreamMissing

BROKER = "NATS JetStream"
MSG_ID_HEADER = "Nats-Msg-Id"
CONNECT_TIMEOUT_S = 5.0
# How long past its expiry a pull request that never reported its end is waited for.
REQUEST_GRACE_S = 1.0


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 4222}"


async def _connect(url: str) -> Any:
    """A connection, or `BrokerUnreachable` within ``CONNECT_TIMEOUT_S`` (nats-py keeps
    retrying a refused first connection by itself, so the wait is bounded here)."""
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    try:
        return await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=2,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                error_cb=on_error,
            ),
            CONNECT_TIMEOUT_S,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        cause = errors[-1] if errors else exc
        reason = " ".join(str(cause).split()) or cause.__class__.__name__
        raise BrokerUnreachable(BROKER, _where(url), reason) from None


async def _stream_info(js: Any, stream: str) -> api.StreamInfo:
    try:
        return await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise StreamMissing(
            BROKER,
            stream,
            f"add it (nats stream add, or events.publish, which adds it with subject {stream!r})",
        ) from None


def _sequence_and_time(msg: Any) -> tuple[int, float]:
    """The stream sequence and publish time (epoch seconds) from the ack subject
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``
    (nats-py's ``msg.metadata`` parses the same at four times the cost; it still
    reads the longer form with a domain and an account hash)."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]) / 1e9
    metadata = msg.metadata
    return metadata.sequence.stream, metadata.timestamp.timestamp()


class JetStreamReader:
    """Reads one JetStream stream in sequence order; at most ``max_pending`` unacked.

    Pull requests go out by hand (``CONSUMER.MSG.NEXT`` with ``batch`` and
    ``expires``) to an inbox whose callback collects the messages: nats-py's own
    ``fetch`` waits for each message with a timeout of its own (a task per message),
    which made the client, not the broker or the warehouse, the limit."""

    broker = BROKER

    def __init__(self, url: str, stream: str, *, max_pending: int) -> None:
        self.url = url
        self.stream = stream
        self.max_pending = max_pending
        self.loop = asyncio.new_event_loop()
        self.nc = self.loop.run_until_complete(_connect(url))
        self.js = self.nc.jetstream()
        self.info = self.loop.run_until_complete(_stream_info(self.js, stream))
        self.consumer: str | None = None
        self.subscription: Any = None
        self.inbox = ""
        self.next_subject = ""
        self._received: list[Any] = []
        self._status: list[Any] = []  # status messages (the end of a pull request)
        self._arrived: asyncio.Event | None = None
        self._open = 0  # messages the open pull request may still deliver
        self._request_ends = 0.0  # when the open pull request expires (monotonic)
        self._wanted = 0
        self._batch_ends: dict[int, str] = {}  # position → ack subject of a batch's last

    async def _on_message(self, msg: Any) -> None:
        headers = msg.headers
        if headers and headers.get(api.Header.STATUS):
            if headers.get(api.Header.STATUS) != api.StatusCode.CONTROL_MESSAGE:
                self._status.append(msg)
                self._open = 0
        else:
            self._received.append(msg)
            self._open -= 1
        if self._arrived is not None and (len(self._received) >= self._wanted or self._open <= 0):
            self._arrived.set()

    def start(self, after: int | None) -> None:
        subjects = list(self.info.config.subjects or [self.stream])
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.ALL
            if after is None
            else api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if after is None else after + 1,
            ack_policy=api.AckPolicy.ALL,
            ack_wait=600.0,
            max_ack_pending=self.max_pending,
            inactive_threshold=60.0,
            filter_subjects=subjects if len(subjects) > 1 else None,
        )

        async def begin() -> None:
            info = await self.js.add_consumer(self.stream, config)
            self.consumer = info.name
            self.next_subject = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{info.name}"
            self.inbox = self.nc.new_inbox()
            self.subscription = await self.nc.subscribe(
                self.inbox, cb=self._on_message, pending_msgs_limit=4 * self.max_pending
            )
            self._arrived = asyncio.Event()

        self.loop.run_until_complete(begin())

    async def _fetch(self, max_messages: int, max_wait_s: float) -> list[Any]:
        assert self._arrived is not None
        if self._open > 0 and time.monotonic() > self._request_ends + REQUEST_GRACE_S:
            # Its end (408) never came: ask again rather than wait on it forever (a
            # second open request only delivers what follows, in order, to the same inbox).
            self._open = 0
        if self._open <= 0 and len(self._received) < max_messages:
            self._open = max_messages - len(self._received)
            self._request_ends = time.monotonic() + max_wait_s
            request = {"batch": self._open, "expires": int(max_wait_s * 1e9)}
            await self.nc.publish(self.next_subject, json.dumps(request).encode(), reply=self.inbox)
        self._wanted = max_messages
        if len(self._received) < max_messages and self._open > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                # a little longer than the request lives, so its end usually arrives
                await asyncio.wait_for(self._arrived.wait(), max_wait_s + 0.05)
        for status in self._status:
            code = status.headers.get(api.Header.STATUS)
            description = status.headers.get(api.Header.DESCRIPTION, "")
            if code not in (api.StatusCode.NO_MESSAGES, api.StatusCode.REQUEST_TIMEOUT) and (
                code != api.StatusCode.CONFLICT or "deleted" in description.lower()
            ):
                raise nats.js.errors.APIError.from_msg(status)
        self._status.clear()
        batch, self._received = self._received[:max_messages], self._received[max_messages:]
        return batch

    def fetch(self, max_messages: int, max_wait_s: float) -> list[Message]:
        received = self.loop.run_until_complete(self._fetch(max_messages, max(max_wait_s, 0.05)))
        batch = []
        for msg in received:
            position, published_at = _sequence_and_time(msg)
            headers = msg.headers or {}
            batch.append(Message(position, msg.data, headers.get(MSG_ID_HEADER), published_at))
        if batch:
            self._batch_ends[batch[-1].position] = received[-1].reply
        return batch

    def acknowledge(self, through: int) -> None:
        """Acknowledge (ack policy ``all``) the last batch end at or before ``through``."""
        ends = [position for position in self._batch_ends if position <= through]
        if ends:
            reply = self._batch_ends[max(ends)]
            self.loop.run_until_complete(self.nc.publish(reply, b"+ACK"))
        self._batch_ends = {pos: r for pos, r in self._batch_ends.items() if pos > through}

    def tail(self) -> int | None:
        info = self.loop.run_until_complete(_stream_info(self.js, self.stream))
        return info.state.last_seq or None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.subscription is not None:
                self.loop.run_until_complete(self.subscription.unsubscribe())
        with contextlib.suppress(Exception):
            if self.consumer is not None:
                self.loop.run_until_complete(
                    asyncio.wait_for(self.js.delete_consumer(self.stream, self.consumer), 2)
                )
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.nc.close())
        with contextlib.suppress(Exception):
            self.loop.close()


class JetStreamPublisher:
    """Publishes with JetStream acks and ``Nats-Msg-Id`` (the broker drops a repeat
    within the stream's duplicate window; the warehouse drops any later one)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.nc: Any = None
        self.js: Any = None
        self.declared: set[str] = set()

    def _ensure(self) -> Any:
        if self.nc is None or self.nc.is_closed:
            self.nc = self.loop.run_until_complete(_connect(self.url))
            self.js = self.nc.jetstream()
            self.declared.clear()
        return self.js

    async def _declare(self, js: Any, stream: str) -> None:
        try:
            await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await js.add_stream(name=stream, subjects=[stream])

    def publish(self, stream: str, event_id: str, body: bytes) -> None:
        js = self._ensure()
        try:
            if stream not in self.declared:
                self.loop.run_until_complete(self._declare(js, stream))
                self.declared.add(stream)
            self.loop.run_until_complete(
                js.publish(stream, body, headers={MSG_ID_HEADER: event_id}, timeout=5)
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self.close()
            reason = " ".join(str(exc).split()) or exc.__class__.__name__
            raise PublishNotConfirmed(stream, event_id, reason) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.nc is not None:
                self.loop.run_until_complete(self.nc.close())
        self.nc = None
