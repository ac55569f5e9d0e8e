"""Errors shared by every tidewater package."""

from __future__ import annotations


class TidewaterError(Exception):
    """Root of every error tidewater raises on purpose.

    Messages are one line and say what to do next; the CLI prints them without
    a traceback.
    """


class ConfigError(TidewaterError):
    """The configuration (profile, target, source DSN) is missing or wrong."""


class ConnectionFailed(ConfigError):
    """A database could not be reached or refused the credentials."""

    def __init__(self, what: str, where: str, reason: str, hint: str) -> None:
        self.what = what
        self.where = where
        self.reason = reason
        self.hint = hint
        super().__init__(f"cannot connect to {what} at {where}: {reason}; {hint}")


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
