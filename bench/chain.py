"""``python -m bench.chain`` (``invoke bench --what chain``): a no-change cycle.

On the demo app at the given scale, after a first ``invoke load transform``: the
wall time of ``invoke load`` and of ``invoke load transform`` when nothing changed at
the source, each as a user runs it (a fresh ``invoke`` process: interpreter start-up,
the pipeline lock, the run records), interleaved, best of ``--rounds``; and the ratio
(target: the chain takes at most twice as long as the load alone).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import drop_database, recreate_database, with_dbname, write_profile
from tidewater import embedded
from tidewater.paths import PROJECT_ROOT

DATABASES = ("benchchain_app", "benchchain_wh")


def invoke(env: dict[str, str], *words: str) -> float:
    """Run ``invoke <words>`` as a user would; its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), *words],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(
            f"invoke {' '.join(words)} exited {result.returncode}:\n{result.stderr[-2000:]}"
        )
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chain", description=__doc__)
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = parser.parse_args()
    server = embedded.start()
    admin = server.admin_dsn("postgres")
    for name in DATABASES:
        recreate_database(admin, name)
    import demo_app

    source = with_dbname(admin, DATABASES[0])
    counts = demo_app.create_app(source, scale=args.scale)
    print(f"demo app at scale {args.scale:g}: {counts}")
    with tempfile.TemporaryDirectory() as profiles_dir:
        write_profile(
            profiles_dir,
            port=server.port,
            dbname=DATABASES[1],
            logins={"embedded": "tidewater_etl_runner", "embedded_admin": "postgres"},
        )
        env = dict(os.environ)
        env.update(
            DBT_PROFILES_DIR=profiles_dir,
            TIDEWATER_SOURCE_APP_DSN=source,
            TIDEWATER_EMBEDDED_PORT=str(server.port),
            DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        )
        first = invoke(env, "load", "transform")
        print(f"\nfirst invoke load transform          {first:8.1f} s")
        load = chain = float("inf")
        for _ in range(args.rounds):
            load = min(load, invoke(env, "load"))
            chain = min(chain, invoke(env, "load", "transform"))
        print(f"no-change invoke load                {load:8.2f} s   (best of {args.rounds})")
        print(f"no-change invoke load transform      {chain:8.2f} s   (best of {args.rounds})")
        print(f"  ratio                              {chain / load:8.2f}x   (target <= 2)")
    if os.environ.get("BENCH_KEEP") != "1":
        for name in DATABASES:
            drop_database(admin, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
