"""tidewater's tasks. The main job is `invoke load transform`.

Tasks are thin: each calls a function of the application layer (`control`) in this
process, the same function the `tidewater` command line and the Airflow DAG call, so
the pipeline lock and the run records come with it. A failure ends the task with the
job's one-line error and its exit code.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Callable
from typing import Any

from invoke import Context, Exit, task

PYTHON = shlex.quote(sys.executable)
os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
# One invoke process is one pipeline run: every job it runs (`invoke load transform`:
# the load, the dbt build, the publish) records this id in
# ops.job_runs.pipeline_run_id (see tidewater.runs).
os.environ["TIDEWATER_PIPELINE_RUN_ID"] = uuid.uuid4().hex[:12]


class _Chain:
    """What one `invoke` process's tasks share: a failed `load --keep-going` lets the
    `transform` after it build what does not depend on the failed tables, and the
    chain still ends with the load's exit code."""

    deferred_exit: int | None = None


def _run(c: Context, command: str) -> None:
    """Run a tool; on failure exit with its code (it has printed its own error)."""
    result = c.run(command, warn=True, pty=False)
    if result is None or result.failed:
        raise Exit(code=result.return_code if result is not None else 1)


def _call(job: Callable[..., Any], /, **options: Any) -> Any:
    """Call a job in this process; its error becomes one line and its exit code."""
    from control.cli import run_guarded

    code, value = run_guarded(lambda: job(**options))
    if code:
        raise Exit(code=code)
    return value


def _cli(*words: str) -> None:
    """Run a `tidewater` command in this process."""
    from control.cli import main

    code = main(list(words))
    if code:
        raise Exit(code=code)


def _common(target: str | None, profiles_dir: str | None) -> list[str]:
    from control.jobs import target_options

    return target_options(target or None, profiles_dir or None)


@task
def up(c: Context) -> None:
    """Start the embedded PostgreSQL server (data in .tidewater/pgdata)."""
    _cli("up")


@task
def down(c: Context) -> None:
    """Stop the embedded PostgreSQL server."""
    _cli("down")


@task(
    help={
        "source": "print this source's URL (e.g. app) instead of the warehouse's",
        "target": "a profile target, e.g. dev_alice (default: the profile's)",
    }
)
def dsn(c: Context, source: str = "", target: str = "", profiles_dir: str = "") -> None:
    """Print the warehouse connection URL (or a source's), for psql and scripts; no password."""
    _cli(*_common(target, profiles_dir), "dsn", *(["--source", source] if source else []))


@task(help={"scale": "1 ≈ 1,000 customers and 25,000 events; 200 ≈ 5 million events"})
def app(c: Context, scale: float = 1.0) -> None:
    """Create or refresh the demo production app (database `app` on the embedded server)."""
    _cli("app", "--scale", str(scale))


@task(help={"steps": "transactions to run", "seed": "random seed (default: random)"})
def simulate(c: Context, steps: int = 100, seed: int | None = None) -> None:
    """Mutate the demo app like live traffic: inserts, status changes, deletes."""
    _cli("simulate", "--steps", str(steps), *(["--seed", str(seed)] if seed is not None else []))


def _transform_follows_with_keep_going() -> bool:
    """`invoke load transform --keep-going`: invoke gives the flag to transform, but the
    load runs first and must not end the chain on a failed table."""
    words = sys.argv[1:]
    return "transform" in words and "--keep-going" in words[words.index("transform") :]


