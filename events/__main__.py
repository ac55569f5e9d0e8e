"""``python -m events``: the event paths from the command line.

``collect`` runs the HTTP collector; ``drain`` reads every broker stream to its tail and
stops; ``consume`` reads them continuously (SIGTERM or Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from events.consumer import ConnectFn
from loaders.config import load_sources, select_sources
from loaders.exceptions import DeclarationError
from tidewater.cli import fail, print_table
from tidewater.exceptions import TidewaterError


def _connector(target: str | None, profiles_dir: str | None) -> ConnectFn:
    from tidewater.profile import load_target
    from tidewater.setup import ensure_warehouse, warehouse_connector

    resolved = load_target(target, profiles_dir=profiles_dir)
    ensure_warehouse(resolved)
    return warehouse_connector(resolved)


def main(argv: list[str] | None = None) -> int:
    import events

    parser = argparse.ArgumentParser(prog="python -m events", description=__doc__)
    parser.add_argument("command", choices=("collect", "drain", "consume"))
    parser.add_argument("--target", help="dbt profile target (default: the profile's)")
    parser.add_argument("--profiles-dir", help="directory holding profiles.yml")
    parser.add_argument("--source", action="append", help="only this source (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="collect: address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="collect: port to listen on")
    parser.add_argument("--json", action="store_true", help="drain: print results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.command == "collect":
            events.serve(
                target=args.target, profiles_dir=args.profiles_dir, host=args.host, port=args.port
            )
            return 0
        sources = select_sources(load_sources(), args.source)
        connect = _connector(args.target, args.profiles_dir)
        if args.command == "consume":
            events.consume(sources, connect_warehouse=connect)
            return 0
        results = events.drain(sources, connect_warehouse=connect)
        if args.json:
            print(json.dumps([asdict(result) for result in results], default=str))
        else:
            print_table(
                ("stream", "stored", "duplicates", "dead letters", "position", "status"),
                [
                    (
                        f"{r.source}.{r.stream}",
                        r.stored,
                        r.duplicates,
                        r.dead_letters,
                        r.position,
                        r.error or r.status,
                    )
                    for r in results
                ],
            )
        return 1 if any(result.status != "succeeded" for result in results) else 0
    except DeclarationError as exc:
        return fail(exc, code=2)
    except TidewaterError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
