"""``python -m loaders``: load every declared table into the warehouse."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from loaders.config import load_sources, select_sources
from loaders.pipeline import (
    LoadOptions,
    TableResult,
    load_all,
    prepare_warehouse,
    raise_on_failure,
)
from tidewater.cli import fail, print_table
from tidewater.exceptions import TidewaterError
from tidewater.progress import TableProgress
from tidewater.runs import record_job, record_table_loads
from tidewater.setup import grant_new_schemas, resolve_sources, warehouse_connector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders", description=__doc__)
    parser.add_argument("--target", help="dbt profile target (default: the profile's)")
    parser.add_argument("--profiles-dir", help="directory holding profiles.yml")
    parser.add_argument("--source", action="append", help="only this source (repeatable)")
    parser.add_argument("--table", action="append", help="only this table (repeatable)")
    parser.add_argument("--workers", type=int, default=4, help="tables loaded at once")
    parser.add_argument("--retries", type=int, default=5, help="attempts per table")
    parser.add_argument(
        "--keep-going", action="store_true", help="load the other tables when one fails"
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    try:
        sources = select_sources(load_sources(), args.source)
        target, connectors = resolve_sources(
            sources, target=args.target, profiles_dir=args.profiles_dir
        )
        connect_warehouse = warehouse_connector(target)
        total = sum(len(source.tables) for source in sources)
        with record_job(connect_warehouse, "load") as run, TableProgress(total) as progress:
            # A new source's raw schema gets its grants before its tables exist, so the
            # spec's default privileges cover them and analysts can read them at once.
            created = prepare_warehouse(connect_warehouse, sources)
            if created:
                grant_new_schemas(target, created)
            results = load_all(
                sources,
                source_connectors=connectors,
                connect_warehouse=connect_warehouse,
                options=LoadOptions(
                    workers=args.workers,
                    retries=args.retries,
                    keep_going=args.keep_going,
                    warehouse_type=target.type,  # type: ignore[arg-type]
                    s3_staging=os.environ.get("TIDEWATER_S3_STAGING"),
                    iam_role=os.environ.get("TIDEWATER_REDSHIFT_IAM_ROLE"),
                ),
                on_done=progress.advance,
                only_tables=set(args.table) if args.table else None,
            )
            conn = connect_warehouse()
            conn.autocommit = True
            try:
                record_table_loads(conn, run.run_id, results)
            finally:
                conn.close()
            run.rows = sum(r.inserted + r.updated + r.deleted for r in results)
            run.details = {
                "tables": len(results),
                "failed": [r.name for r in results if r.status == "failed"],
            }
            _report(results, as_json=args.json)
            raise_on_failure(results)
    except TidewaterError as exc:
        return fail(exc)
    return 0


def _report(results: list[TableResult], *, as_json: bool) -> None:
    ordered = sorted(results, key=lambda r: r.name)
    if as_json:
        print(
            json.dumps(
                [{k: v for k, v in asdict(r).items() if k != "failure"} for r in ordered],
                default=str,
            )
        )
        return
    print_table(
        [
            "table",
            "mode",
            "status",
            "read",
            "inserted",
            "updated",
            "deleted",
            "re-read",
            "mark after",
            "seconds",
        ],
        [
            [
                r.name,
                r.mode,
                r.status,
                r.rows_read,
                r.inserted,
                r.updated,
                r.deleted,
                r.reread,
                r.mark_after.isoformat(timespec="seconds") if r.mark_after else "",
                f"{r.duration_s:.2f}",
            ]
            for r in ordered
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
