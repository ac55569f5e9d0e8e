"""``python -m tidewater``: the embedded server, connection URLs, setup, the demo
app and the transform. `invoke` tasks call these; people can too."""

from __future__ import annotations

import argparse
import sys

from tidewater import embedded
from tidewater.cli import fail, say
from tidewater.exceptions import TidewaterError
from tidewater.profile import load_target


def _up(args: argparse.Namespace) -> None:
    server = embedded.start()
    say(f"embedded PostgreSQL is running on {server.host}:{server.port} (data in {server.pgdata})")


def _down(args: argparse.Namespace) -> None:
    stopped = embedded.stop()
    say("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


def _dsn(args: argparse.Namespace) -> None:
    if args.source:
        from loaders.config import load_sources, select_sources, source_dsn
        from tidewater.db import redact_dsn
        from tidewater.setup import demo_reader_dsn

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
    from tidewater.setup import admin_target, create_database_if_missing

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
        create_database_if_missing(admin_target(target), target.dbname)


def _lint_sql(args: argparse.Namespace) -> None:
    import os
    import subprocess

    from tidewater.paths import PROJECT_ROOT
    from tidewater.setup import ensure_warehouse
    from tidewater.transform import dbt_env

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
    from tidewater.status import print_status

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
    print_status(target, as_json=args.json)


def _manifest(target: object) -> dict:
    """dbt's manifest, parsed now so it matches the project."""
    import json

    from tidewater.paths import DBT_PROJECT_DIR
    from tidewater.transform import run_dbt

    run_dbt("parse", target, "--quiet", record=False)  # type: ignore[arg-type]
    return json.loads((DBT_PROJECT_DIR / "target" / "manifest.json").read_text())


def _graph(args: argparse.Namespace) -> None:
    from tidewater.graph import build_graph, to_mermaid

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    print(to_mermaid(build_graph(_manifest(target))), end="")


def _report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from tidewater.db import connect
    from tidewater.report import write_report

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
    manifest = _manifest(target)
    conn = connect(target, what=f"the warehouse (target {target.name})")
    try:
        path = write_report(conn, Path(args.output), days=args.days, manifest=manifest)
    finally:
        conn.close()
    say(f"report written to {path.resolve()}")


def _setup(args: argparse.Namespace) -> None:
    from tidewater.setup import ensure_warehouse

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    ensure_warehouse(target)
    say(f"warehouse ready: {target.dsn()}")


def _app(args: argparse.Namespace) -> None:
    from tidewater.setup import demo_reader_dsn

    print(demo_reader_dsn(scale=args.scale, refresh=True))


def _simulate(args: argparse.Namespace) -> None:
    import demo_app.workload
    from tidewater.setup import ensure_demo_app

    counts = demo_app.workload.simulate(ensure_demo_app(), steps=args.steps, seed=args.seed)
    say("demo app workload: " + ", ".join(f"{key} {value}" for key, value in counts.items()))


def _transform(args: argparse.Namespace) -> None:
    from tidewater.setup import ensure_warehouse
    from tidewater.transform import run_dbt

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    ensure_warehouse(target)
    extra: list[str] = []
    if args.full_refresh:
        extra.append("--full-refresh")
    if args.select:
        extra += ["--select", *args.select]
        if target.name.startswith("dev"):
            # A personal build of a few models: run only the tests whose every
            # parent was built too (a relationship to an unbuilt mart would fail).
            extra += ["--indirect-selection", "cautious"]
    exclude = list(args.exclude or [])
    if args.skip_failed_sources:
        from tidewater.transform import failed_source_selectors

        skipped = failed_source_selectors(target)
        if skipped:
            say(
                "keep going: the last load failed for "
                + ", ".join(s.removeprefix("source:").removesuffix("+") for s in skipped)
                + "; building only what does not depend on them"
            )
        exclude += skipped
    if exclude:
        extra += ["--exclude", *exclude]
    run_dbt("build", target, *extra, details={"excluded": exclude} if exclude else None)


def _dbt(args: argparse.Namespace) -> None:
    from tidewater.transform import run_dbt

    target = load_target(args.target, profiles_dir=args.profiles_dir)
    if target.is_embedded:
        embedded.start()
    # dbt's command groups take their subcommand first: `docs generate`, `source freshness`.
    words = [args.command]
    rest = list(args.dbt_args)
    while rest and not rest[0].startswith("-") and args.command in ("docs", "source"):
        words.append(rest.pop(0))
    run_dbt(" ".join(words), target, *rest, record=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tidewater", description=__doc__)
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
    transform = commands.add_parser("transform", help="dbt build, recorded in ops")
    transform.add_argument("--full-refresh", action="store_true")
    transform.add_argument("--select", nargs="+")
    transform.add_argument("--exclude", nargs="+")
    transform.add_argument(
        "--skip-failed-sources",
        action="store_true",
        help="exclude everything downstream of tables whose last load failed",
    )
    transform.set_defaults(run=_transform)
    dbt = commands.add_parser("dbt", help="run any dbt command on this project and target")
    dbt.add_argument("command")
    dbt.add_argument("dbt_args", nargs=argparse.REMAINDER)
    dbt.set_defaults(run=_dbt)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except TidewaterError as exc:
        return fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
