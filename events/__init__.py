"""Event ingestion with effectively-once delivery into ``raw_<source>.<stream>``.

Three ways in, one warehouse contract (`events.warehouse`): the HTTP collector
(``kind: http``, `serve`), RabbitMQ stream queues (``kind: rabbitmq``) and NATS
JetStream (``kind: nats``), read by `drain` (to the tail, then stop: ``invoke load``)
or `consume` (continuously: ``invoke consume``). Applications publish with `publish`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence

from events.consumer import (
    BROKER_KINDS,
    ConnectFn,
    StreamResult,
    consume_stream,
    drain_stream,
    prepare,
    stream_refs,
)
from events.exceptions import EventsError
from events.publish import publish
from loaders.config import SourceConfig
from tidewater.runs import record_job

EVENT_KINDS = frozenset({"http", "rabbitmq", "nats"})
log = logging.getLogger(__name__)

__all__ = ["EVENT_KINDS", "StreamResult", "consume", "drain", "publish", "serve"]


def _broker_sources(sources: Sequence[SourceConfig]) -> list[SourceConfig]:
    return [source for source in sources if source.kind in BROKER_KINDS and source.tables]


def drain(
    sources: Sequence[SourceConfig], *, connect_warehouse: ConnectFn, batch_size: int = 1000
) -> list[StreamResult]:
    """Read every declared broker stream to its current tail and stop (for ``invoke
    load``). Other kinds are ignored (the collector has nothing to drain).

    A stream that fails is reported with ``status="failed"`` and the others still run;
    the job's record in ``ops.job_runs`` says which.
    """
    brokers = _broker_sources(sources)
    results: list[StreamResult] = []
    if not brokers:
        return results
    with record_job(connect_warehouse, "drain_events") as run:
        prepare(brokers, connect_warehouse)
        for source in brokers:
            for ref in stream_refs(source):
                try:
                    result = drain_stream(source, ref, connect_warehouse, batch_size=batch_size)
                except Exception as exc:  # one stream's failure never stops the others
                    result = StreamResult(ref.source, ref.stream, ref.kind)
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    if not isinstance(exc, EventsError):
                        reason = f"{type(exc).__name__}: {reason}; run the drain again (it resumes)"
                    result.status, result.error = "failed", reason
                    log.error("%s.%s: %s", ref.source, ref.stream, result.error)
                results.append(result)
        run.rows = sum(result.stored for result in results)
        run.details = {
            f"{result.source}.{result.stream}": {
                "stored": result.stored,
                "duplicates": result.duplicates,
                "dead_letters": result.dead_letters,
                "position": result.position,
                "status": result.status,
            }
            for result in results
        }
        if any(result.status == "failed" for result in results):
            run.status = "failed"
    return results


def consume(
    sources: Sequence[SourceConfig],
    *,
    connect_warehouse: ConnectFn,
    stop: threading.Event | None = None,
    batch_size: int = 1000,
) -> None:
    """Read every declared broker stream continuously (one thread per stream, bounded
    batches, two more read ahead and at most four unacknowledged each) until ``stop`` is set, SIGTERM or
    Ctrl-C. Blocks. Raises the first stream's error that was not transient."""
    brokers = _broker_sources(sources)
    if not brokers:
        raise EventsError(
            "no rabbitmq or nats source with tables is declared; declare one in the dbt "
            "sources YAML (config: meta: tidewater: kind: rabbitmq)"
        )
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    prepare(brokers, connect_warehouse)
    errors: list[BaseException] = []

    def run(source: SourceConfig, ref: object) -> None:
        try:
            consume_stream(source, ref, connect_warehouse, stop, batch_size=batch_size)  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=run, args=(source, ref), name=f"consume-{ref.stream}")
        for source in brokers
        for ref in stream_refs(source)
    ]
    with record_job(connect_warehouse, "consume_events"):
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
        except KeyboardInterrupt:
            stop.set()
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]


def serve(
    sources: Sequence[SourceConfig], *, connect_warehouse: ConnectFn, host: str, port: int
) -> None:
    """Run the HTTP collector for every ``kind: http`` source (blocks)."""
    from events.collector import serve as serve_collector

    serve_collector(sources, connect_warehouse=connect_warehouse, host=host, port=port)
