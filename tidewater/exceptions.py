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


class ProjectParseFailed(ConfigError):
    """dbt could not parse the dbt project (bad YAML, Jinja or project settings)."""

    exit_code = 2  # a usage error, like an invalid declaration

    def __init__(self, project_dir: str, reason: str) -> None:
        self.project_dir = project_dir
        self.reason = reason
        super().__init__(
            f"dbt could not parse the project in {project_dir}: {reason}; fix it, then "
            f"`dbt parse --project-dir {project_dir}` shows the whole message"
        )
