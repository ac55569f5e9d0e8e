"""``python -m bench.dbt`` (``invoke bench --what dbt``): the transform's speed.

On the demo app at the given scale (200 ≈ 5 million events), in one run: the
build after the first (it fills the publish gate's second copy of each mart), then,
interleaved and best of ``--rounds``, the transform as ``invoke transform`` runs it
(the descendants of the changed raw tables: dbt build, then the publish) after 0.1%
and after 1% of source rows change and are loaded, and a full build from scratch,
with the ratios to the full build (target: an incremental build after 1% change takes
at most 10% of the full build, after 0.1% at most 5%).
With ``--in-process`` dbt runs through its programmatic runner in this process
(imported and parsed once, before anything is timed) instead of one `dbt`
subprocess per build: what a long-lived orchestrator gets.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from types import SimpleNamespace

import psycopg2

from bench import drop_database, execute, recreate_database, with_dbname, write_profile
from tidewater import embedded

# the fraction of source rows changed before an incremental build, and its target
FRACTIONS = {"0.001": 0.05, "0.01": 0.10}


def load(source: str, warehouse: str) -> None:
    """Load the demo app's tables; the event streams' raw tables exist, as after any
    `invoke load` (the bench sends no events)."""
    from events import EVENT_KINDS
    from events.consumer import prepare
    from loaders.config import load_sources
    from loaders.pipeline import LoadOptions, connector, load_all, raise_on_failure

    sources = load_sources()
    connect_warehouse = connector(warehouse, what="warehouse")
    results = load_all(
        [source for source in sources if source.name == "app"],
        source_connectors={"app": connector(source, what="source")},
        connect_warehouse=connect_warehouse,
        options=LoadOptions(workers=4),
    )
    raise_on_failure(results)
    prepare([source for source in sources if source.kind in EVENT_KINDS], connect_warehouse)


def run_dbt_in_process() -> None:
    """Make `transform.build.run_dbt` run dbt through dbt's programmatic runner
    (`dbtRunner`) in this process instead of a `dbt` subprocess: what a long-lived
    orchestrator would get (dbt imported once, no interpreter start per build).
    dbt is imported and warmed up here, before any build is timed, so the full
    and the incremental builds are measured alike."""
    from dbt.cli.main import dbtRunner

    import transform.build

    def call(argv: list[str], env: dict[str, str]) -> int:
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            result = dbtRunner().invoke(argv[1:])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if result.exception is not None:
            return 2
        return 0 if result.success else 1

    transform.build.subprocess = SimpleNamespace(call=call)  # type: ignore[attr-defined]


def warm_up(profiles_dir: str) -> None:
    """Parse the project once, untimed (imports dbt, writes partial_parse.msgpack)."""
    from tidewater.profile import load_target
    from transform.build import run_dbt

    run_dbt("parse", load_target("bench", profiles_dir=profiles_dir), "--quiet", record=False)


def build(profiles_dir: str, *extra: str, every_node: bool = False) -> float:
    """One transform as `invoke transform` runs it: dbt build (of what the changed raw
    tables need), then the publish; ``every_node`` builds everything, as the run after
    the first must once to fill the second copy of each mart."""
    from tidewater.profile import load_target
    from transform.build import build_if_changed, run_dbt

    target = load_target("bench", profiles_dir=profiles_dir)
    started = time.perf_counter()
    if every_node:
        run_dbt("build", target, "--quiet", *extra)
    else:
        build_if_changed(target, "--quiet", *extra)
    return time.perf_counter() - started


def change(source: str, fraction: float) -> int:
    """Change a fraction of rows the way the app does: new events and status moves."""
    events = execute(source, "select count(*) from events")[0][0]
    new = max(1, int(events * fraction))
    execute(
        source,
        "insert into events (session_id, customer_id, event_type, page_path, properties,"
        " occurred_at) select md5(random()::text)::uuid, null, 'page_view', '/bench', '{}',"
        f" clock_timestamp() from generate_series(1, {new})",
    )
    orders = execute(source, "select count(*) from orders")[0][0]
    moved = max(1, int(orders * fraction))
    execute(
        source,
        # Orders anywhere in the table, shipped <-> delivered (so rounds never run out
        # of orders to change); the app moves updated_at, which the loaders read by.
        "update orders set updated_at = clock_timestamp(), status = case status"
        " when 'shipped' then 'delivered' when 'delivered' then 'shipped' else status end"
        " where order_id in (select order_id from orders where status in"
        f" ('shipped', 'delivered') order by random() limit {moved})",
    )
    return new + moved


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dbt", description=__doc__)
    parser.add_argument("--scale", type=float, default=200.0)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the databases a run with BENCH_KEEP=1 left (skips creating and loading)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run dbt in this process (dbtRunner) instead of a subprocess per build",
    )
    args = parser.parse_args()
    if args.in_process:
        run_dbt_in_process()
    server = embedded.start()
    admin = server.admin_dsn("postgres")
    source, warehouse = with_dbname(admin, "benchdbt_app"), with_dbname(admin, "benchdbt_wh")
    existing = {row[0] for row in execute(admin, "select datname from pg_database")}
    if args.reuse and {"benchdbt_app", "benchdbt_wh"} <= existing:
        print("reusing the demo app and warehouse of a previous run (BENCH_KEEP=1)")
    else:
        for name in ("benchdbt_app", "benchdbt_wh"):
            recreate_database(admin, name)

        import demo_app

        counts = demo_app.create_app(source, scale=args.scale)
        print(f"demo app at scale {args.scale:g}: {counts}")
        load(source, warehouse)
        from tidewater.runs import ensure_ops_tables

        conn = psycopg2.connect(warehouse)
        conn.autocommit = True
        ensure_ops_tables(conn)  # the pipeline-health models read them
        conn.close()
    with tempfile.TemporaryDirectory() as profiles_dir:
        write_profile(
            profiles_dir, port=server.port, dbname="benchdbt_wh", logins={"bench": "postgres"}
        )
        if args.in_process:
            warm_up(profiles_dir)
        build(profiles_dir, "--full-refresh")
        # The publish gate keeps a second copy of each mart in marts_build; the
        # run after the first builds it in full, once.
        second = build(profiles_dir, every_node=True)
        print(f"\nnext build (fills the second copy)   {second:8.1f} s   (once per install)")
        # Interleaved, best of N: a change of 0.1%, one of 1% (each loaded, then
        # transformed as `invoke transform` does), and a full build from scratch.
        best: dict[str, float] = {}
        changed: dict[str, int] = {}
        for _ in range(args.rounds):
            for fraction in FRACTIONS:
                changed[fraction] = change(source, float(fraction))
                load(source, warehouse)
                seconds = build(profiles_dir)
                best[fraction] = min(best.get(fraction, seconds), seconds)
            seconds = build(profiles_dir, "--full-refresh")
            best["full"] = min(best.get("full", seconds), seconds)
        full = best["full"]
        print(f"full dbt build + publish             {full:8.1f} s   (best of {args.rounds})")
        for fraction, goal in FRACTIONS.items():
            print(
                f"incremental after {float(fraction):5.1%} ({changed[fraction]:>7,} rows) "
                f"{best[fraction]:8.1f} s = {best[fraction] / full:.3f} of full   "
                f"(target <= {goal})"
            )
    if os.environ.get("BENCH_KEEP") != "1":
        for name in ("benchdbt_app", "benchdbt_wh"):
            drop_database(admin, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