@task(
    help={
        "source": "only this source",
        "table": "only this table",
        "workers": "tables loaded at once",
        "keep_going": "load the other tables when one fails (still exits non-zero)",
        "wait": "seconds to wait for a running pipeline before giving up",
    }
)
def load(
    c: Context,
    target: str = "",
    profiles_dir: str = "",
    source: str = "",
    table: str = "",
    workers: int = 4,
    keep_going: bool = False,
    wait: float = 0.0,
) -> None:
    """Load every declared source table into raw_<source> (incremental or bulk)."""
    from control.jobs import hold_pipeline, run_load

    chained = _transform_follows_with_keep_going()
    options = dict(
        target=target or None,
        profiles_dir=profiles_dir or None,
        sources=[source] if source else (),
        tables=[table] if table else (),
        workers=workers,
        keep_going=keep_going or chained,
        wait_s=wait,
    )
    # The lock is held for the rest of this process, so the transform after the load
    # runs under the same lock: no other run slips in between.
    _call(
        hold_pipeline,
        target=target or None,
        profiles_dir=profiles_dir or None,
        job="load",
        wait_s=wait,
    )
    try:
        _call(run_load, **options)
    except Exit as failed:
        if not chained:
            raise
        # Let transform build what does not depend on the failed tables; the chain
        # still exits non-zero at its end.
        _Chain.deferred_exit = failed.code


@task(
    help={
        "host": "address to listen on (0.0.0.0 for every interface)",
        "port": "port to listen on",
        "source": "only this http source",
    }
)
def collect(
    c: Context,
    host: str = "127.0.0.1",
    port: int = 8787,
    source: str = "",
    target: str = "",
    profiles_dir: str = "",
) -> None:
    """Run the HTTP event collector: POST /v1/events, 2xx only once the events are stored."""
    extra = ["--source", source] if source else []
    _cli(*_common(target, profiles_dir), "collect", "--host", host, "--port", str(port), *extra)


@task(help={"source": "only this source"})
def consume(c: Context, source: str = "", target: str = "", profiles_dir: str = "") -> None:
    """Read the RabbitMQ and NATS JetStream streams continuously (Ctrl-C or SIGTERM stops)."""
    _cli(*_common(target, profiles_dir), "consume", *(["--source", source] if source else []))


@task(
    help={
        "source": "the source's name; its DSN is in TIDEWATER_SOURCE_<NAME>_DSN",
        "schema": "schema in the source database",
        "views": "declare views too",
    }
)
def declare(c: Context, source: str, schema: str = "public", views: bool = False) -> None:
    """Write a source's dbt sources YAML from its catalog (new tables only on a rerun)."""
    _cli("declare", "--source", source, "--schema", schema, *(["--views"] if views else []))


@task(
    help={
        "full_refresh": "rebuild incremental models from scratch",
        "select": "dbt selector (e.g. marts)",
        "keep_going": "skip only what depends on tables whose last load failed",
        "wait": "seconds to wait for a running pipeline before giving up",
    }
)
def transform(
    c: Context,
    target: str = "",
    profiles_dir: str = "",
    full_refresh: bool = False,
    select: str = "",
    keep_going: bool = False,
    wait: float = 0.0,
) -> None:
    """dbt build into marts_build, then publish into marts; a failing test publishes nothing."""
    from control.jobs import run_transform

    _call(
        run_transform,
        target=target or None,
        profiles_dir=profiles_dir or None,
        full_refresh=full_refresh,
        select=shlex.split(select),
        skip_failed_sources=keep_going,
        wait_s=wait,
    )
    if _Chain.deferred_exit:
        raise Exit(code=_Chain.deferred_exit)


@task(
    help={
        "apply": "apply the plan (default: print it, changing nothing)",
        "verify": "check every operation of every role and print the matrix",
        "generate": "write a spec from the existing database to this path",
        "strict": "fail (exit 2) when the server has roles the spec does not know",
        "spec": "the role spec to use (default: roles/roles.yml)",
    }
)
def roles(
    c: Context,
    apply: bool = False,
    verify: bool = False,
    generate: str = "",
    strict: bool = False,
    spec: str = "",
    target: str = "",
    profiles_dir: str = "",
) -> None:
    """Plan (default; exit 2 if not empty), apply or verify the grants in roles/roles.yml."""
    command = "verify" if verify else "apply" if apply else "plan"
    extra = ["--strict"] if strict else []
    if generate:
        command, extra = "generate", ["--output", generate]
    if spec:
        extra += ["--spec", spec]
    _cli(*_common(target, profiles_dir), "roles", command, *extra)


