"""Running dbt: ``dbt build`` against the same profile and target the loaders use,
with the outcome of every model, test and snapshot recorded in ``ops``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime

import psycopg2.extensions

from tidewater.cli import say
from tidewater.db import ConnectFn, warehouse_connector
from tidewater.embedded import configured_server
from tidewater.lock import raw_settled
from tidewater.paths import DBT_PROJECT_DIR
from tidewater.profile import EMBEDDED_PORT_ENV, Target
from tidewater.runs import PIPELINE_RUN_ENV, pipeline_run_id, record_dbt_results, record_job
from transform.audit import (
    forget_stale_marks,
    load_artifacts,
    project_fingerprint,
    read_marks,
    tested_relations,
    write_marks,
)
from transform.exceptions import TransformFailed
from transform.inputs import (
    BuildInputs,
    changed_tables,
    keep_build_attempt,
    keep_published_inputs,
    last_attempted_code,
    last_published_inputs,
    nothing_to_do,
    read_inputs,
)
from transform.publish import BuildOutcome, publish, read_build_outcome
from transform.selection import changed_source_selectors


def dbt_env() -> dict[str, str]:
    """The environment every dbt invocation gets."""
    env = dict(os.environ)
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.setdefault("DBT_LOG_FORMAT", "text")
    if not sys.stdout.isatty():
        # A cron log or CI log gets plain text, not colour codes.
        env.setdefault("DBT_USE_COLORS", "false")
    # A profile copied from profiles.example.yml names the embedded server's port
    # through this variable, so dbt finds the server where it really runs.
    env.setdefault(EMBEDDED_PORT_ENV, str(configured_server().port))
    env.setdefault(PIPELINE_RUN_ENV, pipeline_run_id())
    return env


def dbt_command(command: str, target: Target, *args: str) -> list[str]:
    """The argument vector for ``dbt <command>`` on this project and target."""
    dbt = os.path.join(os.path.dirname(sys.executable), "dbt")
    return [
        dbt if os.path.exists(dbt) else "dbt",
        *command.split(),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(target.profiles_dir),
        "--target",
        target.name,
        *args,
    ]


def run_dbt(
    command: str,
    target: Target,
    *args: str,
    record: bool = True,
    details: dict[str, object] | None = None,
) -> list[str]:
    """Run a dbt command; with ``record``, write the job and per-node results to ops.

    Returns the relations a ``build`` published into the live marts (none otherwise).
    """
    argv = dbt_command(command, target, *args)
    if target.name.startswith("dev"):
        record = False  # a personal development build is not a pipeline run
    if not record:
        code = subprocess.call(argv, env=dbt_env())
        if code:
            raise TransformFailed(command, code, [])
        return []
    connect = warehouse_connector(target)
    # never read a previous run's results
    (DBT_PROJECT_DIR / "target" / "run_results.json").unlink(missing_ok=True)
    # Audit marks (transform/audit.py): PostgreSQL builds only, where the raw
    # lock makes them exact.
    audited = command == "build" and target.type == "postgres"
    fingerprint = project_fingerprint() if audited else ""
    marks: dict[str, datetime] = {}
    with record_job(connect, f"dbt {command}") as run:
        marks_in_use = 0
        if audited:
            marks_in_use = _forget_stale_marks(connect, fingerprint, "--full-refresh" in args)
        with raw_settled(target):
            code = subprocess.call(argv, env=dbt_env())
            manifest, results = load_artifacts(DBT_PROJECT_DIR / "target")
            if audited and code == 0 and manifest and results:
                conn = connect()
                try:
                    marks = read_marks(conn, tested_relations(manifest, results["results"]))
                finally:
                    conn.close()
        failed: list[str] = []
        if results:
            conn = connect()
            conn.autocommit = True
            try:
                record_dbt_results(conn, run.run_id, results)
            finally:
                conn.close()
            failed = [
                r["unique_id"]
                for r in results.get("results", [])
                if r.get("status") in ("error", "fail", "runtime error")
            ]
            run.details = {
                **(details or {}),
                "audited_since_marks": marks_in_use,
                "nodes": len(results.get("results", [])),
                "failed": failed,
                "skipped": sum(
                    1 for r in results.get("results", []) if r.get("status") == "skipped"
                ),
            }
        if code:
            raise TransformFailed(command, code, failed)
    published: list[str] = []
    if command == "build":
        published = publish_marts(target, read_build_outcome(manifest, results))
        if marks:
            conn = connect()
            try:
                with conn:
                    write_marks(conn, marks, fingerprint, run.run_id)
            finally:
                conn.close()
    elif command == "run":
        say(
            "dbt run built the marts into their shadow schema without running tests; only "
            "`invoke transform` (dbt build) publishes the marts"
        )
    return published


def build_if_changed(
    target: Target, *args: str, details: dict[str, object] | None = None
) -> list[str]:
    """``dbt build`` and publish what the inputs that changed since the last green,
    published build need. Nothing, when no raw table and no file of the dbt project
    changed: then dbt is not started, and the job is recorded as having had nothing to
    do. Only what depends on the changed raw tables (and the models over ``ops``), when
    the project is the same (``transform.selection``). Everything otherwise. The choice
    is in the job's record (``details.selected``). Returns the relations published."""
    if target.type != "postgres" or target.name.startswith("dev"):
        return run_dbt("build", target, *args, details=details)
    connect = warehouse_connector(target)
    conn = connect()
    conn.autocommit = True
    try:
        inputs = read_inputs(conn, fingerprint=project_fingerprint(), target_name=target.name)
        published_before = last_published_inputs(conn)
        attempted_code = last_attempted_code(conn)
    finally:
        conn.close()
    full_refresh = "--full-refresh" in args
    if not full_refresh and nothing_to_do(inputs, published_before, attempted_code):
        with record_job(connect, "dbt build") as run:
            run.rows = 0
            run.details = {**(details or {}), "nothing_to_do": NOTHING_TO_DO}
        say(f"nothing to transform: {NOTHING_TO_DO} (dbt was not started)")
        return []
    changed = changed_tables(inputs, published_before, attempted_code)
    selectors = None if changed is None else changed_source_selectors(changed)
    selection: list[str] = []
    if selectors and not full_refresh:
        selection = ["--select", *selectors]
        say(f"building what depends on the changed raw tables: {', '.join(changed or ())}")
    details = {**(details or {}), "selected": selectors if selection else "everything"}
    _remember(connect, keep_build_attempt, inputs)
    published = run_dbt("build", target, *args, *selection, details=details)
    _remember(connect, keep_published_inputs, inputs)
    return published


