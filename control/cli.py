"""The command line, ``tidewater <command>`` (or ``python -m control <command>``): the
chain's jobs (load, transform, roles), the embedded server, connection URLs, setup,
the demo app, status, report and graph. The `invoke` tasks call the same functions.

Exit codes: 0 done; 1 failed (one line on stderr, never a traceback); 2 a usage error
or drift (a roles plan that is not empty, verify finding differences); dbt's own code
where dbt failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

import psycopg2

from tidewater import embedded
from tidewater.cli import configure_output, fail, say
from tidewater.exceptions import TidewaterError
from tidewater.manifest import parsed_manifest
from tidewater.profile import load_target


def _up(args: argparse.Namespace) -> None:
    server = embedded.start()
    say(f"embedded PostgreSQL is running on {server.host}:{server.port} (data in {server.pgdata})")


def _down(args: argparse.Namespace) -> None:
    stopped = embedded.stop()
    say("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


def _dsn(args: argparse.Namespace) -> None:
    if args.source:
        from control.setup import demo_reader_dsn
        from loaders.config import load_sources, select_sources, source_dsn
        from tidewater.db import redact_dsn

        (source,) = select_sources(load_sources(), [args.source])
        dsn = source_dsn(source)
        if dsn is None:
            if args.source != "app":
                raise TidewaterError(f"source {args.source} has no DSN; export {source.dsn_env}")
            dsn = demo_reader_dsn()
        print(dsn if args.with_password else redact_dsn(dsn))
        return
    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        server = embedded.start()
        if target.password:
            # The URL names the password file; it must hold what the profile logs in with.
            embedded.remember_password(server, target.user, target.password)
    print(target.dsn(with_password=args.with_password))


def _up_if_embedded(args: argparse.Namespace) -> None:
    from control.setup import admin_target, create_database_if_missing

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
        create_database_if_missing(admin_target(target), target.dbname)


def _lint_sql(args: argparse.Namespace) -> None:
    import os
    import subprocess

    from control.setup import ensure_warehouse
    from tidewater.paths import PROJECT_ROOT
    from transform.build import dbt_env

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    ensure_warehouse(target)  # the dbt templater compiles against the warehouse
    env = dbt_env() | {"DBT_PROFILES_DIR": str(target.profiles_dir), "DBT_TARGET": target.name}
    sqlfluff = os.path.join(os.path.dirname(sys.executable), "sqlfluff")
    code = subprocess.call(
        [sqlfluff, "lint", "dbt_project", "--processes", "2"], cwd=PROJECT_ROOT, env=env
    )
    if code:
        raise TidewaterError("sqlfluff found problems (listed above); `sqlfluff fix` can fix most")


def _status(args: argparse.Namespace) -> None:
    from control.status import print_status

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
    print_status(target, as_json=args.json)


def _graph(args: argparse.Namespace) -> None:
    from control.graph import build_graph, to_mermaid

    print(to_mermaid(build_graph(parsed_manifest())), end="")


def _report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from control.report import write_report
    from tidewater.db import connect

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
    manifest = parsed_manifest()
    conn = connect(target, what=f"the warehouse (target {target.name})")
    try:
        path = write_report(conn, Path(args.output), days=args.days, manifest=manifest)
    finally:
        conn.close()
    say(f"report written to {path.resolve()}")


def _setup(args: argparse.Namespace) -> None:
    from control.setup import ensure_warehouse

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    ensure_warehouse(target)
    say(f"warehouse ready: {target.dsn()}")


def _app(args: argparse.Namespace) -> None:
    from control.setup import demo_reader_dsn

    print(demo_reader_dsn(scale=args.scale, refresh=True))


def _simulate(args: argparse.Namespace) -> None:
    import demo_app.workload
    from control.demo import send_page_views
    from control.setup import ensure_demo_app, ensure_warehouse

    counts = demo_app.workload.simulate(ensure_demo_app(), steps=args.steps, seed=args.seed)
    say("demo app workload: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
    # The shop's front end posts page views to the event collector.
    target = load_target(args.target, profiles_dir=args.profiles_dir)
    ensure_warehouse(target)
    send_page_views(target, count=args.steps, seed=args.seed)


def _load(args: argparse.Namespace) -> None:
    from control.jobs import run_load

    run_load(
        target=args.target,
        profiles_dir=args.profiles_dir,
        sources=args.source or (),
        tables=args.table or (),
        workers=args.workers,
        retries=args.retries,
        keep_going=args.keep_going,
        wait_s=args.wait,
        as_json=args.json,
    )


def _transform(args: argparse.Namespace) -> None:
    from control.jobs import run_transform

    run_transform(
        target=args.target,
        profiles_dir=args.profiles_dir,
        full_refresh=args.full_refresh,
        select=args.select or (),
        exclude=args.exclude or (),
        skip_failed_sources=args.skip_failed_sources,
        wait_s=args.wait,
    )


def _collect(args: argparse.Namespace) -> None:
    from control.jobs import run_collector

    run_collector(
        target=args.target,
        profiles_dir=args.profiles_dir,
        sources=args.source or (),
        host=args.host,
        port=args.port,
    )


def _consume(args: argparse.Namespace) -> None:
    from control.jobs import run_consumer

    run_consumer(target=args.target, profiles_dir=args.profiles_dir, sources=args.source or ())


def _declare(args: argparse.Namespace) -> None:
    from control.declare import declare

    declare(args.source, schema=args.schema, views=args.views)


def _roles(args: argparse.Namespace) -> None:
    from roles.__main__ import main as roles_main

    options = ["--target", args.target] if args.target else []
    options += ["--profiles-dir", args.profiles_dir] if args.profiles_dir else []
    _up_if_embedded(args)
    code = roles_main([args.roles_command, *options, *args.roles_args])
    if code:
        raise SystemExit(code)


def _dbt(args: argparse.Namespace) -> None:
    from transform.build import run_dbt

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
    # dbt's command groups take their subcommand first: `docs generate`, `source freshness`.
    words = [args.command]
    rest = list(args.dbt_args)
    while rest and not rest[0].startswith("-") and args.command in ("docs", "source"):
        words.append(rest.pop(0))
    run_dbt(" ".join(words), target, *rest, record=False)


WAIT_HELP = "seconds to wait for a running pipeline before giving up"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidewater", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", help="dbt profile target (default: the profile's)")
    parser.add_argument("--profiles-dir", help="directory holding profiles.yml")
    commands = parser.add_subparsers(dest="command_name", required=True)
    commands.add_parser("up", help="start the embedded server").set_defaults(run=_up)
    commands.add_parser("down", help="stop the embedded server").set_defaults(run=_down)
    dsn = commands.add_parser("dsn", help="print a connection URL")
    dsn.add_argument("--source", help="print this source's URL instead of the warehouse's")
    dsn.add_argument("--with-password", action="store_true")
    dsn.set_defaults(run=_dsn)
    commands.add_parser(
        "up-if-embedded", help="start the embedded server and create the database if needed"
    ).set_defaults(run=_up_if_embedded)
    commands.add_parser("lint-sql", help="sqlfluff over the dbt project").set_defaults(
        run=_lint_sql
    )
    status = commands.add_parser("status", help="recent runs, rows, failures and freshness")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)
    commands.add_parser("graph", help="the dependency graph as Mermaid text").set_defaults(
        run=_graph
    )
    report = commands.add_parser("report", help="write the HTML pipeline report")
    report.add_argument("--output", default="report.html")
    report.add_argument("--days", type=int, default=30)
    report.set_defaults(run=_report)
    commands.add_parser("setup", help="create the warehouse and apply roles").set_defaults(
        run=_setup
    )
    app = commands.add_parser("app", help="create or refresh the demo app")
    app.add_argument("--scale", type=float, default=1.0)
    app.set_defaults(run=_app)
    simulate = commands.add_parser("simulate", help="mutate the demo app like live traffic")
    simulate.add_argument("--steps", type=int, default=100)
    simulate.add_argument("--seed", type=int)
    simulate.set_defaults(run=_simulate)
    load = commands.add_parser("load", help="load every declared table into raw_<source>")
    load.add_argument("--source", action="append", help="only this source (repeatable)")
    load.add_argument("--table", action="append", help="only this table (repeatable)")
    load.add_argument("--workers", type=int, default=4, help="tables loaded at once")
    load.add_argument("--retries", type=int, default=5, help="attempts per table")
    load.add_argument(
        "--keep-going", action="store_true", help="load the other tables when one fails"
    )
    load.add_argument("--json", action="store_true", help="print results as JSON")
    load.add_argument("--wait", type=float, default=0.0, help=WAIT_HELP)
    load.set_defaults(run=_load)
    collect = commands.add_parser("collect", help="the HTTP event collector (POST /v1/events)")
    collect.add_argument("--source", action="append", help="only this http source (repeatable)")
    collect.add_argument("--host", default="127.0.0.1", help="address to listen on")
    collect.add_argument("--port", type=int, default=8787, help="port to listen on")
    collect.set_defaults(run=_collect)
    consume = commands.add_parser("consume", help="read the broker streams continuously")
    consume.add_argument("--source", action="append", help="only this source (repeatable)")
    consume.set_defaults(run=_consume)
    declare = commands.add_parser("declare", help="write a source's dbt sources YAML")
    declare.add_argument("--source", required=True, help="the source's name (raw_<name>)")
    declare.add_argument("--schema", default="public", help="schema in the source database")
    declare.add_argument("--views", action="store_true", help="declare views too")
    declare.set_defaults(run=_declare)
    transform = commands.add_parser("transform", help="dbt build, test, publish; recorded")
    transform.add_argument("--wait", type=float, default=0.0, help=WAIT_HELP)
    transform.add_argument("--full-refresh", action="store_true")
    transform.add_argument("--select", nargs="+")
    transform.add_argument("--exclude", nargs="+")
    transform.add_argument(
        "--skip-failed-sources",
        action="store_true",
        help="exclude everything downstream of tables whose last load failed",
    )
    transform.set_defaults(run=_transform)
    roles = commands.add_parser("roles", help="plan, apply, verify or generate the grants")
    roles.add_argument("roles_command", choices=["plan", "apply", "verify", "generate"])
    roles.add_argument("roles_args", nargs=argparse.REMAINDER, help="--strict, --spec, --output")
    roles.set_defaults(run=_roles)
    dbt = commands.add_parser("dbt", help="run any dbt command on this project and target")
    dbt.add_argument("command")
    dbt.add_argument("dbt_args", nargs=argparse.REMAINDER)
    dbt.set_defaults(run=_dbt)
    return parser


def _usage_errors() -> tuple[type[TidewaterError], ...]:
    from loaders.exceptions import DeclarationError, MalformedDsn

    return (DeclarationError, MalformedDsn)


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors become one line and an exit code, never a traceback."""
    args = build_parser().parse_args(argv)
    code, _ = run_guarded(lambda: args.run(args))
    return code


def run_guarded(job: Callable[[], Any]) -> tuple[int, Any]:
    """Call ``job``; return its exit code (0, or the error's, printed as one line) and
    its value. Usage errors exit 2, a job's own code where it has one (dbt's, drift),
    anything unexpected 1 with a hint (``TIDEWATER_DEBUG=1`` re-raises it)."""
    configure_output()
    previous_hook = sys.excepthook
    sys.excepthook = _quiet_driver_noise(previous_hook)
    try:
        return 0, job()
    except SystemExit as exc:
        return (exc.code if isinstance(exc.code, int) else 1), None
    except _usage_errors() as exc:
        return fail(exc, code=2), None
    except TidewaterError as exc:
        return fail(exc, code=getattr(exc, "exit_code", 1)), None
    except KeyboardInterrupt:
        print(
            "error: interrupted (the run is recorded as failed); each table loaded "
            "completely or not at all: run the job again to finish",
            file=sys.stderr,
        )
        return 130, None
    except Exception as exc:
        if os.environ.get("TIDEWATER_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        print(
            f"error: unexpected {exc.__class__.__name__}: {message} (the run is recorded as "
            "failed; set TIDEWATER_DEBUG=1 to see the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1, None
    finally:
        sys.excepthook = previous_hook


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
