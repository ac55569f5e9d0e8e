"""The HTTP collector (``kind: http``): ``POST /v1/events`` for apps without a broker.

The body is one event or an array of them, each a JSON object with a client-chosen
``event_id``, a ``stream`` (a table declared under a ``kind: http`` source) and its
fields. The answer comes only after the events are committed in the warehouse, so a
client that retries on anything but a 2xx or 4xx loses nothing, and a repeated
``event_id`` is acknowledged without being stored twice:

- 200 ``{"accepted": n}``: every event is stored (now or before).
- 422 ``{"accepted": n, "rejected": [{"index", "event_id", "reason"}]}``: the others
  are stored; the rejected ones never will be (do not retry them).
- 400 (the body is not JSON), 413 (the request is too large): nothing stored.
- 503: the warehouse did not commit; retry the same request.

Requests for one stream share a transaction (group commit): a writer thread per
stream takes every request waiting for it, writes them in one transaction with
`events.warehouse.write_batch`, and then answers them all, so throughput does not
fall to one commit per request. Built on aiohttp: one well-kept package gives the
server and the client used in tests and the benchmark, with a request size limit
built in; the work is I/O on one warehouse connection per stream, for which asyncio
and a thread per stream are enough (no ASGI server and framework pair to keep).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from aiohttp import web

from events.consumer import RateMeter, stream_refs
from events.decode import Event, check_payload, event_id_of
from events.exceptions import NoEventSources
from events.warehouse import Progress, StreamRef, ensure_stream_tables, write_batch
from loaders.config import SourceConfig
from tidewater.runs import durable

log = logging.getLogger(__name__)
ConnectFn = Callable[[], psycopg2.extensions.connection]
PATH = "/v1/events"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 10_000
# A writer takes at most this many events into one transaction.
MAX_GROUP_EVENTS = 5_000


@dataclass
class Pending:
    events: list[Event]
    done: Future


class StreamWriter:
    """One thread per stream: group waiting requests into one transaction each."""

    def __init__(self, ref: StreamRef, connect_warehouse: ConnectFn) -> None:
        self.ref = ref
        self.connect_warehouse = connect_warehouse
        self.queue: queue.Queue[Pending | None] = queue.Queue()
        self.conn: psycopg2.extensions.connection | None = None
        self.rate = RateMeter()
        self.thread = threading.Thread(target=self._run, name=f"collect-{ref.stream}", daemon=True)
        self.thread.start()

    def submit(self, events: list[Event]) -> Future:
        done: Future = Future()
        self.queue.put(Pending(events, done))
        return done

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)
        with contextlib.suppress(Exception):
            if self.conn is not None:
                self.conn.close()

    def _connection(self) -> psycopg2.extensions.connection:
        if self.conn is None or self.conn.closed:
            # A 2xx promises the events survive a crash of the warehouse too.
            self.conn = durable(self.connect_warehouse())
        return self.conn

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            group = [first]
            size = len(first.events)
            while size < MAX_GROUP_EVENTS:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)
                    break
                group.append(more)
                size += len(more.events)
            events = [event for pending in group for event in pending.events]
            try:
                write_batch(
                    self._connection(),
                    self.ref,
                    events,
                    position=None,
                    progress=Progress(
                        tail=None, lag_seconds=0.0, events_per_s=self.rate.add(len(events))
                    ),
                )
            except Exception as exc:
                with contextlib.suppress(Exception):
                    if self.conn is not None:
                        self.conn.close()
                self.conn = None
                for pending in group:
                    pending.done.set_exception(exc)
            else:
                for pending in group:
                    pending.done.set_result(len(pending.events))


def _reject(index: int, event: Any, reason: str) -> dict[str, Any]:
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return {"index": index, "event_id": event_id, "reason": reason}


def validate(
    items: list[Any], streams: dict[str, StreamRef], received_at: float
) -> tuple[dict[str, list[Event]], list[dict[str, Any]]]:
    """Split posted items into valid events by stream and rejections with reasons."""
    by_stream: dict[str, list[Event]] = {}
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            rejected.append(_reject(index, item, "an event is a JSON object"))
            continue
        stream = item.get("stream")
        if not isinstance(stream, str) or stream not in streams:
            known = ", ".join(sorted(streams))
            rejected.append(_reject(index, item, f"stream must be one of: {known}"))
            continue
        ref = streams[stream]
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
        value, reason = check_payload(text)
        if value is None:
            rejected.append(_reject(index, item, reason or "unreadable"))
            continue
        event_id, reason = event_id_of(value, message_id=None, id_field=ref.id_field or "event_id")
        if event_id is None:
            rejected.append(_reject(index, item, reason or "no event_id"))
            continue
        by_stream.setdefault(stream, []).append(Event(event_id, text, received_at))
    return by_stream, rejected


def build_app(
    refs: Sequence[StreamRef],
    connect_warehouse: ConnectFn,
    *,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> web.Application:
    """The collector's application (its writers stop with it)."""
    streams = {ref.stream: ref for ref in refs}
    writers: dict[str, StreamWriter] = {}

    async def post_events(request: web.Request) -> web.Response:
        received_at = time.time()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(
                {
                    "error": f"the request is larger than {max_request_bytes} bytes; send "
                    "fewer events per request"
                },
                status=413,
            )
        try:
            document = json.loads(body)
        except ValueError as exc:
            return web.json_response({"error": f"the body is not valid JSON: {exc}"}, status=400)
        items = document if isinstance(document, list) else [document]
        if not items:
            return web.json_response({"error": "the array holds no events"}, status=400)
        if len(items) > MAX_EVENTS_PER_REQUEST:
            return web.json_response(
                {"error": f"more than {MAX_EVENTS_PER_REQUEST} events in one request"},
                status=413,
            )
        by_stream, rejected = validate(items, streams, received_at)
        for stream in by_stream:
            if stream not in writers:
                writers[stream] = StreamWriter(streams[stream], connect_warehouse)
        futures = [writers[stream].submit(batch) for stream, batch in by_stream.items()]
        try:
            accepted = sum(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        except Exception as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            log.warning("collector: the warehouse did not commit: %s", reason)
            return web.json_response(
                {"error": f"the warehouse did not commit ({reason}); retry the same request"},
                status=503,
                headers={"Retry-After": "1"},
            )
        if rejected:
            return web.json_response({"accepted": accepted, "rejected": rejected}, status=422)
        return web.json_response({"accepted": accepted})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"streams": sorted(streams)})

    async def stop_writers(_app: web.Application) -> None:
        for writer in writers.values():
            writer.stop()

    app = web.Application(client_max_size=max_request_bytes)
    app.router.add_post(PATH, post_events)
    app.router.add_get("/health", health)
    app.on_cleanup.append(stop_writers)
    return app


