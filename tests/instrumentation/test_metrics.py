"""StatsD metrics: sent over UDP when STATSD_HOST is set, nothing at all otherwise."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator

import psycopg2
import pytest

from tidewater import metrics as metrics_module
from tidewater.metrics import metric_name, metrics, timer
from tidewater.runs import record_job


@pytest.fixture(autouse=True)
def _fresh_sink() -> Iterator[None]:
    """`metrics()` is cached per process: start and end every test without a sink."""
    metrics.cache_clear()
    yield
    metrics.cache_clear()


@pytest.fixture
def statsd_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A UDP socket on a free local port, with STATSD_HOST/PORT pointing at it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("STATSD_PORT", str(listener.getsockname()[1]))
    monkeypatch.delenv("STATSD_PREFIX", raising=False)
    yield listener
    listener.close()


def received(listener: socket.socket, count: int) -> list[str]:
    return [listener.recv(4096).decode() for _ in range(count)]


def test_timings_counters_and_gauges_reach_statsd_under_their_names(
    statsd_listener: socket.socket,
) -> None:
    sink = metrics()
    assert sink.enabled
    sink.timing("load.app.orders.duration", 12.5)
    sink.incr("load.app.orders.succeeded")
    sink.incr("load.app.orders.rows_read", n=250)
    sink.gauge("job.load.rows", 42)
    with timer("report.write"):
        pass
    packets = received(statsd_listener, 5)
    assert packets[:4] == [
        "tidewater.load.app.orders.duration:12.500000|ms",
        "tidewater.load.app.orders.succeeded:1|c",
        "tidewater.load.app.orders.rows_read:250|c",
        "tidewater.job.load.rows:42|g",
    ]
    assert packets[4].startswith("tidewater.report.write:") and packets[4].endswith("|ms")


def test_a_timer_records_even_when_the_block_raises(statsd_listener: socket.socket) -> None:
    with pytest.raises(RuntimeError), metrics().timer("job.load.duration"):
        raise RuntimeError("boom")
    (packet,) = received(statsd_listener, 1)
    assert packet.startswith("tidewater.job.load.duration:") and packet.endswith("|ms")


def test_statsd_prefix_replaces_the_default(
    statsd_listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATSD_PREFIX", "etl.prod")
    metrics().incr("job.load.succeeded")
    assert received(statsd_listener, 1) == ["etl.prod.job.load.succeeded:1|c"]


def test_without_statsd_host_no_socket_is_created_and_nothing_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STATSD_HOST", raising=False)
    opened: list[object] = []

    def no_socket(*args: object, **kwargs: object) -> None:
        opened.append(args)
        raise AssertionError("a socket was created")

    monkeypatch.setattr(socket, "socket", no_socket)
    sink = metrics()
    sink.timing("x", 1.0)
    sink.incr("y", 3)
    sink.gauge("z", 2.5)
    with timer("t"):
        pass
    assert not sink.enabled
    assert opened == []
    assert sink.timer("a") is sink.timer("b")  # a shared no-op, nothing allocated per call


def test_an_unresolvable_statsd_host_disables_metrics_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unresolvable(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setenv("STATSD_HOST", "statsd.invalid")
    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    with caplog.at_level(logging.WARNING, logger=metrics_module.__name__):
        sink = metrics()
    assert not sink.enabled
    assert "unset STATSD_HOST" in caplog.text
    sink.incr("still.fine")


def test_metric_names_keep_each_part_whole() -> None:
    assert metric_name("job", "dbt build", "duration") == "job.dbt_build.duration"
    assert metric_name("load", "app", "a.b:c|d") == "load.app.a_b_c_d"


def test_a_recorded_job_sends_its_duration_status_and_rows(
    statsd_listener: socket.socket, make_database: Callable[[str], str]
) -> None:
    dsn = make_database("metrics")
    with record_job(lambda: psycopg2.connect(dsn), "load") as run:
        run.rows = 42
    packets = received(statsd_listener, 3)
    assert packets[0].startswith("tidewater.job.load.duration:") and packets[0].endswith("|ms")
    assert packets[1] == "tidewater.job.load.succeeded:1|c"
    assert packets[2] == "tidewater.job.load.rows:42|g"
