"""tidewater's tasks. The main job is `invoke load transform`.

Tasks are thin: each calls a package (`python -m loaders`, `python -m roles`,
`python -m tidewater`) or a tool, and exits with its exit code.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid

from invoke import Context, Exit, task

PYTHON = shlex.quote(sys.executable)
os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
# One invoke process is one pipeline run: every job it starts (`invoke load
# transform`: the load, the dbt build, the publish), in whatever subprocess,
# records this id in ops.job_runs.pipeline_run_id (see tidewater.runs).
os.environ["TIDEWATER_PIPELINE_RUN_ID"] = uuid.uuid4().hex[:12]
# `invoke load transform --keep-going`: the flag belongs to transform on the command
# line, but the load must know it too, so a failed table does not stop the chain.
KEEP_GOING = "--keep-going" in sys.argv
_deferred_failure: list[int] = []


def _run(c: Context, command: str) -> None:
    """Run a command; on failure exit with its code (it has printed its own error)."""
    result = c.run(command, warn=True, pty=False)
    if result is None or result.failed:
        raise Exit(code=result.return_code if result is not None else 1)


def _pipeline_lock(c: Context, target: str, profiles_dir: str, job: str, wait: float) -> None:
    """One pipeline run at a time (a lock on ops.pipeline_lock held by this process)."""
    from tidewater.exceptions import TidewaterError
    from tidewater.lock import acquire
    from tidewater.profile import load_target
    from tidewater.setup import ensure_warehouse

    try:
        resolved = load_target(target or None, profiles_dir=profiles_dir or None)
        ensure_warehouse(resolved)
        if not resolved.name.startswith("dev"):  # personal dev builds never block the pipeline
            acquire(resolved, job=job, wait_s=wait)
    except TidewaterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise Exit(code=1) from None


def _common(target: str | None, profiles_dir: str | None) -> str:
    options = ""
    if target:
        options += f" --target {shlex.quote(target)}"
    if profiles_dir:
        options += f" --profiles-dir {shlex.quote(profiles_dir)}"
    return options


@task
def up(c: Context) -> None:
    """Start the embedded PostgreSQL server (data in .tidewater/pgdata)."""
    _run(c, f"{PYTHON} -m tidewater up")


@task
def down(c: Context) -> None:
    """Stop the embedded PostgreSQL server."""
    _run(c, f"{PYTHON} -m tidewater down")


@task(
    help={
        "source": "print this source's URL (e.g. app) instead of the warehouse's",
        "target": "a profile target, e.g. dev_alice (default: the profile's)",
    }
)
def dsn(c: Context, source: str = "", target: str = "", profiles_dir: str = "") -> None:
    """Print the warehouse connection URL (or a source's), for psql and scripts; no password."""
    extra = f" --source {shlex.quote(source)}" if source else ""
    _run(c, f"{PYTHON} -m tidewater{_common(target, profiles_dir)} dsn{extra}")


@task(help={"scale": "1 ≈ 1,000 customers and 25,000 events; 200 ≈ 5 million events"})
def app(c: Context, scale: float = 1.0) -> None:
    """Create or refresh the demo production app (database `app` on the embedded server)."""
    _run(c, f"{PYTHON} -m tidewater app --scale {scale}")


@task(help={"steps": "transactions to run", "seed": "random seed (default: random)"})
def simulate(c: Context, steps: int = 100, seed: int | None = None) -> None:
    """Mutate the demo app like live traffic: inserts, status changes, deletes."""
    extra = f" --seed {seed}" if seed is not None else ""
    _run(c, f"{PYTHON} -m tidewater simulate --steps {steps}{extra}")


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
    _pipeline_lock(c, target, profiles_dir, "load", wait)
    keep_going = keep_going or KEEP_GOING
    options = _common(target, profiles_dir) + f" --workers {workers}"
    if source:
        options += f" --source {shlex.quote(source)}"
    if table:
        options += f" --table {shlex.quote(table)}"
    if keep_going:
        options += " --keep-going"
        result = c.run(f"{PYTHON} -m loaders{options}", warn=True, pty=False)
        if result is not None and result.failed:
            # Let transform build what does not depend on the failed tables; exit
            # non-zero at the end of the chain.
            _deferred_failure.append(result.return_code)
            if "transform" not in sys.argv:
                raise Exit(code=result.return_code)
        return
    _run(c, f"{PYTHON} -m loaders{options}")


@task(
    help={
        "source": "the source's name; its DSN is in TIDEWATER_SOURCE_<NAME>_DSN",
        "schema": "schema in the source database",
        "views": "declare views too",
    }
)
def declare(c: Context, source: str, schema: str = "public", views: bool = False) -> None:
    """Write a source's dbt sources YAML from its catalog (new tables only on a rerun)."""
    extra = f" --schema {shlex.quote(schema)}" + (" --views" if views else "")
    _run(c, f"{PYTHON} -m loaders.declare --source {shlex.quote(source)}{extra}")


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
    _pipeline_lock(c, target, profiles_dir, "transform", wait)
    options = " --full-refresh" if full_refresh else ""
    if select:
        options += f" --select {shlex.quote(select)}"
    if keep_going:
        options += " --skip-failed-sources"
    _run(c, f"{PYTHON} -m tidewater{_common(target, profiles_dir)} transform{options}")
    if _deferred_failure:
        raise Exit(code=_deferred_failure[0])


@task(
    help={
        "apply": "apply the plan (default: print it, changing nothing)",
        "verify": "try every operation as each role and print the matrix",
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
    command = "plan"
    extra = " --strict" if strict else ""
    if apply:
        command = "apply"
    if verify:
        command = "verify"
    if generate:
        command, extra = "generate", f" --output {shlex.quote(generate)}"
    if spec:
        extra += f" --spec {shlex.quote(spec)}"
    _run(c, f"{PYTHON} -m tidewater{_common(target, profiles_dir)} up-if-embedded")
    _run(c, f"{PYTHON} -m roles {command}{_common(target, profiles_dir)}{extra}")


@task
def lint(c: Context) -> None:
    """ruff over the Python, sqlfluff (dbt templater) over the dbt project."""
    _run(c, "ruff check .")
    _run(c, "ruff format --check .")
    _run(c, f"{PYTHON} -m tidewater lint-sql")


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
    published = shlex.quote("{marts_build_schema: marts}")
    tidewater = f"{PYTHON} -m tidewater{_common(target, profiles_dir)}"
    _run(c, f"{tidewater} dbt docs generate --vars {published}")
    page = DBT_PROJECT_DIR / "target" / "index.html"
    if not serve:
        print(
            f"docs written to {page}; to browse them run `invoke docs --serve` and open "
            f"http://127.0.0.1:{port} (the page loads manifest.json and catalog.json beside it)",
            file=sys.stderr,
        )
        return
    print(f"serving {page} at http://127.0.0.1:{port} (Ctrl-C stops)", file=sys.stderr)
    _run(c, f"{tidewater} dbt docs serve --host 127.0.0.1 --port {port} --no-browser")


@task(help={"json": "print machine-readable JSON"})
def status(c: Context, json: bool = False, target: str = "", profiles_dir: str = "") -> None:
    """What ran, when, for how long, with how many rows; failures and freshness."""
    extra = " --json" if json else ""
    _run(c, f"{PYTHON} -m tidewater{_common(target, profiles_dir)} status{extra}")


@task(help={"output": "where to write the page", "days": "history to show"})
def report(
    c: Context,
    output: str = "report.html",
    days: int = 30,
    target: str = "",
    profiles_dir: str = "",
) -> None:
    """Write one self-contained HTML page: Gantt of the last run, trends, rows, freshness."""
    common = _common(target, profiles_dir)
    _run(c, f"{PYTHON} -m tidewater{common} report --output {shlex.quote(output)} --days {days}")


@task
def graph(c: Context, target: str = "", profiles_dir: str = "") -> None:
    """Print the dependency graph (source tables → raw → staging → marts → exposures) as Mermaid."""
    _run(c, f"{PYTHON} -m tidewater{_common(target, profiles_dir)} graph")


@task(help={"args": "extra pytest arguments"})
def test(c: Context, args: str = "") -> None:
    """Run the test suite against a real PostgreSQL (embedded, or TIDEWATER_TEST_DSN)."""
    _run(c, f"{PYTHON} -m pytest {args}")


@task(
    help={
        "scale": "demo app scale; 200 ≈ 5 million events",
        "what": "loaders (default), dbt, status, or all",
    }
)
def bench(c: Context, scale: float = 200.0, what: str = "loaders") -> None:
    """Benchmarks (long, not in CI): loaders vs a psql COPY pipe, dbt incremental, status."""
    modules = {"loaders": "bench", "dbt": "bench.dbt", "status": "bench.status"}
    chosen = list(modules) if what == "all" else [what]
    for name in chosen:
        if name not in modules:
            raise Exit(f"unknown benchmark {name!r}; choose one of: {', '.join(modules)}, all")
        scale_option = "" if name == "status" else f" --scale {scale}"
        _run(c, f"{PYTHON} -m {modules[name]}{scale_option}")
