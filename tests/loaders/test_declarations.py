"""Declarations are validated as a whole, before anything runs: a mistake is one line
naming the file, the source, the table, the field, what was found and what is
allowed, with exit code 2 — never a traceback. Run through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loaders.config import load_sources
from loaders.exceptions import DeclarationError
from tests.projects import dbt_project

SOURCES_FILE = Path("models") / "staging" / "app" / "_app__sources.yml"

VALID = """
version: 2
sources:
  - name: app
    schema: raw_app
    loader: tidewater
    config:
      meta:
        tidewater:
          source_schema: public
{source_settings}
    tables:
      - name: countries
        config:
          meta:
            tidewater:
              mode: bulk
              primary_key: [country_code]
      - name: orders
        config:
          meta:
            tidewater:
{orders_settings}
"""

ORDERS = """\
              mode: incremental
              cursor: updated_at
              primary_key: [order_id]
"""


def write_project(home: Path, *, orders: str = ORDERS, source: str = "", raw: str = "") -> Path:
    """A project directory (``TIDEWATER_HOME``) holding one sources file."""
    text = raw or VALID.format(source_settings=source, orders_settings=orders)
    dbt_project(home / "dbt_project", {str(SOURCES_FILE.relative_to("models")): text})
    return home


def run_loader(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A warehouse nobody listens at: a declaration that passed would fail to connect
    # (exit 1) rather than start an embedded server in the temporary project.
    (home / "profiles.yml").write_text(
        "tidewater:\n  target: nowhere\n  outputs:\n    nowhere:\n      type: postgres\n"
        "      host: 127.0.0.1\n      port: 1\n      user: nobody\n      dbname: none\n"
    )
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("TIDEWATER_SOURCE")
    }
    environment.update(TIDEWATER_HOME=str(home), DBT_PROFILES_DIR=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "control", "load"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        (
            "              mode: incremental\n              cursor: updated_at\n"
            "              primary_key: 5\n",
            ["table orders", "primary_key", "5", "a column name or a list of column names"],
        ),
        (
            ORDERS + "              detect_deletes: 'false'\n",
            ["table orders", "detect_deletes", '"false" (a string)', "true or false"],
        ),
        (
            "              mode: fast\n              cursor: updated_at\n",
            ["table orders", "mode", '"fast"', "incremental", "bulk"],
        ),
        (
            ORDERS + "              cursr: updated_at\n",
            ["table orders", "unknown setting", "cursr", "cursor", "detect_deletes"],
        ),
        (
            ORDERS + "              lag: soon\n",
            ["table orders", "lag", '"soon"', "5 minutes"],
        ),
        (
            ORDERS + "              late_commit_protection: 'no'\n",
            ["late_commit_protection", '"no" (a string)', "true or false"],
        ),
        (
            "              mode: incremental\n              primary_key: [order_id]\n",
            ["table orders", "cursor"],
        ),
        (
            ORDERS + "              indexes: customer_id\n",
            ["table orders", "indexes", '"customer_id"', "a list of columns"],
        ),
        (
            ORDERS + "              indexes: [[]]\n",
            ["table orders", "item 1 of indexes", "[] (a list)", "a column name or a list"],
        ),
    ],
    ids=[
        "key-is-a-number",
        "quoted-boolean",
        "unknown-mode",
        "unknown-key",
        "bad-lag",
        "quoted-no",
        "no-cursor",
        "indexes-not-a-list",
        "index-of-no-columns",
    ],
)
def test_a_bad_table_setting_is_one_line_naming_file_source_table_and_field(
    tmp_path: Path, orders: str, expected: list[str]
) -> None:
    line = assert_one_line_usage_error(run_loader(write_project(tmp_path, orders=orders)))
    assert line.startswith("error: ")
    assert str(SOURCES_FILE) in line
    assert "source app" in line
    for fragment in expected:
        assert fragment in line, line


def test_a_table_entry_without_a_name_is_named_by_file_and_position(tmp_path: Path) -> None:
    raw = VALID.format(source_settings="", orders_settings=ORDERS).replace(
        "      - name: orders\n", "      - description: no name\n"
    )
    line = assert_one_line_usage_error(run_loader(write_project(tmp_path, raw=raw)))
    # dbt itself rejects it while parsing; its message, in one line.
    assert str(SOURCES_FILE) in line and "['tables'][1]" in line
    assert "'name' is a required property" in line and "dbt parse" in line


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("          kind: oracle\n", ["kind", '"oracle"', "postgres", "redshift"]),
        ("          source_statement_timeout: forever\n", ["source_statement_timeout", "interval"]),
        ("          dsn_env: [A, B]\n", ["dsn_env", "environment variable"]),
    ],
    ids=["unknown-kind", "bad-timeout", "dsn-env-list"],
)
def test_a_bad_source_setting_is_one_line_naming_the_field(
    tmp_path: Path, setting: str, expected: list[str]
) -> None:
    line = assert_one_line_usage_error(run_loader(write_project(tmp_path, source=setting)))
    assert str(SOURCES_FILE) in line and "source app" in line
    for fragment in expected:
        assert fragment in line, line


@pytest.mark.parametrize("timeout", ["30", "'30s'", "'5 minutes'", "'1min'", "'500ms'"])
def test_a_statement_timeout_is_seconds_or_an_interval(tmp_path: Path, timeout: str) -> None:
    project = write_project(tmp_path, source=f"          source_statement_timeout: {timeout}\n")
    (source,) = load_sources(project / "dbt_project")
    assert [table.name for table in source.tables] == ["countries", "orders"]


def test_indexes_are_columns_or_lists_of_columns(tmp_path: Path) -> None:
    project = write_project(
        tmp_path, orders=ORDERS + "              indexes: [customer_id, [status, ordered_at]]\n"
    )
    (source,) = load_sources(project / "dbt_project")
    assert source.table("orders").indexes == (("customer_id",), ("status", "ordered_at"))
    assert source.table("countries").indexes == ()


def test_quoted_booleans_never_mean_true(tmp_path: Path) -> None:
    project = write_project(tmp_path, orders=ORDERS + "              detect_deletes: 'false'\n")
    with pytest.raises(DeclarationError, match="detect_deletes"):
        load_sources(project / "dbt_project")
    project = write_project(tmp_path, orders=ORDERS + "              detect_deletes: false\n")
    (source,) = load_sources(project / "dbt_project")
    assert source.table("orders").detect_deletes is False


@pytest.mark.parametrize(
    "dsn",
    ["not a dsn", "postgresql://:::", "postgresql://reader:hunter2@db:port/app", "http://db/app"],
)
def test_a_malformed_dsn_names_the_variable_and_the_expected_form_but_not_the_value(
    tmp_path: Path, dsn: str
) -> None:
    line = assert_one_line_usage_error(
        run_loader(write_project(tmp_path), TIDEWATER_SOURCE_APP_DSN=dsn)
    )
    assert "TIDEWATER_SOURCE_APP_DSN" in line
    assert "postgresql://user:password@host:5432/dbname" in line
    assert "hunter2" not in line
    assert dsn not in line


DBT_FEATURES = """
version: 2
sources:
  - name: app
    schema: "{{ env_var('TIDEWATER_TEST_RAW_SCHEMA', 'raw_app') }}"
    loader: tidewater
    tables:
      - name: countries
        config: {meta: {tidewater: {mode: bulk}}}
      - name: orders
      - name: notes
