"""Errors raised by the role manager. Each keeps its inputs and says what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tidewater.exceptions import TidewaterError


class RolesError(TidewaterError):
    """Root of every error the role manager raises on purpose."""


class SpecError(RolesError):
    """The spec file is missing, not YAML, or breaks a rule; nothing was applied."""

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.path = Path(path)
        self.problems = tuple(problems)
        listed = "; ".join(self.problems)
        super().__init__(f"{self.path}: {listed}; fix the spec, nothing was applied")


class DatabaseMismatch(RolesError):
    """The spec names a database other than the one we are connected to."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the spec is for database {expected!r} but the connection is to {actual!r}; "
            f"connect to {expected!r} or change `database:` in the spec"
        )


class UnsafePlan(RolesError):
    """The spec, applied to this server, would lock out the role running it."""

    def __init__(self, role: str, reason: str) -> None:
        self.role = role
        self.reason = reason
        super().__init__(f"refusing to plan: {reason}; nothing was applied")


class ApplyError(RolesError):
    """A statement of the plan failed; the whole transaction was rolled back."""

    def __init__(self, statement: str, reason: str, *, applying: bool) -> None:
        self.statement = statement
        self.reason = reason
        self.applying = applying
        verb = "apply" if applying else "dry run"
        super().__init__(
            f"{verb} failed at `{statement}`: {reason}; the transaction was rolled back and "
            "nothing was applied"
        )


class VerifyError(RolesError):
    """Verification could not run (as opposed to finding violations)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnsupportedTarget(RolesError):
    """The action is not available for this kind of warehouse."""

    def __init__(self, target_type: str, action: str, hint: str) -> None:
        self.target_type = target_type
        self.action = action
        self.hint = hint
        super().__init__(f"`{action}` is not supported on {target_type}; {hint}")
