"""StatsD metrics: sent when STATSD_HOST is set, nothing at all otherwise."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import psycopg2
import pytest

from tidewater import metrics as metrics_module
from tidewater.runs import record_job


@pytest.fixture
def statsd_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(2)
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("STATSD_PORT", str(listener.getsockname()[1]))
    metrics_module.metrics.cache_clear()
    yield listener
    listener.close()
    metrics_module.metrics.cache_clear()


def received(listener: socket.socket, count: int) -> list[str]:
    packets = []
    for _ in range(count):
        packets.append(listener.recv(4096).decode())
    return packets


def test_a_recorded_job_sends_its_duration_and_status(
    statsd_listener: socket.socket, make_database: Callable[[str], str]
) -> None:
    dsn = make_database("metrics")
    with record_job(lambda: psycopg2.connect(dsn), "load") as run:
        run.rows = 42
    packets = received(statsd_listener, 3)
    assert packets[0].startswith("tidewater.job.load.duration:") and packets[0].endswith("|ms")
    assert packets[1] == "tidewater.job.load.succeeded:1|c"
    assert packets[2] == "tidewater.job.load.rows:42|g"


def test_without_statsd_host_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATSD_HOST", raising=False)
    metrics_module.metrics.cache_clear()
    sink = metrics_module.metrics()
    opened: list[object] = []
    monkeypatch.setattr(socket, "socket", lambda *a, **k: opened.append(a))
    sink.timing("x", 1.0)
    sink.incr("y")
    assert opened == []
    metrics_module.metrics.cache_clear()
