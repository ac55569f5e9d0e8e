"""``python -m bench.events``: events per second into the warehouse, per path.

In one run, on the embedded warehouse and the real brokers, interleaved, best of
``--rounds``:
  (a) the broker's own consume rate with a plain client on the settings ours uses
      (prefetch / max ack pending of 4,000, one ack per 1,000 covering the batch):
      pika callbacks for RabbitMQ; for JetStream both nats-py's documented pull
      consumer (``fetch(1000)``) and a hand-made pull (``CONSUMER.MSG.NEXT`` requests
      of 1,000 to an inbox with a callback, as our reader does); the ratio is taken
      against the faster of the two;
  (b) ours: `drain_stream` at batch 1,000 (decode, dedupe, one transaction per batch
      with its position, then acknowledge; the next batches read ahead on a thread),
      against the target of 50,000 events/s;
  (c) the warehouse side alone (decode and `write_batch` of ready messages);
  (d) the producer helper `events.publish` (one confirmed publish at a time);
  (e) the collector: POST→2xx latency of one event (sequential) and the throughput of
      concurrent clients posting 100 events per request;
then prints each rate and its ratio to the plain client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import threading
import time
import uuid

import psycopg2
import requests

from bench import with_dbname
from events.collector import run_collector
from events.consumer import drain_stream, prepare, stream_refs
from events.decode import Message, decode_batch
from events.engine import READ_AHEAD
from events.publish import close_publishers, publish
from events.warehouse import StreamRef, ensure_stream_tables, write_batch
from loaders.config import SourceConfig, TableConfig
from loaders.pipeline import connector
from tidewater import embedded

RABBITMQ_URL = os.environ.get(
    "TIDEWATER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
)
NATS_URL = os.environ.get("TIDEWATER_TEST_NATS_URL", "nats://127.0.0.1:4222")
TARGET_EVENTS_PER_S = 50_000
BATCH = 1000
IN_FLIGHT = (READ_AHEAD + 2) * BATCH  # what our readers let the broker send unacked


def body(number: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{number}",
            "page": f"/products/{number % 500}",
            "user_id": number % 9973,
            "at": "2026-12-05T07:00:00Z",
            "referrer": "https://example.com/",
        }
    ).encode()


def fill_rabbitmq(stream: str, count: int) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    channel.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
    for number in range(count):
        channel.basic_publish(
            "", stream, body(number), pika.BasicProperties(message_id=f"e{number}")
        )
    channel.queue_declare(stream, passive=True)  # a round trip: everything was received
    connection.close()


def plain_rabbitmq(stream: str, count: int) -> float:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=IN_FLIGHT)
    received = [0]

    def on_message(ch: object, method: object, _props: object, _body: bytes) -> None:
        received[0] += 1
        if received[0] % BATCH == 0:
            ch.basic_ack(method.delivery_tag, multiple=True)  # type: ignore[attr-defined]

    channel.basic_consume(stream, on_message, arguments={"x-stream-offset": "first"})
    started = time.perf_counter()
    while received[0] < count:
        connection.process_data_events(time_limit=0.1)
    seconds = time.perf_counter() - started
    connection.close()
    return count / seconds


def drop_rabbitmq(stream: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    connection.channel().queue_delete(stream)
    connection.close()


async def _nats(action: str, stream: str, count: int) -> float:
    import nats
    from nats.js import api

    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    try:
        if action == "fill":
            await js.add_stream(name=stream, subjects=[stream])
            for number in range(count):
                await client.publish(stream, body(number), headers={"Nats-Msg-Id": f"e{number}"})
                if number % 5000 == 0:
                    await client.flush()
            await client.flush()
            while (await js.stream_info(stream)).state.messages < count:
                await asyncio.sleep(0.05)
            return 0.0
        if action == "drop":
            await js.delete_stream(stream)
            return 0.0
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.ALL, max_ack_pending=IN_FLIGHT, inactive_threshold=60.0
        )
        if action == "plain":  # nats-py's pull consumer, as its documentation shows it
            subscription = await js.pull_subscribe(stream, stream=stream, config=config)
            received = 0
            started = time.perf_counter()
            while received < count:
                messages = await subscription.fetch(batch=BATCH, timeout=5)
                received += len(messages)
                await messages[-1].ack()
            return count / (time.perf_counter() - started)
        # "pull": the same pull requests by hand, collected by an inbox callback
        info = await js.add_consumer(stream, config)
        inbox = client.new_inbox()
        batch: list = []
        complete = asyncio.Event()

        async def on_message(msg: object) -> None:
            batch.append(msg)
            if len(batch) >= BATCH or (msg.headers or {}).get("Status"):  # type: ignore[attr-defined]
                complete.set()

        await client.subscribe(inbox, cb=on_message, pending_msgs_limit=4 * IN_FLIGHT)
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{info.name}"
        received = 0
        started = time.perf_counter()
        while received < count:
            batch.clear()
            complete.clear()
            request = json.dumps({"batch": BATCH, "expires": 5_000_000_000}).encode()
            await client.publish(subject, request, reply=inbox)
            await asyncio.wait_for(complete.wait(), 10)
            data = [msg for msg in batch if not (msg.headers or {}).get("Status")]
            received += len(data)
            if data:
                await client.publish(data[-1].reply, b"+ACK")
        return count / (time.perf_counter() - started)
    finally:
        await client.close()


def source_for(kind: str, stream: str, name: str = "bench") -> SourceConfig:
    variable = f"TIDEWATER_SOURCE_BENCH{uuid.uuid4().hex[:6].upper()}_DSN"
    os.environ[variable] = RABBITMQ_URL if kind == "rabbitmq" else NATS_URL
    return SourceConfig(
        name=name,
        raw_schema=f"raw_{name}",
        source_schema="",
        dsn_env=variable,
        tables=(TableConfig(name=stream, mode="bulk"),),
        kind=kind,  # type: ignore[arg-type]
    )


def ours(kind: str, stream: str, warehouse: str, count: int, name: str = "bench") -> float:
    """A drain from the start of the stream into a raw schema of its own."""
    source = source_for(kind, stream, name)
    connect = connector(warehouse, what="warehouse")
    prepare([source], connect)
    (ref,) = stream_refs(source)
    result = drain_stream(source, ref, connect, batch_size=BATCH)
    assert result.stored == count, f"stored {result.stored} of {count}"
    return result.stored / result.seconds


def warehouse_only(warehouse: str, count: int) -> float:
    """The warehouse side alone: decoded batches of 1,000 through `write_batch` (locks,
    insert with dedupe, position) — the consumer's ceiling with an infinitely fast broker."""
    ref = StreamRef("bench", "rabbitmq", "raw_bench_only", f"only_{uuid.uuid4().hex[:6]}")
    connect = connector(warehouse, what="warehouse")
    conn = connect()
    ensure_stream_tables(conn, [ref])
    messages = [Message(number, body(number), f"e{number}") for number in range(count)]
    started = time.perf_counter()
    for first in range(0, count, 1000):
        chunk = messages[first : first + 1000]
        events, poison = decode_batch(chunk, id_field=None, stream=ref.stream)
        write_batch(conn, ref, events, poison, position=chunk[-1].position)
    rate = count / (time.perf_counter() - started)
    conn.close()
    return rate


