"""Fixtures shared by every test tier: a real PostgreSQL server and fresh
databases on it.

The server is the embedded one (started for the test session in its own data
directory) unless ``TIDEWATER_TEST_DSN`` names a superuser connection URL of
another server, e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``.

The embedded server checks passwords (scram-sha-256) like the default one. The
superuser's is in the server's password file, which ``server_admin_dsn`` names
(``?passfile=``) and ``PGPASSFILE`` points to, so child processes (invoke, dbt)
find it. Every login the role spec creates gets ``TEST_LOGIN_PASSWORD`` (its
``password_env`` variables are set to it here) and the password file answers it
for any other user, so tests log in as real users with real passwords.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

TEST_PREFIX = "twt_"
# The password of every login the tests create through the role spec.
TEST_LOGIN_PASSWORD = os.environ.get("TIDEWATER_TEST_LOGIN_PASSWORD") or secrets.token_urlsafe(18)
os.environ["TIDEWATER_TEST_LOGIN_PASSWORD"] = TEST_LOGIN_PASSWORD
for _variable in ("TIDEWATER_ETL_PASSWORD", "ANALYST_ALICE_PASSWORD", "DASHBOARD_BI_PASSWORD"):
    os.environ[_variable] = TEST_LOGIN_PASSWORD


def _with_dbname(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def server_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Superuser DSN of the server the tests run against."""
    external = os.environ.get("TIDEWATER_TEST_DSN")
    if external:
        yield external
        return
    from tidewater import embedded

    pgdata = Path(
        os.environ.get("TIDEWATER_TEST_PGDATA", embedded.STATE_DIR / "test-pgdata")
    ).resolve()
    if "TIDEWATER_TEST_EMBEDDED_PORT" in os.environ:
        port = int(os.environ["TIDEWATER_TEST_EMBEDDED_PORT"])
    else:
        port = embedded.choose_port(pgdata, 54339)
    server = embedded.start(embedded.EmbeddedServer(pgdata=pgdata, port=port))
    # Any other user's password, for logins the spec created with TEST_LOGIN_PASSWORD.
    embedded.remember_password(server, "*", TEST_LOGIN_PASSWORD)
    os.environ["PGPASSFILE"] = str(server.passfile)
    yield server.admin_dsn("postgres")


def _admin_execute(admin_dsn: str, statement: sql.Composable) -> None:
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def run_id() -> str:
    """A short id unique to this test session, for cluster-wide names (roles)."""
    return uuid.uuid4().hex[:6]


@pytest.fixture
def make_database(server_admin_dsn: str, run_id: str) -> Iterator[Callable[[str], str]]:
    """Factory: ``make_database("source")`` creates an empty database with a
    unique name and returns its superuser DSN; dropped after the test."""
    created: list[str] = []

    def _make(purpose: str = "db") -> str:
        name = f"{TEST_PREFIX}{run_id}_{purpose}_{uuid.uuid4().hex[:6]}"
        _admin_execute(server_admin_dsn, sql.SQL("create database {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_dbname(server_admin_dsn, name)

    yield _make
    for name in created:
        _admin_execute(
            server_admin_dsn,
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)),
        )


@pytest.fixture(scope="session")
def role_prefix(run_id: str) -> str:
    """Prefix for every role a test creates; such roles are dropped after the session."""
    return f"{TEST_PREFIX}{run_id}_"


@pytest.fixture(scope="session", autouse=True)
def _drop_test_objects(server_admin_dsn: str, run_id: str) -> Iterator[None]:
    """Roles are cluster-wide: drop every database and role this session created."""
    yield
    pattern = f"{TEST_PREFIX}{run_id}_%"
    conn = psycopg2.connect(server_admin_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("select datname from pg_database where datname like %s", (pattern,))
            for (name,) in cur.fetchall():
                cur.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )
            cur.execute("select rolname from pg_roles where rolname like %s", (pattern,))
            for (name,) in cur.fetchall():
                cur.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(name)))
                cur.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))
    finally:
        conn.close()


# --- the kit pointed at a fresh warehouse and demo app, as a user configures it ---

ROOT = Path(__file__).resolve().parents[1]


def query(dsn: str, statement: str) -> list[tuple]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


def as_login(dsn: str, user: str, password: str = TEST_LOGIN_PASSWORD) -> str:
    """The same database as `dsn`, as another login with its password (by default
    the one every login the role spec creates in the tests gets)."""
    parts = urlsplit(dsn)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, query=""))


