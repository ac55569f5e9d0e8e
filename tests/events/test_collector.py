"""The HTTP collector: 2xx only after the commit, a repeated event_id acknowledged
and stored once, bad events answered 4xx with their reason while the rest are
stored, and clients that retry through collector kills (kill -9) lose nothing."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from events.collector import MAX_REQUEST_BYTES, run_collector
from events.warehouse import StreamRef
from loaders.pipeline import connector
from tests.loaders.conftest import execute

SCHEMA = "raw_web"
KILL_ROUNDS = int(os.environ.get("TIDEWATER_EVENTS_KILL_ROUNDS", "100"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(refs: list[StreamRef], warehouse_dsn: str, port: int) -> None:
    run_collector(refs, connector(warehouse_dsn, what="warehouse"), host="127.0.0.1", port=port)


class Collector:
    """The collector in a forked process, restartable and killable."""

    def __init__(self, refs: list[StreamRef], warehouse_dsn: str) -> None:
        self.refs = refs
        self.warehouse_dsn = warehouse_dsn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/events"
        self.process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.process = context.Process(
            target=_serve, args=(self.refs, self.warehouse_dsn, self.port)
        )
        self.process.start()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                requests.get(self.url.replace("/v1/events", "/health"), timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.02)
        raise AssertionError("the collector did not start")

    def kill(self) -> None:
        assert self.process is not None
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join()


@pytest.fixture
def collector(warehouse_dsn: str) -> Iterator[Collector]:
    refs = [
        StreamRef("web", "http", SCHEMA, "page_views"),
        StreamRef("web", "http", SCHEMA, "clicks"),
    ]
    running = Collector(refs, warehouse_dsn)
    running.start()
    running.wait_ready()
    yield running
    running.kill()


def ids_in(dsn: str, stream: str) -> list[str]:
    return [row[0] for row in execute(dsn, f"select event_id from {SCHEMA}.{stream} order by 1")]


def test_post_stores_events_once_and_rejects_bad_ones_with_their_reason(
    collector: Collector, warehouse_dsn: str
) -> None:
    one = {"event_id": "a1", "stream": "page_views", "path": "/"}
    assert requests.post(collector.url, json=one, timeout=10).json() == {"accepted": 1}
    # The same event again (a client's retry): acknowledged, not stored twice.
    assert requests.post(collector.url, json=one, timeout=10).status_code == 200
    batch = [
        {"event_id": "a2", "stream": "page_views", "path": "/cart"},
        {"event_id": "c1", "stream": "clicks", "button": "buy"},
        {"stream": "page_views", "path": "/no-id"},
        {"event_id": "a3", "stream": "nowhere"},
        {"event_id": "a4", "stream": "page_views", "text": "nul \u0000"},
        "not an object",
        {"event_id": "a5", "stream": "page_views", "blob": "x" * 300_000},
        {"event_id": "a1", "stream": "page_views", "path": "/"},
    ]
    response = requests.post(collector.url, json=batch, timeout=10)
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 3
    reasons = {item["index"]: item["reason"] for item in body["rejected"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert "event_id" in reasons[2]
    assert "page_views" in reasons[3]
    assert "u0000" in reasons[4]
    assert "larger" in reasons[6]
    assert ids_in(warehouse_dsn, "page_views") == ["a1", "a2"]
    assert ids_in(warehouse_dsn, "clicks") == ["c1"]
    payload = execute(
        warehouse_dsn, f"select payload->>'path' from {SCHEMA}.page_views where event_id = 'a2'"
    )
    assert payload == [("/cart",)]

    bad_json = requests.post(collector.url, data=b"{nope", timeout=10)
    assert bad_json.status_code == 400
    assert "JSON" in bad_json.json()["error"]
    too_large = requests.post(
        collector.url, data=b"[" + b" " * MAX_REQUEST_BYTES + b"]", timeout=10
    )
    assert too_large.status_code == 413
    row = execute(
        warehouse_dsn,
        "select events_stored, duplicates from ops.event_streams where stream = 'page_views'",
    )
    assert row == [(2, 2)]


def test_clients_retrying_through_collector_kills_store_every_event_once(
    collector: Collector, warehouse_dsn: str
) -> None:
    rng = random.Random(int(time.time()))
    acknowledged: set[str] = set()
    lock = threading.Lock()
    wanted: set[str] = set()
    batches = []
    for client in range(3):
        for number in range(100):
            ids = [f"k{client}-{number}-{i}" for i in range(rng.randint(1, 8))]
            wanted.update(ids)
            events = [{"event_id": i, "stream": "page_views", "n": number} for i in ids]
            if rng.random() < 0.1:
                events.append({"stream": "page_views", "no": "id"})  # rejected, every time
            batches.append((client, events, ids))
    done = threading.Event()

    def client_loop(client: int) -> None:
        session = requests.Session()
        for owner, events, ids in batches:
            if owner != client:
                continue
            while True:  # retry on anything but 2xx / 4xx, as a client should
                try:
                    response = session.post(collector.url, json=events, timeout=5)
                except requests.RequestException:
                    time.sleep(0.01)
                    continue
                if response.status_code in (200, 422):
                    with lock:
                        acknowledged.update(ids)
                    break
                assert response.status_code >= 500, response.text
                time.sleep(0.01)

    clients = [threading.Thread(target=client_loop, args=(n,)) for n in range(3)]
    for thread in clients:
        thread.start()
    rounds = 0
    try:
        while rounds < KILL_ROUNDS:
            collector.wait_ready()
            time.sleep(rng.uniform(0.0, 0.06))
            collector.kill()
            rounds += 1
            # Whatever was acknowledged before the kill is committed.
            with lock:
                seen = set(acknowledged)
            stored = set(ids_in(warehouse_dsn, "page_views"))
            assert seen <= stored, f"acknowledged but not stored: {sorted(seen - stored)[:5]}"
            collector.start()
    finally:
        done.set()
        for thread in clients:
            thread.join(timeout=60)
    assert rounds == KILL_ROUNDS
    assert ids_in(warehouse_dsn, "page_views") == sorted(wanted)
