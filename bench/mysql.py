"""``python -m bench.mysql --rows N``: the MySQL/MariaDB source against the limit.

In one run, on a table of N rows in a scratch MariaDB database and a scratch
PostgreSQL warehouse database:
  (a) the limit: ``mysql --batch --quick -e "select …" | psql -c "COPY … FROM STDIN"``;
  (b) our first load of the table (a loader subprocess; its peak memory too), into
      an empty warehouse, interleaved with (a) in ``--rounds`` rounds, best of each;
  (c) incremental loads after no change and after 1% of rows change;
then prints the ratio of (a) to (b) (target: at least 0.8) and the timings. Both
scratch databases are dropped afterwards.

Needs the MariaDB/MySQL server (``--mysql-host``/``--mysql-port``, user root or
``--mysql-user``) and a PostgreSQL server to load into (``--warehouse``, a libpq
DSN of a login that may create databases), plus the ``mysql`` and ``psql`` clients.
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
import uuid

from bench import drop_database, execute, recreate_database

LOADER = """
import json, sys, time
from loaders.config import SourceConfig, TableConfig
from loaders.pipeline import LoadOptions, connector, load_all, raise_on_failure
from loaders.engines import connector_for
source = SourceConfig(name="bench", raw_schema="raw_bench", source_schema=sys.argv[1],
                      dsn_env="TIDEWATER_SOURCE_BENCH_DSN", kind="mysql",
                      tables=(TableConfig(name="events", mode="incremental", cursor="updated_at",
                                          primary_key=("id",)),))
started = time.perf_counter()
results = load_all((source,), source_connectors={"bench": connector_for(source, sys.argv[2])},
                   connect_warehouse=connector(sys.argv[3], what="warehouse"),
                   options=LoadOptions(workers=1, retries=1))
raise_on_failure(results)
result = results[0]
print(json.dumps({"seconds": time.perf_counter() - started, "read": result.rows_read,
                  "inserted": result.inserted, "updated": result.updated,
                  "source_held_s": result.source_held_s, "safety": result.late_commit_safety}))
"""

CREATE = """
create table events (
    id bigint primary key,
    user_id int not null,
    kind varchar(20) not null,
    amount decimal(12,2),
    note varchar(100),
    created_at datetime(6) not null,
    updated_at timestamp(6) not null default current_timestamp(6)
        on update current_timestamp(6),
    key (updated_at)
)
"""
# MariaDB's sequence engine (seq_1_to_N) makes rows quickly.
FILL = """
insert into events (id, user_id, kind, amount, note, created_at)
select seq, seq % 100000, elt(1 + seq % 4, 'view', 'click', 'cart', 'buy'),
    (seq % 100000) / 100, if(seq % 10 = 0, null, concat('note ', seq, '\\tand a tab')),
    timestamp('2024-01-01') + interval seq second