def execute(dsn: str, *statements: str) -> None:
    """Run statements in one transaction."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


# The demo app's marts (the run-record marts describe the runs themselves).
APP_MARTS = (
    "agg_daily_sales",
    "dim_countries",
    "dim_customers",
    "dim_products",
    "fct_events",
    "fct_order_items",
    "fct_orders",
    "fct_payments",
)
# The schemas roles/roles.yml manages for the demo app.
MANAGED_SCHEMAS = (
    "raw_app",
    "raw_web",
    "staging",
    "intermediate",
    "marts",
    "marts_build",
    "snapshots",
    "ops",
)


class Project:
    """The kit pointed at a fresh warehouse and a demo app, as a user would configure it."""

    def __init__(self, env: dict[str, str], warehouse: str, source: str) -> None:
        self.env = env
        self.warehouse = warehouse
        self.source = source

    def set_up(self) -> None:
        """What the README asks first on a server of your own: `invoke roles --apply`
        (on the embedded server every task applies the spec itself)."""
        if os.environ.get("TIDEWATER_TEST_DSN"):
            self.invoke("roles", "--apply")

    def invoke(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        invoke = Path(sys.executable).parent / "invoke"
        result = subprocess.run(
            [str(invoke), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"invoke {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result


@pytest.fixture
def project(
    server_admin_dsn: str, make_database: Callable[[str], str], role_prefix: str, tmp_path: Path
) -> Project:
    warehouse_admin = make_database("e2e_wh")
    source = make_database("e2e_app")
    import demo_app

    demo_app.create_app(source, scale=0.2)
    parts = urlsplit(warehouse_admin)
    dbname = parts.path.lstrip("/")
    host, port = parts.hostname, parts.port or 5432
    (tmp_path / "profiles.yml").write_text(
        f"""
tidewater:
  target: e2e
  outputs:
    e2e:
      type: postgres
      host: {host}
      port: {port}
      user: {role_prefix}tidewater_etl_runner
      password: "{{{{ env_var('TIDEWATER_ETL_PASSWORD') }}}}"
      dbname: {dbname}
      schema: analytics
      threads: 4
    dev_alice:
      type: postgres
      host: {host}
      port: {port}
      user: {role_prefix}analyst_alice
      password: "{{{{ env_var('ANALYST_ALICE_PASSWORD') }}}}"
      dbname: {dbname}
      schema: sandbox_{role_prefix}analyst_alice
      threads: 4
    dev_full:
      type: postgres
      host: {host}
      port: {port}
      user: {role_prefix}tidewater_etl_runner
      password: "{{{{ env_var('TIDEWATER_ETL_PASSWORD') }}}}"
      dbname: {dbname}
      schema: fullref
      threads: 4
    e2e_admin:
      type: postgres
      host: {host}
      port: {port}
      user: {parts.username or "postgres"}
      password: ""
      dbname: {dbname}
      schema: analytics
      threads: 1
"""
    )
    env = dict(os.environ)
    env.update(
        DBT_PROFILES_DIR=str(tmp_path),
        TIDEWATER_SOURCE_APP_DSN=source,
        TIDEWATER_ROLE_PREFIX=role_prefix,
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    if not os.environ.get("TIDEWATER_TEST_DSN"):
        # The embedded test server stands in for the embedded default.
        env["TIDEWATER_EMBEDDED_PORT"] = str(port)
        env["TIDEWATER_EMBEDDED_PGDATA"] = os.environ.get(
            "TIDEWATER_TEST_PGDATA", str(ROOT / ".tidewater" / "test-pgdata")
        )
    etl_dsn = as_login(warehouse_admin, f"{role_prefix}tidewater_etl_runner")
    return Project(env, etl_dsn, source)


SOURCE_COMPLETED = (
    "select sum(order_total), count(*) from orders where status in ('paid', 'shipped', 'delivered')"
)
MART_COMPLETED = (
    "select sum(order_total), count(*) from marts.fct_orders where is_completed and not _is_deleted"
)


def completed_revenue(project: Project) -> tuple[tuple, tuple]:
    """Revenue and count of completed orders, at the source and in the published mart."""
    return query(project.source, SOURCE_COMPLETED)[0], query(project.warehouse, MART_COMPLETED)[0]