"""
# Source config in dbt_project.yml, by the tables' path (directory, source, table).
PROJECT_SOURCE_CONFIG = """
sources:
  tidewater:
    staging:
      app:
        app:
          countries:
            +enabled: false
          orders:
            +meta:
              tidewater: {mode: incremental, cursor: updated_at, primary_key: [order_id]}
"""


def test_declarations_are_read_as_dbt_parses_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``.yaml`` file, Jinja (``env_var``) and config from ``dbt_project.yml`` count,
    as they do for dbt; a changed variable is seen without editing a file."""
    monkeypatch.delenv("TIDEWATER_TEST_RAW_SCHEMA", raising=False)
    project = dbt_project(tmp_path, {"staging/app/_app__sources.yaml": DBT_FEATURES})
    with (project / "dbt_project.yml").open("a") as settings:
        settings.write(PROJECT_SOURCE_CONFIG)

    (source,) = load_sources(project)
    assert source.raw_schema == "raw_app"
    # countries is switched off in dbt_project.yml; orders is declared there; notes is not.
    assert [(t.name, t.mode, t.cursor, t.primary_key) for t in source.tables] == [
        ("orders", "incremental", "updated_at", ("order_id",))
    ]

    monkeypatch.setenv("TIDEWATER_TEST_RAW_SCHEMA", "raw_shop")
    (source,) = load_sources(project)
    assert source.raw_schema == "raw_shop"


def test_a_file_dbt_cannot_parse_is_one_line_with_dbts_reason(tmp_path: Path) -> None:
    raw = VALID.format(source_settings="", orders_settings=ORDERS) + "  - name: [unclosed\n"
    line = assert_one_line_usage_error(run_loader(write_project(tmp_path, raw=raw)))
    assert "dbt could not parse the project" in line and "dbt parse --project-dir" in line
    assert "_app__sources.yml" in line, line
