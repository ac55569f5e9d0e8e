"""``python -m roles``: plan, apply, verify, generate; one-line errors; exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roles.__main__ import main
from roles.spec import parse_spec
from tests.conftest import MANAGED_SCHEMAS

from .conftest import execute


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_apply_verify(capsys: pytest.CaptureFixture[str], warehouse: str, role_prefix: str):
    common = ("--dsn", warehouse, "--prefix", role_prefix)
    code, out, _ = run(capsys, "plan", *common)
    assert code == 2  # a plan that is not empty is drift, as terraform's -detailed-exitcode
    assert f"-- {role_prefix}analyst gains" in out
    assert "-- dry run: the database accepted every statement" in out
    code, out, _ = run(capsys, "apply", *common)
    assert code == 0 and "-- applied:" in out
    code, out, _ = run(capsys, *common)  # plan is the default
    assert code == 0 and "-- Nothing to do" in out
    code, out, _ = run(capsys, "verify", *common)
    assert code == 0 and "no differences from the spec" in out

    execute(warehouse, f"grant create on schema marts to {role_prefix}dashboard")
    code, out, _ = run(capsys, "verify", *common)
    assert code == 2
    assert f"{role_prefix}dashboard may CREATE on marts; the spec says it may not" in out


def test_generate_writes_a_spec_that_loads(
    capsys: pytest.CaptureFixture[str], warehouse: str, role_prefix: str, tmp_path: Path
) -> None:
    assert run(capsys, "apply", "--dsn", warehouse, "--prefix", role_prefix)[0] == 0
    output = tmp_path / "generated.yml"
    code, _, err = run(capsys, "generate", "--dsn", warehouse, "--output", str(output))
    assert code == 0 and "review it" in err
    text = output.read_text()
    assert "Problems to fix first" not in text, text
    spec = parse_spec(yaml.safe_load(text))
    analyst = spec.role(f"{role_prefix}analyst")
    assert set(analyst.read) == set(MANAGED_SCHEMAS)
    assert analyst.sandbox and set(analyst.database) == {"connect", "temp"}
    assert spec.role(f"{role_prefix}dashboard").read == ("marts",)
    assert spec.pipeline_role == f"{role_prefix}etl"
    assert spec.user(f"{role_prefix}tidewater_etl_runner").member_of == (f"{role_prefix}etl",)
    # The generated spec describes the database: applying it changes nothing.
    assert "-- Nothing to do" in run(capsys, "plan", "--dsn", warehouse, "--spec", str(output))[1]


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        (
            'schemas: {marts: {owner: etl}}\nroles: {etl: {}, "x\'; drop role etl; --": {}}\n',
            '"x\'; drop role etl; --" is not a valid name',
        ),
        ("schemas: {marts: {owner: etl}}\nroles: {etl: {read: [mart]}}\n", "unknown schema 'mart'"),
        (
            "schemas: {raw_app: {owner: analyst, stage: raw}}\n"
            "roles: {etl: {database: [connect, temp, create]}, analyst: {}}\n",
            "the pipeline role 'etl' could not load it",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_nothing_is_applied(
    capsys: pytest.CaptureFixture[str], warehouse: str, tmp_path: Path, spec_text: str, message: str
) -> None:
    path = tmp_path / "roles.yml"
    path.write_text(spec_text)
    code, out, err = run(capsys, "apply", "--dsn", warehouse, "--spec", str(path))
    assert code == 1 and not out
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert execute(warehouse, "select count(*) from pg_namespace where nspname = 'marts'") == [(0,)]


def test_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    assert code == 1
    assert err.startswith("error: cannot connect to the warehouse (as admin)")


REDSHIFT_PROFILE = """
tidewater:
  target: prod
  outputs:
    prod:
      type: redshift
      host: example.redshift.amazonaws.com
      user: tidewater_etl_runner
      password: "{{ env_var('TIDEWATER_ETL_PASSWORD', 'from-profile') }}"
      dbname: analytics
      schema: public
    prod_admin:
      type: redshift
      host: example.redshift.amazonaws.com
      user: admin
      password: x
      dbname: analytics
      schema: public
"""


def test_a_redshift_target_prints_the_redshift_script(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set: outside the embedded server a default password is refused (see below).
    monkeypatch.setenv("TIDEWATER_ETL_PASSWORD", "from-profile")
    (tmp_path / "profiles.yml").write_text(REDSHIFT_PROFILE)
    code, out, _ = run(capsys, "plan", "--profiles-dir", str(tmp_path))
    assert code == 0
    assert "-- Plan for database analytics (redshift)" in out
    assert "CREATE GROUP etl;" in out
    # The profile's user gets the password dbt logs in with; it is never printed.
    assert "CREATE USER tidewater_etl_runner PASSWORD '***'" in out
    assert "from-profile" not in out
    code, _, err = run(capsys, "apply", "--profiles-dir", str(tmp_path))
    assert code == 1 and "`apply` is not supported on redshift" in err


def test_the_module_runs_as_a_program(warehouse: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roles", "plan", "--dsn", warehouse, "--spec", "/nonexistent.yml"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: /nonexistent.yml: cannot read the spec")


def test_by_default_roles_connect_as_the_admin_output_of_the_dbt_target(
    capsys: pytest.CaptureFixture[str],
    warehouse: str,
    role_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(warehouse)
    prefix = role_prefix + "prof_"  # roles of its own, so the runner is yet to be created
    runner = f"{prefix}tidewater_etl_runner"
    where = f"host: {parts.hostname}\n      port: {parts.port}\n      dbname: {parts.path[1:]}"
    (tmp_path / "profiles.yml").write_text(
        f"""
tidewater:
  target: dev
  outputs:
    dev:
      type: postgres
      {where}
      user: {runner}
      password: "{{{{ env_var('TIDEWATER_ETL_PASSWORD', 'tidewater') }}}}"
    dev_admin:
      type: postgres
      {where}
      user: {parts.username}
"""
    )
    monkeypatch.delenv("TIDEWATER_ETL_PASSWORD", raising=False)
    monkeypatch.delenv("TIDEWATER_ADMIN_TARGET", raising=False)
    # Outside the embedded server, a fixed default password is refused, not used.
    code, out, err = run(capsys, "plan", "--profiles-dir", str(tmp_path), "--prefix", prefix)
    assert code == 1 and not out
    assert "falls back to a fixed password because TIDEWATER_ETL_PASSWORD is unset" in err
    assert "export TIDEWATER_ETL_PASSWORD" in err
    monkeypatch.setenv("TIDEWATER_ETL_PASSWORD", "from-the-environment")
    code, out, _ = run(capsys, "plan", "--profiles-dir", str(tmp_path), "--prefix", prefix)
    assert code == 2
    # The runner gets the password its dbt target logs in with.
    assert f"CREATE ROLE {runner} LOGIN PASSWORD '***';" in out
    assert "from-the-environment" not in out
    assert "tidewater'" not in out.replace("'***'", "")
    code, _, err = run(capsys, "plan", "--profiles-dir", str(tmp_path), "--target", "nope")
    assert code == 1 and "unknown target 'nope'" in err
