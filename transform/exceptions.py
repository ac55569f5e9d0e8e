"""Errors of the transform stage (dbt build, tests, publish)."""

from __future__ import annotations

from collections.abc import Sequence

from tidewater.exceptions import TidewaterError


class TransformFailed(TidewaterError):
    def __init__(self, command: str, returncode: int, failed: Sequence[str]) -> None:
        self.command = command
        self.returncode = returncode
        # dbt's own distinction: 1 a model or test failed, 2 dbt itself could not run.
        self.exit_code = returncode if returncode in (1, 2) else 1
        self.failed = tuple(failed)
        detail = f": {', '.join(self.failed[:5])}" if self.failed else ""
        if command == "build":
            advice = (
                "downstream models were skipped. Fix the data or the model, then run "
                "`invoke transform` again"
            )
        else:
            advice = "see dbt's output above"
        super().__init__(f"dbt {command} failed (exit {returncode}){detail}; {advice}")


class PublishFailed(TidewaterError):
    """Moving a green build into the live marts failed; the live marts are unchanged."""

    def __init__(self, live: str, build: str, reason: str) -> None:
        self.live = live
        self.build = build
        self.reason = reason
        super().__init__(
            f"could not publish {build} into {live}: {reason}; the marts still hold the "
            f"last good build. Fix the cause, then run `invoke transform` again"
        )
