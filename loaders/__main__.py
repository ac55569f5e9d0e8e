"""``python -m loaders``: load every declared table into the warehouse."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from types import TracebackType
from typing import Any

import psycopg2

from loaders.config import check_dsn, load_sources, select_sources
from loaders.exceptions import DeclarationError, MalformedDsn
from loaders.pipeline import (
    LoadOptions,
    TableResult,
    load_all,
    prepare_warehouse,
    raise_on_failure,
)
from tidewater.cli import fail, print_table, say
from tidewater.exceptions import TidewaterError
from tidewater.progress import TableProgress
from tidewater.runs import record_job, record_table_loads, write_record
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
    previous_hook = sys.excepthook
    sys.excepthook = _quiet_driver_noise(previous_hook)
    try:
        return _load(args)
    except USAGE_ERRORS as exc:
        return fail(exc, code=2)
    except TidewaterError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        print(
            "error: interrupted (the run is recorded as failed); each table loaded "
            "completely or not at all: run the load again to finish",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if os.environ.get("TIDEWATER_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        print(
            f"error: unexpected {exc.__class__.__name__}: {message} (the run is recorded as "
            "failed; set TIDEWATER_DEBUG=1 to see the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        sys.excepthook = previous_hook


USAGE_ERRORS = (DeclarationError, MalformedDsn)


def _load(args: argparse.Namespace) -> int:
    sources = select_sources(load_sources(), args.source)
    for source in sources:
        check_dsn(source)
    target, connectors = resolve_sources(
        sources, target=args.target, profiles_dir=args.profiles_dir
    )
    connect_warehouse = warehouse_connector(target)
    total = sum(len(source.tables) for source in sources)
    with record_job(connect_warehouse, "load") as run, TableProgress(total) as progress:
        new_schemas = prepare_warehouse(connect_warehouse, sources)
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
            prepared=True,
        )
        write_record(
            connect_warehouse,
            lambda conn: record_table_loads(conn, run.run_id, results),
            what=f"the table loads of run {run.run_id}",
        )
        # A raw schema this run created gets the role spec's grants now, inside the
        # recorded job, so analysts can read the new tables at once.
        created = tuple(
            source.raw_schema
            for source in sources
            if source.raw_schema in new_schemas
            and any(r.source == source.name and r.status != "failed" for r in results)
        )
        if created:
            grant_new_schemas(target, created)
        run.rows = sum(r.inserted + r.updated + r.deleted for r in results)
        warnings = [warning for r in results for warning in r.warnings]
        run.details = {
            "tables": len(results),
            "failed": [r.name for r in results if r.status == "failed"],
            **({"warnings": warnings} if warnings else {}),
        }
        _report(results, as_json=args.json)
        for warning in warnings:
            say(f"warning: {warning}")
        raise_on_failure(results)
    return 0


def _quiet_driver_noise(
    previous: Callable[[type[BaseException], BaseException, TracebackType | None], Any],
) -> Callable[[type[BaseException], BaseException, TracebackType | None], Any]:
    """psycopg2 prints (through ``sys.excepthook``) a `SystemError` chained to the
    server's message when a connection dies mid-COPY; the same fault is raised to the
    loader, which retries it and reports it in one line. Everything else prints."""

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> Any:
        if isinstance(error, SystemError) and isinstance(error.__cause__, psycopg2.Error):
            return None
        return previous(kind, error, tb)

    return hook


REREAD_NOTE = (
    "re-read: rows read again on purpose, not changes: those at or below the previous mark "
    "(ties, and rows of transactions still open at the last read or within `lag`) and, with "
    "detect_deletes, whole key ranges whose count or checksum differed; unchanged rows are "
    "not written, so only inserted/updated/deleted changed the warehouse"
)


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
    print(REREAD_NOTE)


if __name__ == "__main__":
    sys.exit(main())
