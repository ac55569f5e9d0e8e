"""The jobs of the chain, as functions: load, transform, verify the roles.

Every way of starting a job — an `invoke` task, the `tidewater` command line, an
Airflow task — calls these, so each one takes the pipeline lock and writes its run
record itself: no entry point can skip them. Each raises a `TidewaterError` with a
one-line message on failure; the callers turn it into an exit code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from control.setup import ensure_warehouse, grant_new_schemas, resolve_sources
from control.summary import print_load_summary, print_stream_summary
from loaders.config import EVENT_SOURCE_KINDS, SourceConfig, check_dsn, load_sources, select_sources
from loaders.pipeline import LoadOptions, TableResult, load_all, prepare_warehouse, raise_on_failure
from tidewater import lock
from tidewater.cli import say, warn
from tidewater.db import warehouse_connector
from tidewater.exceptions import TidewaterError
from tidewater.profile import Target, load_target
from tidewater.progress import TableProgress
from tidewater.runs import record_job, record_table_loads, write_record


class StreamsFailed(TidewaterError):
    """A broker stream could not be drained to its tail (the others were)."""

    def __init__(self, failures: Sequence[str]) -> None:
        self.failures = tuple(failures)
        super().__init__(
            f"{len(self.failures)} event stream(s) failed: {'; '.join(self.failures)}; "
            "fix the cause and run `invoke load` again (each stream resumes where it stopped)"
        )


class RolesDrift(TidewaterError):
    """`roles verify` found the grants differ from the spec (or could not check)."""

    def __init__(self, code: int) -> None:
        self.exit_code = code
        super().__init__(
            "the server's grants differ from roles/roles.yml (listed above); run "
            "`invoke roles` to see the plan and `invoke roles --apply` to fix them"
            if code == 2
            else "roles verify failed (see above)"
        )


def is_pipeline_target(target: Target) -> bool:
    """Personal development targets (``dev_*``) never take or wait for the pipeline lock."""
    return not target.name.startswith("dev")


@contextmanager
def pipeline_lock(target: Target, *, job: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the pipeline lock for the block (unless this process holds it already, as
    `invoke load transform` does for its whole chain); a dev target takes none."""
    if not is_pipeline_target(target) or lock.holds(target):
        yield
        return
    lock.acquire(target, job=job, wait_s=wait_s)
    try:
        yield
    finally:
        lock.release(target)


def hold_pipeline(
    *, target: str | None = None, profiles_dir: str | None = None, job: str, wait_s: float = 0.0
) -> None:
    """Take the pipeline lock for the rest of this process (a chain of jobs, such as
    `invoke load transform`, runs under one lock; the jobs then take none of their own)."""
    resolved = load_target(target, profiles_dir=profiles_dir)
    ensure_warehouse(resolved)
    if is_pipeline_target(resolved):
        lock.acquire(resolved, job=job, wait_s=wait_s)


def run_load(
    *,
    target: str | None = None,
    profiles_dir: str | None = None,
    sources: Sequence[str] = (),
    tables: Sequence[str] = (),
    workers: int = 4,
    retries: int = 5,
    keep_going: bool = False,
    wait_s: float = 0.0,
    as_json: bool = False,
) -> list[TableResult]:
    """Load every declared table (or the ones named) into ``raw_<source>``.

    Takes the pipeline lock, records the job (``load``) and every table's numbers,
    grants a raw schema it created to the role spec's readers, prints the summary.

    Raises:
        LoadRunFailed: a table failed (the others loaded only with ``keep_going``).
    """
    declared = select_sources(load_sources(), list(sources) or None)
    table_sources = tuple(source for source in declared if source.kind not in EVENT_SOURCE_KINDS)
    event_sources = tuple(source for source in declared if source.kind in EVENT_SOURCE_KINDS)
    for source in table_sources:
        check_dsn(source)
    resolved = load_target(target, profiles_dir=profiles_dir)
    ensure_warehouse(resolved)
    with pipeline_lock(resolved, job="load", wait_s=wait_s):
        connectors = resolve_sources(table_sources, target=resolved)
        connect_warehouse = warehouse_connector(resolved)
        total = sum(len(source.tables) for source in table_sources)
        with record_job(connect_warehouse, "load") as run, TableProgress(total) as progress:
            new_schemas = prepare_warehouse(connect_warehouse, declared)
            results = load_all(
                table_sources,
                source_connectors=connectors,
                connect_warehouse=connect_warehouse,
                options=LoadOptions(
                    workers=workers,
                    retries=retries,
                    keep_going=keep_going,
                    warehouse_type=resolved.type,  # type: ignore[arg-type]
                    s3_staging=os.environ.get("TIDEWATER_S3_STAGING"),
                    iam_role=os.environ.get("TIDEWATER_REDSHIFT_IAM_ROLE"),
                ),
                on_done=progress.advance,
                only_tables=set(tables) if tables else None,
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
                for source in table_sources
                if source.raw_schema in new_schemas
                and any(r.source == source.name and r.status != "failed" for r in results)
            )
            if created:
                grant_new_schemas(resolved, created)
            run.rows = sum(r.inserted + r.updated + r.deleted for r in results)
            warnings = [warning for r in results for warning in r.warnings]
            run.details = {
                "tables": len(results),
                "failed": [r.name for r in results if r.status == "failed"],
                **({"warnings": warnings} if warnings else {}),
            }
            print_load_summary(results, as_json=as_json)
            for warning in warnings:
                warn(warning)
            raise_on_failure(results)
        if event_sources:
            _drain_streams(event_sources, resolved, new_schemas, as_json=as_json)
    return results


