"""The dbt project on a Redshift target, checked without a cluster: dbt-redshift
compiles every model, test and snapshot, both as a first (full) build and as an
incremental one, and every compiled statement parses in sqlfluff's Redshift
dialect. dbt compiles against a PostgreSQL catalog that answers like Redshift
at connection time (tests/redshift_wire.py); no model is executed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import sqlfluff
from psycopg2 import sql

from tests.redshift_wire import RedshiftWire
from tidewater.paths import DBT_PROJECT_DIR
from transform.build import dbt_env

PROFILE = """
tidewater:
  target: redshift
  outputs:
    redshift:
      type: redshift
      host: 127.0.0.1
      port: {port}
      user: {user}
      password: "{password}"
      dbname: {dbname}
      schema: analytics
      threads: 1
      sslmode: disable
"""
MARTS = sorted(path.stem for path in (DBT_PROJECT_DIR / "models" / "marts").glob("*.sql"))


def compile_for_redshift(dsn: str, root: Path) -> Path:
    """`dbt compile --target redshift` against the catalog of `dsn`."""
    parts = urlsplit(dsn)
    # The password libpq used for `dsn` (from its passfile on the embedded server):
    # the relay passes authentication through to the server, which checks it.
    probe = psycopg2.connect(dsn)
    password = probe.info.password or ""
    probe.close()
    wire = RedshiftWire((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        (root / "profiles.yml").write_text(
            PROFILE.format(
                port=wire.port,
                user=parts.username or "postgres",
                password=password,
                dbname=parts.path.lstrip("/"),
            )
        )
        (root / "profiles.yml").chmod(0o600)
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "dbt"),
                "compile",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(root),
                "--target-path",
                str(root / "target"),
                "--no-partial-parse",
            ],
            env=dbt_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        wire.close()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return root / "target" / "compiled" / "tidewater"


def unparsable(files: list[Path], root: Path) -> dict[str, str]:
    """Files sqlfluff's Redshift dialect cannot parse, with its message."""
    problems = {}
    for path in files:
        try:
            sqlfluff.parse(path.read_text(), dialect="redshift")
        except sqlfluff.api.APIParsingError as error:
            problems[str(path.relative_to(root))] = str(error)[:500]
    return problems


def test_a_first_build_compiles_for_redshift(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    compiled = compile_for_redshift(make_database("rs_full"), tmp_path)
    models = sorted((compiled / "models").rglob("*.sql"))
    assert {"fct_events", "fct_orders", "dim_customers", "stg_app__events"} <= {
        path.stem for path in models
    }
    events = next((compiled / "models").rglob("fct_events.sql")).read_text()
    assert "where 1 = 1" in events  # the full-build branch
    staged = next((compiled / "models").rglob("stg_app__events.sql")).read_text()
    assert "json_extract_path_text" in staged and "->>" not in staged  # Redshift's macros
    assert unparsable(models, compiled) == {}


def test_an_incremental_build_compiles_for_redshift(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    dsn = make_database("rs_incr")
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:  # the marts exist: dbt compiles the incremental branch
        cur.execute("create schema marts_build")
        for mart in MARTS:
            cur.execute(
                sql.SQL("create table {} (_loaded_at timestamptz)").format(
                    sql.Identifier("marts_build", mart)
                )
            )
    conn.close()
    compiled = compile_for_redshift(dsn, tmp_path)
    events = next((compiled / "models").rglob("fct_events.sql")).read_text()
    assert "dateadd" in events or "max(_loaded_at)" in events
    assert "where 1 = 1" not in events
    files = sorted(compiled.rglob("*.sql"))
    assert len(files) > 100  # models, snapshots and every data test
    assert unparsable(files, compiled) == {}
