"""Messages name the task a user runs (`invoke roles --apply`), not the module
behind it (`python -m roles apply`)."""

from __future__ import annotations

import ast
from pathlib import Path

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