def publish_rate(url: str, stream: str, count: int) -> float:
    started = time.perf_counter()
    for number in range(count):
        publish(stream, {"event_id": f"p{number}", "page": "/"}, url=url)
    rate = count / (time.perf_counter() - started)
    close_publishers()
    return rate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def collector_numbers(warehouse: str, requests_count: int) -> dict[str, float]:
    refs = [StreamRef("bench", "http", "raw_web", "page_views")]
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/events"
    context = multiprocessing.get_context("fork")
    server = context.Process(
        target=run_collector,
        args=(refs, connector(warehouse, what="warehouse")),
        kwargs={"host": "127.0.0.1", "port": port},
    )
    server.start()
    try:
        session = requests.Session()
        for _ in range(200):
            try:
                session.get(url.replace("/v1/events", "/health"), timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        latencies = []
        for number in range(requests_count):
            event = {"event_id": f"l{number}", "stream": "page_views", "page": "/"}
            started = time.perf_counter()
            response = session.post(url, json=event, timeout=10)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        latencies.sort()
        total = [0]
        lock = threading.Lock()

        def client(n: int) -> None:
            own = requests.Session()
            for batch in range(20):
                events = [
                    {"event_id": f"c{n}-{batch}-{i}", "stream": "page_views", "page": "/"}
                    for i in range(100)
                ]
                assert own.post(url, json=events, timeout=30).status_code == 200
                with lock:
                    total[0] += len(events)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent_rate = total[0] / (time.perf_counter() - started)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.join(10)
    # The floor under any POST→2xx: one durable commit of one row.
    conn = psycopg2.connect(warehouse)
    with conn.cursor() as cur:
        cur.execute("set synchronous_commit to on; create table if not exists floor_probe (n int)")
    conn.commit()
    floor = []
    for number in range(200):
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("insert into floor_probe values (%s)", (number,))
        conn.commit()
        floor.append(time.perf_counter() - started)
    conn.close()
    return {
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "commit_floor_p50_ms": 1000 * statistics.median(floor),
        "concurrent_events_per_s": concurrent_rate,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per broker stream")
    parser.add_argument(
        "--scale", type=float, default=None, help="ignored (invoke bench passes it)"
    )
    parser.add_argument("--requests", type=int, default=500, help="sequential collector POSTs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best of)")
    args = parser.parse_args()
    admin = embedded.start().admin_dsn("postgres")
    name = f"bench_events_{uuid.uuid4().hex[:6]}"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'create database "{name}"')
    warehouse = with_dbname(admin, name)
    results: dict[str, dict[str, float]] = {}
    try:
        count = args.events
        rabbit_stream, nats_stream = (f"bench_{uuid.uuid4().hex[:8]}" for _ in range(2))
        fill_rabbitmq(rabbit_stream, count)
        asyncio.run(_nats("fill", nats_stream, count))
        runs: dict[str, list[float]] = {}
        try:
            for round_number in range(args.rounds):  # interleaved: plain, ours, plain, …
                for key, run in (
                    ("rabbitmq plain", lambda: plain_rabbitmq(rabbit_stream, count)),
                    (
                        "rabbitmq ours",
                        lambda n=round_number: ours(
                            "rabbitmq", rabbit_stream, warehouse, count, f"bench_r{n}"
                        ),
                    ),
                    ("nats plain", lambda: asyncio.run(_nats("plain", nats_stream, count))),
                    ("nats pull", lambda: asyncio.run(_nats("pull", nats_stream, count))),
                    (
                        "nats ours",
                        lambda n=round_number: ours(
                            "nats", nats_stream, warehouse, count, f"bench_n{n}"
                        ),
                    ),
                    ("warehouse", lambda: warehouse_only(warehouse, count)),
                ):
                    runs.setdefault(key, []).append(run())
        finally:
            drop_rabbitmq(rabbit_stream)
            asyncio.run(_nats("drop", nats_stream, 0))
        results["rabbitmq"] = {
            "plain_client_per_s": max(runs["rabbitmq plain"]),
            "into_warehouse_per_s": max(runs["rabbitmq ours"]),
        }
        results["nats"] = {
            "plain_client_per_s": max(runs["nats plain"] + runs["nats pull"]),
            "nats_py_fetch_per_s": max(runs["nats plain"]),
            "hand_made_pull_per_s": max(runs["nats pull"]),
            "into_warehouse_per_s": max(runs["nats ours"]),
        }
        results["warehouse"] = {"write_batch_per_s": max(runs["warehouse"])}
        results["rounds"] = {key: [round(rate) for rate in rates] for key, rates in runs.items()}  # type: ignore[misc]
        for kind, url in (("rabbitmq", RABBITMQ_URL), ("nats", NATS_URL)):
            stream = f"bench_pub_{uuid.uuid4().hex[:8]}"
            results[kind]["publish_helper_per_s"] = publish_rate(url, stream, 2000)
            if kind == "rabbitmq":
                drop_rabbitmq(stream)
            else:
                asyncio.run(_nats("drop", stream, 0))
        results["collector"] = collector_numbers(warehouse, args.requests)
    finally:
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        conn.close()
    for path in ("rabbitmq", "nats"):
        numbers = results[path]
        ratio = numbers["into_warehouse_per_s"] / numbers["plain_client_per_s"]
        verdict = "meets" if numbers["into_warehouse_per_s"] >= TARGET_EVENTS_PER_S else "below"
        print(
            f"{path:9s} plain client {numbers['plain_client_per_s']:>9,.0f}/s | into the "
            f"warehouse {numbers['into_warehouse_per_s']:>9,.0f}/s ({ratio:.0%} of the plain "
            f"client; {verdict} the {TARGET_EVENTS_PER_S:,}/s target) | publish() "
            f"{numbers['publish_helper_per_s']:,.0f}/s confirmed one at a time"
        )
    rate = results["warehouse"]["write_batch_per_s"]
    verdict = "meets" if rate >= TARGET_EVENTS_PER_S else "below"
    nats = results["nats"]
    print(
        f"          nats plain clients: nats-py fetch() {nats['nats_py_fetch_per_s']:,.0f}/s, "
        f"hand-made pull {nats['hand_made_pull_per_s']:,.0f}/s (the faster is the baseline); "
        f"best of {args.rounds} interleaved rounds"
    )
    print(
        f"warehouse side alone (decode + write_batch, batch 1,000): {rate:,.0f}/s ({verdict} "
        f"the {TARGET_EVENTS_PER_S:,}/s target)"
    )
    numbers = results["collector"]
    print(
        f"collector POST→2xx p50 {numbers['latency_p50_ms']:.1f} ms, p99 "
        f"{numbers['latency_p99_ms']:.1f} ms (one durable commit: "
        f"{numbers['commit_floor_p50_ms']:.1f} ms); 8 clients x 100 events per request: "
        f"{numbers['concurrent_events_per_s']:,.0f} events/s"
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
