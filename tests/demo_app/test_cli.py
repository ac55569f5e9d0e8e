"""python -m demo_app: one summary line, or one error line and exit code 1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from demo_app.__main__ import DSN_ENV, main

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nowhere"


def test_create_then_simulate_print_one_line_each(
    make_database: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = make_database("app")

    assert main(["create", "--dsn", dsn, "--scale", "0.1", "--seed", "3"]) == 0
    created = capsys.readouterr().out.splitlines()
    assert main(["simulate", "--dsn", dsn, "--steps", "20", "--seed", "1"]) == 0
    simulated = capsys.readouterr().out.splitlines()

    assert len(created) == 1
    assert created[0].startswith("created demo app (scale 0.1, seed 3)")
    assert "customers=100" in created[0]
    assert "events=2500" in created[0]
    assert len(simulated) == 1
    assert simulated[0].startswith("simulated 20 steps")


def test_dsn_comes_from_the_environment(
    make_database: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DSN_ENV, make_database("app"))

    assert main(["create", "--scale", "0.1"]) == 0
    assert "orders=300" in capsys.readouterr().out


def test_missing_dsn_says_how_to_give_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)

    assert main(["simulate"]) == 1
    assert capsys.readouterr().err == f"error: no database given; pass --dsn or set {DSN_ENV}\n"


def test_bad_scale_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", "--dsn", UNREACHABLE, "--scale", "0"]) == 1
    assert capsys.readouterr().err.startswith("error: scale must be a positive number")


def test_unreachable_database_is_one_line_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo_app", "create", "--dsn", UNREACHABLE],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot connect to the demo app database at")
    assert "Traceback" not in result.stderr