def http_streams(sources: Sequence[SourceConfig]) -> list[StreamRef]:
    """Every stream of every ``kind: http`` source; a stream name must be unique."""
    refs: list[StreamRef] = []
    seen: dict[str, str] = {}
    for source in sources:
        if source.kind != "http":
            continue
        for ref in stream_refs(source):
            if ref.stream in seen:
                from events.exceptions import EventsError

                raise EventsError(
                    f"stream {ref.stream} is declared by sources {seen[ref.stream]} and "
                    f"{source.name}; a collector stream name must be unique: rename one"
                )
            seen[ref.stream] = source.name
            refs.append(ref)
    if not refs:
        raise NoEventSources(("http",))
    return refs


@contextlib.contextmanager
def running_collector(
    refs: Sequence[StreamRef],
    connect_warehouse: ConnectFn,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[str]:
    """A collector served from a thread of this process for the block (port 0: a free
    one); yields its events URL. For the demo app and scripts; `run_collector` serves
    a deployment."""
    conn = connect_warehouse()
    try:
        ensure_stream_tables(conn, refs)
    finally:
        conn.close()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(refs, connect_warehouse), access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, host, port)
    loop.run_until_complete(site.start())
    bound = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, name="collector", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{bound}{PATH}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=60)
        loop.close()


def run_collector(
    refs: Sequence[StreamRef], connect_warehouse: ConnectFn, *, host: str, port: int
) -> None:
    """Create the stream tables, then serve until SIGINT/SIGTERM (blocks)."""
    conn = connect_warehouse()
    try:
        ensure_stream_tables(conn, refs)
    finally:
        conn.close()
    log.info("collecting %s on http://%s:%s%s", ", ".join(r.stream for r in refs), host, port, PATH)
    web.run_app(
        build_app(refs, connect_warehouse), host=host, port=port, print=None, access_log=None
    )


def serve(
    sources: Sequence[SourceConfig], *, connect_warehouse: ConnectFn, host: str, port: int
) -> None:
    """The collector for the declared ``kind: http`` sources (blocks until SIGINT/SIGTERM)."""
    refs = http_streams(sources)
    if not refs:
        raise NoEventSources(("http",))
    started = time.monotonic()
    run_collector(refs, connect_warehouse, host=host, port=port)
    log.info("collector stopped after %.0fs", time.monotonic() - started)