@task
def lint(c: Context) -> None:
    """ruff over the Python, sqlfluff (dbt templater) over the dbt project."""
    _run(c, "ruff check .")
    _run(c, "ruff format --check .")
    _cli("lint-sql")


@task(
    help={
        "serve": "then serve the page with `dbt docs serve` (Ctrl-C stops it)",
        "port": "port for --serve",
    }
)
def docs(
    c: Context, target: str = "", profiles_dir: str = "", serve: bool = False, port: int = 8080
) -> None:
    """Generate dbt docs with the lineage graph (dbt_project/target/index.html); --serve it."""
    from tidewater.paths import DBT_PROJECT_DIR

    # The docs name the relations BI tools read: `marts`, not the shadow schema.
    common = _common(target, profiles_dir)
    _cli(*common, "dbt", "docs", "generate", "--vars", "{marts_build_schema: marts}")
    page = DBT_PROJECT_DIR / "target" / "index.html"
    if not serve:
        print(
            f"docs written to {page}; to browse them run `invoke docs --serve` and open "
            f"http://127.0.0.1:{port} (the page loads manifest.json and catalog.json beside it)",
            file=sys.stderr,
        )
        return
    print(f"serving {page} at http://127.0.0.1:{port} (Ctrl-C stops)", file=sys.stderr)
    _cli(
        *common, "dbt", "docs", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-browser"
    )


@task(help={"json": "print machine-readable JSON"})
def status(c: Context, json: bool = False, target: str = "", profiles_dir: str = "") -> None:
    """What ran, when, for how long, with how many rows; failures and freshness."""
    _cli(*_common(target, profiles_dir), "status", *(["--json"] if json else []))


@task(help={"output": "where to write the page", "days": "history to show"})
def report(
    c: Context,
    output: str = "report.html",
    days: int = 30,
    target: str = "",
    profiles_dir: str = "",
) -> None:
    """Write one self-contained HTML page: Gantt of the last run, trends, rows, freshness."""
    _cli(*_common(target, profiles_dir), "report", "--output", output, "--days", str(days))


@task
def graph(c: Context, target: str = "", profiles_dir: str = "") -> None:
    """Print the dependency graph (source tables → raw → staging → marts → exposures) as Mermaid."""
    _cli(*_common(target, profiles_dir), "graph")


@task(help={"args": "extra pytest arguments"})
def test(c: Context, args: str = "") -> None:
    """Run the test suite against a real PostgreSQL (embedded, or TIDEWATER_TEST_DSN)."""
    _run(c, f"{PYTHON} -m pytest {args}")


@task(
    help={
        "scale": "demo app scale (default 20, a few minutes); 200 ≈ 5 million events",
        "what": "loaders (default), dbt, chain, status, mysql, events, or all: every "
        "figure of issue 13 (loaders, dbt, chain) in one run",
        "rounds": "best of this many rounds (dbt, chain)",
    }
)
def bench(c: Context, scale: float = 20.0, what: str = "loaders", rounds: int = 3) -> None:
    """Benchmarks (long, not in CI): loaders vs a psql COPY pipe, dbt incremental, no-change chain."""
    modules = {
        "loaders": "bench",
        "dbt": "bench.dbt",
        "chain": "bench.chain",
        "status": "bench.status",
        "mysql": "bench.mysql",
        "events": "bench.events",
    }
    chosen = ["loaders", "dbt", "chain"] if what == "all" else [what]
    for name in chosen:
        if name not in modules:
            raise Exit(f"unknown benchmark {name!r}; choose one of: {', '.join(modules)}, all")
        options = {
            "loaders": f" --scale {scale}",
            "dbt": f" --scale {scale} --rounds {rounds}",
            "chain": f" --scale {scale} --rounds {rounds}",
        }.get(name, "")
        _run(c, f"{PYTHON} -m {modules[name]}{options}")
