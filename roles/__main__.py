"""Command line: ``python -m roles [plan|apply|verify|generate] [options]``.

Connects as the admin output of the dbt profile (``<target>_admin``, or
``TIDEWATER_ADMIN_TARGET``) unless ``--dsn`` names a connection. Exit status: 0 when
done (for plan: nothing to do), 1 on an error (one line on stderr), 2 on drift: a plan
that is not empty (like ``terraform plan -detailed-exitcode``), verify finding
differences, or, with ``--strict``, roles on the server the spec does not know.

The run is recorded in ``ops.job_runs`` as the profile's own (pipeline) login, never
as the admin: a table in ``ops`` belongs to etl, and a trigger etl put on it must
not run with the admin's rights.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from roles import apply_plan, generate_spec, load_spec, plan_changes, render_redshift, verify
from roles.exceptions import UnsupportedTarget
from roles.passwords import resolve_passwords
from tidewater.db import connect
from tidewater.exceptions import TidewaterError
from tidewater.paths import ROLES_SPEC
from tidewater.profile import Target, admin_target_name, load_target
from tidewater.runs import JobRun, record_job

Command = Literal["plan", "apply", "verify", "generate"]
EXIT_VIOLATIONS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m roles",
        description="Least-privilege grants as code: plan, apply, verify, generate.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="plan",
        choices=["plan", "apply", "verify", "generate"],
        help="plan (default): print the SQL, run it in a transaction that rolls back; "
        "apply: commit it; verify: try every operation as every role; "
        "generate: write a spec from the database",
    )
    parser.add_argument("--spec", type=Path, default=ROLES_SPEC, help="the spec file")
    parser.add_argument("--target", help="dbt target; roles connect as its <target>_admin")
    parser.add_argument("--profiles-dir", help="where profiles.yml is, as for dbt")
    parser.add_argument("--dsn", help="admin connection URL, instead of the profile")
    parser.add_argument(
        "--prefix",
        default=os.environ.get("TIDEWATER_ROLE_PREFIX", ""),
        help="prefix every role and user name (default: TIDEWATER_ROLE_PREFIX)",
    )
    parser.add_argument("--output", type=Path, help="generate: write here instead of stdout")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="plan, verify: fail (exit 2) when the server has roles the spec does not know",
    )
    return parser


def _targets(args: argparse.Namespace) -> tuple[Target, Target]:
    target = load_target(args.target, profiles_dir=args.profiles_dir)
    admin = load_target(admin_target_name(target), profiles_dir=args.profiles_dir)
    return target, admin


@contextmanager
def _recorded(recorder: Target | None, command: str) -> Iterator[JobRun]:
    """Record the outcome of a plan, apply or verify in ops.job_runs (as every job is),
    connected as the pipeline's login; unrecorded with ``--dsn`` or before that login
    can connect (the first apply creates it)."""
    if recorder is None:
        yield JobRun(run_id="", job=f"roles {command}", started_at=datetime.now(UTC))
        return
    try:
        probe = connect(recorder, what="the warehouse (to record the run)")
    except TidewaterError:
        yield JobRun(run_id="", job=f"roles {command}", started_at=datetime.now(UTC))
        return
    probe.close()
    with record_job(
        lambda: connect(recorder, what="the warehouse", application_name="tidewater-roles"),
        f"roles {command}",
        create=False,
    ) as run:
        yield run


def run(args: argparse.Namespace) -> int:
    command: Command = args.command
    fallback: dict[str, str] = {}
    recorder: Target | None = None
    if args.dsn:
        where: Target | str = args.dsn
        kind = "postgres"
    else:
        target, admin = _targets(args)
        where, kind = admin, admin.type
        recorder = target if target.user != admin.user else None
        if target.password:
            # The dbt profile's user gets the password dbt will log in with.
            fallback[target.user] = target.password

    if command == "generate":
        if kind == "redshift":
            raise UnsupportedTarget(kind, command, "write the spec by hand")
        conn = connect(where, what="the warehouse (as admin)")
        try:
            text = generate_spec(conn)
        finally:
            conn.close()
        if args.output:
            args.output.write_text(text)
            print(
                f"wrote {args.output}; review it, then `invoke roles --spec {args.output}`",
                file=sys.stderr,
            )
        else:
            sys.stdout.write(text)
        return 0

    spec = load_spec(args.spec, prefix=args.prefix)
    passwords = resolve_passwords(spec, fallback=fallback)
    if kind == "redshift":
        if command != "plan":
            raise UnsupportedTarget(
                kind,
                command,
                "catalog inspection is PostgreSQL-only for now: `invoke roles` prints "
                "the Redshift script; run it with your SQL client",
            )
        assert isinstance(where, Target)
        plan = render_redshift(spec, database=spec.database or where.dbname, passwords=passwords)
        sys.stdout.write(plan.render_text())
        return 0

    conn = connect(where, what="the warehouse (as admin)")
    try:
        with _recorded(recorder, command) as record:
            if command == "verify":
                result = verify(conn, spec, strict=args.strict)
                sys.stdout.write(result.render_text())
                record.details = {"violations": len(result.violations)}
                if result.violations:
                    record.status = "failed"
                return EXIT_VIOLATIONS if result.violations else 0
            plan = plan_changes(conn, spec, passwords=passwords)
            apply_plan(conn, plan, apply=command == "apply")
            record.rows = len(plan.statements)
            record.details = {"statements": len(plan.statements), "applied": command == "apply"}
    finally:
        conn.close()
    sys.stdout.write(plan.render_text())
    unknown = args.strict and bool(plan.unknown_roles)
    if unknown:
        print(
            f"-- strict: {len(plan.unknown_roles)} role(s) on the server are not in the spec "
            "(listed above); drop them, add them, or list them under known_roles:"
        )
    if plan.is_empty:
        return EXIT_VIOLATIONS if unknown else 0
    if command == "apply":
        print(f"-- applied: {len(plan.statements)} statements committed.")
        return EXIT_VIOLATIONS if unknown else 0
    print(
        "-- dry run: the database accepted every statement and rolled back; "
        "nothing changed. Run `invoke roles --apply` to apply."
    )
    return EXIT_VIOLATIONS


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except TidewaterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
