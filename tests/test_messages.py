"""Messages name the task a user runs (`invoke roles --apply`), not the module
behind it (`python -m roles apply`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("tidewater", "loaders", "transform", "roles", "demo_app", "control")


def user_facing_strings(path: Path) -> list[tuple[int, str]]:
    """String literals of a module, less docstrings and argparse's ``prog=``."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skipped.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg == "prog":
            skipped.add(id(node.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skipped
    ]


def test_no_message_tells_the_user_to_run_python_dash_m() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, text in user_facing_strings(path)
        if "python -m " in text
    ]
    assert offenders == []


def test_the_role_spec_comments_name_the_invoke_tasks() -> None:
    header = (ROOT / "roles" / "roles.yml").read_text().split("version:")[0]
    assert "python -m" not in header
    assert "invoke roles --apply" in header


def test_notes_and_warnings_carry_their_time_outside_a_terminal_and_errors_stay_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A cron log says when each step happened; the error a job ends with stays one
    `error: …` line a script can grep for."""
    from tidewater.cli import fail, say, warn
    from tidewater.exceptions import TidewaterError

    say("loading 3 tables")
    warn("late commits NOT proven safe")
    fail(TidewaterError("the warehouse is down; run `invoke up`"))
    note, warning, error = capsys.readouterr().err.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} "
    assert re.fullmatch(stamp + "loading 3 tables", note), note
    assert re.fullmatch(stamp + "warning: late commits NOT proven safe", warning), warning
    assert error == "error: the warehouse is down; run `invoke up`"
