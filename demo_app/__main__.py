"""Command line: ``python -m demo_app create|simulate --dsn DSN``.

The DSN defaults to ``TIDEWATER_SOURCE_APP_DSN``, the variable the loaders read
for the ``app`` source.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import psycopg2

from demo_app.generate import create_app
from demo_app.workload import simulate
from tidewater.exceptions import TidewaterError

DSN_ENV = "TIDEWATER_SOURCE_APP_DSN"


def build_parser() -> argparse.ArgumentParser:
    """The ``create`` and ``simulate`` commands and their options."""
    parser = argparse.ArgumentParser(
        prog="python -m demo_app", description="The demo production app (a web shop)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dsn_help = f"app database connection string (default: ${DSN_ENV})"

    create = commands.add_parser(
        "create", help="drop and recreate the public schema with generated data"
    )
    create.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=dsn_help)
    create.add_argument(
        "--scale", type=float, default=1.0, help="1 = ~1,000 customers, 25,000 events"
    )
    create.add_argument("--seed", type=int, default=42, help="selects the data set")

    run = commands.add_parser("simulate", help="mutate the app like live traffic")
    run.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=dsn_help)
    run.add_argument("--steps", type=int, default=100, help="transactions to run")
    run.add_argument("--seed", type=int, default=None, help="repeatable choices")
    run.add_argument(
        "--late-commit-probability",
        type=float,
        default=0.0,
        help="share of steps that commit late, after later steps",
    )
    run.add_argument("--pause", type=float, default=0.0, help="seconds between steps")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; one summary line on stdout, or one error line on stderr."""
    args = build_parser().parse_args(argv)
    if not args.dsn:
        print(f"error: no database given; pass --dsn or set {DSN_ENV}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    try:
        if args.command == "create":
            counts = create_app(args.dsn, scale=args.scale, seed=args.seed)
            verb = f"created demo app (scale {args.scale:g}, seed {args.seed})"
        else:
            counts = simulate(
                args.dsn,
                steps=args.steps,
                seed=args.seed,
                late_commit_probability=args.late_commit_probability,
                pause=args.pause,
            )
            verb = f"simulated {args.steps} steps"
    except TidewaterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: database error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    summary = " ".join(f"{key}={value}" for key, value in counts.items() if value)
    print(f"{verb} in {time.perf_counter() - started:.1f}s: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