def _drain_streams(
    sources: Sequence[SourceConfig], target: Target, new_schemas: Sequence[str], *, as_json: bool
) -> None:
    """Read every declared broker stream to its tail (job ``drain_events``), so one
    `invoke load` brings tables and events; a stream that fails fails the load."""
    import events
    from events.consumer import prepare

    # Every stream's tables exist from the first load on (a dbt source over a stream
    # the collector has not been sent anything yet reads an empty table).
    connect_warehouse = warehouse_connector(target)
    prepare(sources, connect_warehouse)
    streams = events.drain(sources, connect_warehouse=connect_warehouse)
    if streams:
        print_stream_summary(streams, as_json=as_json)
    created = tuple(s.raw_schema for s in sources if s.raw_schema in new_schemas)
    if created:
        grant_new_schemas(target, created)
    failed = [f"{r.source}.{r.stream}: {r.error}" for r in streams if r.status != "succeeded"]
    if failed:
        raise StreamsFailed(failed)


def run_collector(
    *,
    target: str | None = None,
    profiles_dir: str | None = None,
    sources: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8787,
) -> None:
    """Serve ``POST /v1/events`` for the declared ``kind: http`` sources until stopped.

    Each batch takes the raw and table locks a load takes, so the pipeline lock is not
    needed (the collector runs beside the chain)."""
    import events

    declared = select_sources(load_sources(), list(sources) or None)
    resolved = load_target(target, profiles_dir=profiles_dir)
    ensure_warehouse(resolved)
    say(f"collector listening on http://{host}:{port}/v1/events")
    events.serve(declared, connect_warehouse=warehouse_connector(resolved), host=host, port=port)


def run_consumer(
    *, target: str | None = None, profiles_dir: str | None = None, sources: Sequence[str] = ()
) -> None:
    """Read every declared broker stream continuously until SIGTERM or Ctrl-C."""
    import events

    declared = select_sources(load_sources(), list(sources) or None)
    resolved = load_target(target, profiles_dir=profiles_dir)
    ensure_warehouse(resolved)
    events.consume(declared, connect_warehouse=warehouse_connector(resolved))


def run_transform(
    *,
    target: str | None = None,
    profiles_dir: str | None = None,
    full_refresh: bool = False,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_failed_sources: bool = False,
    wait_s: float = 0.0,
) -> list[str]:
    """``dbt build`` into the shadow schema, then publish the green marts.

    Takes the pipeline lock; records ``dbt build`` (and ``publish``) with every
    node's outcome. Returns the relations published into the live marts.

    Raises:
        TransformFailed: a model or test failed; nothing was published.
        PublishFailed: the publish could not finish; the live marts are unchanged.
    """
    from transform.build import build_if_changed, failed_source_selectors, run_dbt

    resolved = load_target(target, profiles_dir=profiles_dir)
    ensure_warehouse(resolved)
    with pipeline_lock(resolved, job="transform", wait_s=wait_s):
        extra: list[str] = []
        if full_refresh:
            extra.append("--full-refresh")
        if select:
            extra += ["--select", *select]
            if not is_pipeline_target(resolved):
                # A personal build of a few models: run only the tests whose every
                # parent was built too (a relationship to an unbuilt mart would fail).
                extra += ["--indirect-selection", "cautious"]
        excluded = list(exclude)
        if skip_failed_sources:
            skipped = failed_source_selectors(resolved)
            if skipped:
                say(
                    "keep going: the last load failed for "
                    + ", ".join(s.removeprefix("source:").removesuffix("+") for s in skipped)
                    + "; building only what does not depend on them"
                )
            excluded += skipped
        if excluded:
            extra += ["--exclude", *excluded]
        if full_refresh or select or excluded:
            return run_dbt(
                "build", resolved, *extra, details={"excluded": excluded} if excluded else None
            )
        return build_if_changed(resolved)


def run_verify_roles(*, target: str | None = None, profiles_dir: str | None = None) -> None:
    """Check every operation of every role against the spec (`invoke roles --verify`).

    Raises:
        RolesDrift: the grants differ from the spec, or the check could not run.
    """
    from roles.__main__ import main as roles_main

    code = roles_main(["verify", *target_options(target, profiles_dir)])
    if code:
        raise RolesDrift(code)


def target_options(target: str | None, profiles_dir: str | None) -> list[str]:
    """``--target``/``--profiles-dir`` for a command line that takes them."""
    options: list[str] = []
    if target:
        options += ["--target", target]
    if profiles_dir:
        options += ["--profiles-dir", profiles_dir]
    return options
