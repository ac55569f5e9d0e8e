"""A password in a source DSN never shows: not in output, not in errors, not in the
run records, whatever form the DSN takes. Redaction goes through libpq's own
parser (`tidewater.db.redact_dsn`)."""

from __future__ import annotations

import subprocess
import sys

import psycopg2
import pytest
from psycopg2 import sql

from tests.conftest import ROOT, Project
from tidewater.db import UNPARSEABLE_DSN, redact_dsn

SECRET = "Sup3r-secret-pw"
# Every form libpq accepts a password in, each pointing at a port nothing listens on.
DSN_FORMS = {
    "url-userinfo": f"postgresql://reader:{SECRET}@127.0.0.1:1/app",
    "url-query": f"postgresql://reader@127.0.0.1:1/app?password={SECRET}&sslmode=disable",
    "key-value": f"host=127.0.0.1 port=1 user=reader password={SECRET} dbname=app",
    "key-value-quoted": f"host=127.0.0.1 port=1 password = '{SECRET} x' dbname=app",
    "malformed": f"host=127.0.0.1 port=1 password {SECRET} dbname",
}


@pytest.mark.parametrize("form", sorted(DSN_FORMS))
def test_redact_dsn_hides_the_password_in_every_form(form: str) -> None:
    redacted = redact_dsn(DSN_FORMS[form])
    print(f"{form}: {redacted}")
    assert SECRET not in redacted
    if form == "malformed":
        assert redacted == UNPARSEABLE_DSN
    else:
        assert "password=***" in redacted
        assert "127.0.0.1" in redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"mysql://loader:{SECRET}@127.0.0.1:3306/shop", "mysql://loader:***@127.0.0.1:3306/shop"),
        (f"mysql://127.0.0.1/shop?password={SECRET}", "mysql://127.0.0.1/shop?password=***"),
        (f"amqp://guest:{SECRET}@127.0.0.1:5672/%2f", "amqp://guest:***@127.0.0.1:5672/%2f"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        (f"mysql://loader:{SECRET}@127.0.0.1:port/shop", UNPARSEABLE_DSN),
    ],
)
def test_redact_dsn_hides_the_password_of_other_servers_urls(url: str, shown: str) -> None:
    """MySQL, RabbitMQ and NATS sources' URLs, which libpq cannot parse."""
    assert redact_dsn(url) == shown


def test_redact_dsn_leaves_a_dsn_without_a_password_as_written() -> None:
    dsn = "postgresql://reader@db.internal:5432/app?passfile=/home/me/.pgpass"
    assert redact_dsn(dsn) == dsn


def _leaks(text: str) -> bool:
    return SECRET in text or SECRET.lower() in text.lower()


def test_a_source_dsn_password_never_appears_in_output_or_run_records(
    project: Project,
) -> None:
    project.set_up()
    project.invoke("load")  # roles, ops tables and a first run's records
    for form, dsn in sorted(DSN_FORMS.items()):
        env = dict(project.env, TIDEWATER_SOURCE_APP_DSN=dsn)
        for command in (
            [sys.executable, "-m", "control", "load"],
            [sys.executable, "-m", "control", "dsn", "--source", "app"],
        ):
            print(f"probe: {form}: {' '.join(command[1:])} with TIDEWATER_SOURCE_APP_DSN={form}")
            result = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
            )
            print(f"  exit {result.returncode}: {(result.stdout + result.stderr).strip()[-300:]}")
            assert not _leaks(result.stdout + result.stderr), f"{form} leaked via {command}"
            assert "Traceback" not in result.stderr
            if command[-1] == "load" and form == "malformed":
                # Refused before connecting, as a usage error naming only the variable.
                assert result.returncode == 2
                assert "TIDEWATER_SOURCE_APP_DSN" in result.stderr
            elif command[-1] == "load":
                assert result.returncode == 1
                assert "cannot connect to source app" in result.stderr
    # `invoke load`, the scheduled path, records its runs: no secret there either.
    for form, dsn in sorted(DSN_FORMS.items()):
        project.env["TIDEWATER_SOURCE_APP_DSN"] = dsn
        result = project.invoke("load", "transform", check=False)
        print(f"probe: {form}: invoke load transform: exit {result.returncode}")
        assert result.returncode != 0
        assert not _leaks(result.stdout + result.stderr), f"{form} leaked via invoke load"
    conn = psycopg2.connect(project.warehouse)
    try:
        with conn.cursor() as cur:
            for table in ("job_runs", "table_loads"):
                cur.execute(
                    sql.SQL("select t::text from ops.{} as t").format(sql.Identifier(table))
                )
                for (row,) in cur.fetchall():
                    assert not _leaks(row), f"{table} recorded the password: {row}"
    finally:
        conn.close()
