"""Timers and counters to StatsD (and so to Graphite and Grafana).

Enabled when ``STATSD_HOST`` names a host (``STATSD_PORT``, default 8125;
``STATSD_PREFIX``, default ``tidewater``). Otherwise every call is a no-op: no
socket is opened and nothing is sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Protocol


class Metrics(Protocol):
    def timing(self, name: str, ms: float) -> None: ...
    def incr(self, name: str, count: int = 1) -> None: ...
    def gauge(self, name: str, value: float) -> None: ...


class _Off:
    """What `metrics()` returns when StatsD is not configured."""

    def timing(self, name: str, ms: float) -> None:
        return None

    def incr(self, name: str, count: int = 1) -> None:
        return None

    def gauge(self, name: str, value: float) -> None:
        return None


class _StatsD:
    def __init__(self, host: str, port: int, prefix: str) -> None:
        import statsd

        self._client = statsd.StatsClient(host, port, prefix=prefix)

    def timing(self, name: str, ms: float) -> None:
        self._client.timing(name, ms)

    def incr(self, name: str, count: int = 1) -> None:
        self._client.incr(name, count)

    def gauge(self, name: str, value: float) -> None:
        self._client.gauge(name, value)


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    """The process's metrics sink (StatsD when configured, else a no-op)."""
    host = os.environ.get("STATSD_HOST")
    if not host:
        return _Off()
    return _StatsD(
        host,
        int(os.environ.get("STATSD_PORT", "8125")),
        os.environ.get("STATSD_PREFIX", "tidewater"),
    )


def metric_name(*parts: str) -> str:
    """A dotted StatsD name from parts (dots and spaces inside parts become underscores)."""
    return ".".join(part.replace(".", "_").replace(" ", "_") for part in parts)


@contextmanager
def timer(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics().timing(name, (time.perf_counter() - started) * 1000)
