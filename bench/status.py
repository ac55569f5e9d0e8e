"""``python -m bench.status``: `invoke status` on a year of hourly runs.

Fills a scratch database with 8,760 hourly pipeline runs (a load and a dbt build
each, seven table loads per load, some failures) and times `collect_status`
against the target of well under a second.
"""

from __future__ import annotations

import sys
import time

import psycopg2

from bench import with_dbname
from control.status import collect_status
from tidewater import embedded
from tidewater.runs import ensure_ops_tables

FILL = """
insert into ops.job_runs (run_id, job, started_at, finished_at, duration_s, status,
    error_class, error_message, rows_loaded, host, pid)
select job || '-' || hour, job, start_at, start_at + make_interval(secs => duration),
    duration, case when hour % 97 = 0 then 'failed' else 'succeeded' end,
    case when hour % 97 = 0 then 'terminal' end,
    case when hour % 97 = 0 then 'boom at hour ' || hour end, 1000 + hour, 'bench', 1
from generate_series(1, 8760) as hour,
    lateral (select now() - make_interval(hours => 8760 - hour) as start_at) as start_times,
    lateral (values ('load', 20 + (hour % 7)), ('dbt build', 40 + (hour % 11))) as jobs (job, duration);

insert into ops.table_loads (run_id, batch_id, source_name, table_name, load_mode, status,
    started_at, duration_s, rows_read, rows_inserted, rows_updated, rows_deleted, rows_reread,
    attempts)
select 'load-' || hour, 'b' || hour, 'app', table_name, 'incremental', 'succeeded',
    now() - make_interval(hours => 8760 - hour), 1.5, 100, 50, 40, 1, 2, 1
from generate_series(1, 8760) as hour,
    unnest(array['countries', 'customers', 'products', 'orders', 'order_items', 'payments',
                 'events']) as table_name;
analyze ops.job_runs;
analyze ops.table_loads;
"""


def main() -> int:
    admin = embedded.start().admin_dsn("postgres")
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("drop database if exists bench_status with (force)")
        cur.execute("create database bench_status")
    conn.close()
    conn = psycopg2.connect(with_dbname(admin, "bench_status"))
    conn.autocommit = True
    try:
        ensure_ops_tables(conn)
        with conn.cursor() as cur:
            cur.execute(FILL)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            collect_status(conn)
            timings.append(time.perf_counter() - started)
        best, worst = min(timings), max(timings)
        print("invoke status on a year of hourly runs (17,520 job runs, 61,320 table loads):")
        print(f"  best {best * 1000:.0f} ms, worst {worst * 1000:.0f} ms  (target: well under 1 s)")
    finally:
        conn.close()
        cleanup = psycopg2.connect(admin)
        cleanup.autocommit = True
        with cleanup.cursor() as cur:
            cur.execute("drop database if exists bench_status with (force)")
        cleanup.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
