"""Errors raised by the demo app. Each keeps its inputs and says what to do next."""

from __future__ import annotations

from tidewater.exceptions import TidewaterError


class DemoAppError(TidewaterError):
    """Root of every demo app error."""


class InvalidOption(DemoAppError):
    """An option of ``create_app`` or ``simulate`` is out of range."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        self.option = option
        self.value = value
        self.expected = expected
        super().__init__(f"{option} must be {expected}, got {value!r}")


class LateTransactionClosed(DemoAppError):
    """A late transaction was used after it was committed or rolled back."""

    def __init__(self, state: str) -> None:
        self.state = state
        super().__init__(
            f"the late transaction is already {state}; open a new one with late_commit(dsn)"
        )