def _remember(
    connect: ConnectFn,
    keep: Callable[[psycopg2.extensions.connection, BuildInputs, str], None],
    inputs: BuildInputs,
) -> None:
    """Keep a record of this build's inputs in a transaction of its own."""
    conn = connect()
    try:
        with conn:
            keep(conn, inputs, pipeline_run_id())
    finally:
        conn.close()


NOTHING_TO_DO = "no raw table and no dbt project file changed since the last published build"


def _forget_stale_marks(connect: ConnectFn, fingerprint: str, full_refresh: bool) -> int:
    """Drop marks that no longer hold; returns how many remain in use."""
    conn = connect()
    try:
        with conn, conn.cursor() as cur:
            forgotten = forget_stale_marks(conn, fingerprint, everything=full_refresh)
            cur.execute("select count(*) from ops.audit_marks")
            remaining = int(cur.fetchone()[0])
    finally:
        conn.close()
    if forgotten:
        say(
            f"testing every row this run: {forgotten} audit marks were recorded with "
            "other dbt code" + (" (or --full-refresh)" if full_refresh else "")
        )
    return remaining


def publish_marts(target: Target, outcome: BuildOutcome) -> list[str]:
    """Publish what a green ``dbt build`` built in the shadow schema (recorded)."""
    if not outcome.publishable:
        return []
    with record_job(warehouse_connector(target), "publish") as run:
        published = publish(warehouse_connector(target), outcome, dialect=target.type)
        run.rows = len(published)
        run.details = {"from": outcome.build, "into": outcome.live, "tables": published}
    say(f"published {len(published)} tested marts from {outcome.build} into {outcome.live}")
    return published


FAILED_IN_LAST_LOAD = """
select source_name, table_name
from ops.table_loads
where status = 'failed' and run_id = (
    select run_id from ops.job_runs where job = 'load' and status <> 'running'
    order by started_at desc limit 1
)
order by 1, 2
"""


def failed_source_selectors(target: Target) -> list[str]:
    """dbt selectors (``source:app.orders+``) for tables whose last load failed."""
    conn = warehouse_connector(target)()
    try:
        with conn.cursor() as cur:
            cur.execute("select to_regclass('ops.table_loads') is not null")
            if not cur.fetchone()[0]:
                return []
            cur.execute(FAILED_IN_LAST_LOAD)
            return [f"source:{source}.{table}+" for source, table in cur.fetchall()]
    finally:
        conn.close()