from seq_1_to_{rows}
"""
COLUMNS = "id, user_id, kind, amount, note, created_at, updated_at"
PIPE_TABLE = """
create table pipe_events (
    id bigint, user_id integer, kind varchar(20), amount numeric(12,2), note varchar(100),
    created_at timestamp, updated_at timestamptz
)
"""


def mysql(args: argparse.Namespace, database: str | None, *statements: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(
        host=args.mysql_host,
        port=args.mysql_port,
        user=args.mysql_user,
        password=args.mysql_password,
        database=database or "",
        autocommit=True,
    )
    try:
        cur = conn.cursor()
        for statement in statements:
            cur.execute(statement)
    finally:
        conn.close()


def with_dbname(dsn: str, name: str) -> str:
    return f"{dsn} dbname={name}" if "://" not in dsn else dsn.rsplit("/", 1)[0] + "/" + name


def limit(args: argparse.Namespace, database: str, warehouse: str) -> float:
    """``mysql --batch --quick`` piped into ``psql … COPY FROM STDIN``: the same rows,
    the same two servers, no merge, no marks."""
    execute(warehouse, "drop table if exists pipe_events")
    execute(warehouse, PIPE_TABLE)
    command = [
        shutil.which("mysql") or "mysql",
        "--batch",
        "--quick",
        "--skip-column-names",
        f"--host={args.mysql_host}",
        f"--port={args.mysql_port}",
        f"--user={args.mysql_user}",
        "--init-command=set time_zone = '+00:00'",
        "-e",
        f"select {COLUMNS} from events",
        database,
    ]
    env = {**os.environ, "MYSQL_PWD": args.mysql_password}
    started = time.perf_counter()
    out = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    subprocess.run(
        [
            shutil.which("psql") or "psql",
            warehouse,
            "-qc",
            "copy pipe_events from stdin with (null 'NULL')",
        ],
        stdin=out.stdout,
        check=True,
    )
    if out.wait() != 0:
        raise SystemExit("the mysql client failed")
    elapsed = time.perf_counter() - started
    copied = execute(warehouse, "select count(*) from pipe_events")[0][0]
    if copied != args.rows:
        raise SystemExit(f"the limit copied {copied} rows, not {args.rows}")
    execute(warehouse, "drop table pipe_events")
    return elapsed


def load(database: str, source_dsn: str, warehouse: str, driver: str | None) -> dict:
    env = {**os.environ}
    if driver:
        env["TIDEWATER_MYSQL_DRIVER"] = driver
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(
        [sys.executable, "-c", LOADER, database, source_dsn, warehouse],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"the loader failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = (
        max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mysql", description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--mysql-host", default="127.0.0.1")
    parser.add_argument("--mysql-port", type=int, default=3306)
    parser.add_argument("--mysql-user", default="root")
    parser.add_argument("--mysql-password", default="")
    parser.add_argument(
        "--warehouse",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (libpq DSN) where a scratch database may be created",
    )
    parser.add_argument("--driver", choices=("mysqlclient", "pymysql"), help="force a driver")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved first loads, best of")
    args = parser.parse_args(argv)

    tag = uuid.uuid4().hex[:8]
    database, warehouse_db = f"tw_bench_{tag}", f"tw_bench_wh_{tag}"
    warehouse = with_dbname(args.warehouse, warehouse_db)
    auth = f"{args.mysql_user}:{args.mysql_password}" if args.mysql_password else args.mysql_user
    source_dsn = f"mysql://{auth}@{args.mysql_host}:{args.mysql_port}/{database}"
    mysql(args, None, f"create database {database}")
    try:
        started = time.perf_counter()
        mysql(args, database, CREATE, FILL.format(rows=args.rows))
        print(f"made {args.rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        pipes, firsts = [], []
        for _ in range(max(1, args.rounds)):
            recreate_database(args.warehouse, warehouse_db)
            pipes.append(limit(args, database, warehouse))
            first = load(database, source_dsn, warehouse, args.driver)
            if first["inserted"] != args.rows:
                raise SystemExit(f"the first load inserted {first['inserted']}, not {args.rows}")
            firsts.append(first)
        pipe_s = min(pipes)
        first = min(firsts, key=lambda result: result["seconds"])
        # Each wait: past the late-commit margin of the last load's look (rows written
        # within the second before a look are read again by the next load).
        time.sleep(1.5)
        unchanged = load(database, source_dsn, warehouse, args.driver)
        time.sleep(1.5)
        mysql(args, database, "update events set amount = amount + 1 where id % 100 = 0")
        changed = load(database, source_dsn, warehouse, args.driver)
        ratio = pipe_s / first["seconds"]
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "driver": args.driver or "default",
                    "limit_mysql_batch_to_psql_copy_s": round(pipe_s, 2),
                    "first_load_s": round(first["seconds"], 2),
                    "first_load_rows_per_s": round(args.rows / first["seconds"]),
                    # the read and COPY alone (the rest: indexes, analyze, commit)
                    "first_load_read_and_copy_s": round(first["source_held_s"], 2),
                    "rounds_limit_s": [round(seconds, 2) for seconds in pipes],
                    "rounds_first_load_s": [round(result["seconds"], 2) for result in firsts],
                    "ratio_limit_over_first_load": round(ratio, 2),
                    "target_ratio": 0.8,
                    "loader_peak_rss_mb": round(first["peak_rss_mb"], 1),
                    "no_change_s": round(unchanged["seconds"], 2),
                    "no_change_read": unchanged["read"],
                    "one_percent_change_s": round(changed["seconds"], 2),
                    "one_percent_change_read": changed["read"],
                    "one_percent_change_updated": changed["updated"],
                },
                indent=2,
            )
        )
        return 0 if ratio >= 0.8 else 1
    finally:
        mysql(args, None, f"drop database if exists {database}")
        drop_database(args.warehouse, warehouse_db)


if __name__ == "__main__":
    sys.exit(main())
