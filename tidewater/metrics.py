"""Timers, counters and gauges to StatsD (and so to Graphite and Grafana).

Enabled when ``STATSD_HOST`` names a host (``STATSD_PORT``, default 8125;
``STATSD_PREFIX``, default ``tidewater``). Otherwise `metrics` returns a sink whose
methods do nothing: no socket is opened and nothing is sent. Sending is
fire-and-forget UDP, so a StatsD server that is down never slows or fails a job.

    from tidewater.metrics import metric_name, metrics, timer

    metrics().incr(metric_name("load", "app", "orders", "succeeded"))
    with timer("report.write"):
        ...
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache

DEFAULT_PORT = 8125
DEFAULT_PREFIX = "tidewater"

log = logging.getLogger(__name__)

_NOTHING = nullcontext()


class Metrics:
    """The sink `metrics` returns when StatsD is not configured: every call is a no-op."""

    enabled = False

    def timing(self, name: str, ms: float) -> None:
        """Record a duration in milliseconds."""

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter."""

    def gauge(self, name: str, value: float) -> None:
        """Set a gauge to ``value``."""

    def timer(self, name: str) -> AbstractContextManager[None]:
        """Time the block and record it with `timing` (also when it raises)."""
        return _NOTHING


class StatsdMetrics(Metrics):
    """Sends to a StatsD server over UDP."""

    enabled = True

    def __init__(self, host: str, port: int = DEFAULT_PORT, prefix: str = DEFAULT_PREFIX) -> None:
        import statsd

        self.host, self.port, self.prefix = host, port, prefix
        self._client = statsd.StatsClient(host, port, prefix=prefix or None, ipv6=":" in host)

    def timing(self, name: str, ms: float) -> None:
        self._client.timing(name, ms)

    def incr(self, name: str, n: int = 1) -> None:
        self._client.incr(name, n)

    def gauge(self, name: str, value: float) -> None:
        self._client.gauge(name, value)

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timing(name, (time.perf_counter() - started) * 1000)

    def timer(self, name: str) -> AbstractContextManager[None]:
        return self._timed(name)

    def close(self) -> None:
        self._client.close()


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    """The process's sink: StatsD when ``STATSD_HOST`` is set, else a no-op.

    Read once and cached; call ``metrics.cache_clear()`` after changing the
    environment. A host that does not resolve logs a warning and disables metrics
    rather than failing the job.
    """
    host = os.environ.get("STATSD_HOST", "").strip()
    if not host:
        return Metrics()
    port = os.environ.get("STATSD_PORT", "").strip() or str(DEFAULT_PORT)
    prefix = os.environ.get("STATSD_PREFIX", DEFAULT_PREFIX).strip(".")
    try:
        return StatsdMetrics(host, int(port), prefix)
    except (OSError, ValueError) as exc:
        log.warning(
            "metrics disabled: cannot use STATSD_HOST=%s STATSD_PORT=%s (%s); "
            "fix them or unset STATSD_HOST",
            host,
            port,
            exc,
        )
        return Metrics()


def metric_name(*parts: str) -> str:
    """A dotted StatsD name from parts (dots, colons, pipes and spaces inside a part
    become underscores, so a part never splits the name or breaks the packet)."""
    return ".".join(re.sub(r"[.:|@\s]", "_", part) for part in parts)


def timer(name: str) -> AbstractContextManager[None]:
    """``with timer("load.app.orders.duration"):`` times the block on `metrics`."""
    return metrics().timer(name)
