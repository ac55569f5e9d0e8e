"""`invoke declare --source NAME`: write a source's dbt sources YAML from its catalog
(`loaders.declare` does the work) and say what was chosen and why."""

from __future__ import annotations

import os

from control.setup import ensure_demo_app
from loaders.declare import DeclareResult, declare_source
from tidewater.cli import print_table
from tidewater.exceptions import ConfigError


def declare(source: str, *, schema: str = "public", views: bool = False) -> DeclareResult:
    """Declare every base table of the source (its DSN in ``TIDEWATER_SOURCE_<NAME>_DSN``;
    the demo app for ``app``); a rerun adds only new tables."""
    env = f"TIDEWATER_SOURCE_{source.upper()}_DSN"
    dsn = os.environ.get(env)
    if not dsn:
        if source != "app":
            raise ConfigError(
                f"{env} is unset; export {env}=postgresql://user:password@host:5432/dbname "
                f"(the source database) and run `invoke declare --source {source}` again"
            )
        dsn = ensure_demo_app()
    result = declare_source(
        dsn, source, schema=schema, views=views, what=f"source {source} ({env})"
    )
    _print_result(result, source, env)
    return result


def _print_result(result: DeclareResult, name: str, env: str) -> None:
    verb = "wrote" if result.created else "updated"
    if result.added:
        print(f"{verb} {result.path}: added {len(result.added)} table(s)")
        print_table(
            ["table", "kind", "mode", "cursor", "evidence", "primary key", "detect deletes"],
            [
                [
                    table.name,
                    table.kind
                    + (f" ({len(table.partitions)} partitions)" if table.partitions else ""),
                    table.mode,
                    table.cursor or "",
                    table.evidence if table.mode == "incremental" else "",
                    ", ".join(table.primary_key) or "none",
                    "yes" if table.detect_deletes else "",
                ]
                for table in result.added
            ],
        )
    else:
        print(f"{result.path}: no new tables")
    if result.kept:
        print(f"kept as they are (already declared): {', '.join(result.kept)}")
    if result.skipped_views:
        print(f"views left out (add --views to declare them): {', '.join(result.skipped_views)}")
    guesses = [table.name for table in result.added if table.evidence.startswith("guess")]
    if guesses:
        print(f"check the guesses marked '# guess' in the file: {', '.join(guesses)}")
    print(f"next: invoke load --source {name}   (reads {env})")
