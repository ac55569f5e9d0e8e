"""`roles verify`, `roles generate` and the plan's dry run run as a superuser inside a
database that analysts and the ETL login write to. Nothing those logins plant (a
statement trigger on a table, a function where a careless search_path looks) may
run with the superuser's rights.

Each bait, when it runs, tries three things no planted code may do: advance a
sequence only the superuser may use (``nextval`` outlives a rollback), write a file
through ``COPY … TO PROGRAM`` (outlives anything), and create a superuser role.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from roles import apply_plan, generate_spec, plan_changes, verify
from roles.__main__ import main
from tidewater.runs import ensure_ops_tables

from .conftest import Warehouse, run_as

CANARY = "public.tw_canary"


def payload_body(marker: Path, pwned: str) -> str:
    """PL/pgSQL that escalates (RESET ROLE) and tries what only a superuser may."""
    return f"""
    begin
        reset role;
    exception when others then
        raise notice 'bait: reset role refused: %', sqlerrm;
    end;
    begin
        perform nextval('{CANARY}');
    exception when others then
        raise notice 'bait: nextval refused: %', sqlerrm;
    end;
    begin
        execute format(
            'copy (select %L || current_user) to program %L', 'ran as ', 'cat >> {marker}'
        );
    exception when others then
        raise notice 'bait: copy to program refused: %', sqlerrm;
    end;
    begin
        create role {pwned} superuser login;
    exception when others then
        raise notice 'bait: create role refused: %', sqlerrm;
    end;
    """


def trigger_bait(schema: str, marker: Path, pwned: str) -> list[str]:
    """A table with a statement-level trigger that runs the payload."""
    return [
        f"create table {schema}.bait (id integer, note text)",
        f"create function {schema}.bait_payload() returns trigger language plpgsql as $bait$"
        f" begin {payload_body(marker, pwned)} return null; end $bait$",
        f"create trigger bait_trigger before insert or update or delete or truncate "
        f"on {schema}.bait for each statement execute function {schema}.bait_payload()",
    ]


@pytest.fixture
def bait(warehouse: Warehouse) -> Iterator[tuple[Path, str]]:
    """The marker file the payload writes and the role it creates; a canary sequence
    only the superuser may use."""
    # The server may run as another OS user: the marker's directory is writable by all.
    where = Path(tempfile.mkdtemp(prefix="tidewater-bait-"))
    where.chmod(0o1777)
    marker = where / "pwned"
    pwned = warehouse.name("pwned")
    warehouse.admin_query(f"create sequence {CANARY}")
    warehouse.admin_query(f"revoke all on sequence {CANARY} from public")
    yield marker, pwned
    warehouse.admin_query(f"drop role if exists {pwned}")
    shutil.rmtree(where, ignore_errors=True)


def assert_bait_did_nothing(warehouse: Warehouse, marker: Path, pwned: str, tool: str) -> None:
    (called,) = warehouse.admin_query(f"select is_called from {CANARY}")[0]
    created = warehouse.admin_query("select 1 from pg_roles where rolname = %s", (pwned,))
    print(
        f"after {tool}: marker file {'EXISTS' if marker.exists() else 'absent'}, "
        f"canary {'ADVANCED' if called else 'untouched'}, role {pwned} "
        f"{'CREATED' if created else 'absent'}"
    )
    assert not marker.exists(), f"{tool} ran planted code: {marker.read_text()!r}"
    assert not called, f"{tool} ran planted code as a superuser (the canary advanced)"
    assert not created, f"{tool} ran planted code that created {pwned}"


def run_every_tool(
    warehouse: Warehouse, marker: Path, pwned: str, *, schema: str, tmp_path: Path
) -> None:
    """verify, generate and the plan's dry run, as a library and from the command line.

    Hand-made drift first, so the dry run has statements to run on the baited
    objects (a REVOKE on every table of ``schema``, an ALTER ROLE … RESET)."""
    warehouse.admin_query(f"grant select on all tables in schema {schema} to public")
    warehouse.admin_query(f"alter role {warehouse.name('dashboard_bi')} set work_mem = '1GB'")
    conn = warehouse.admin()
    try:
        print("running verify as the superuser")
        result = verify(conn, warehouse.spec)
        print(result.render_text())
        assert_bait_did_nothing(warehouse, marker, pwned, "verify")
        print("running generate as the superuser")
        generate_spec(conn)
        assert_bait_did_nothing(warehouse, marker, pwned, "generate")
        plan = plan_changes(conn, warehouse.spec)
        print("running the plan's dry run as the superuser:\n" + plan.render_text())
        assert any(s.text.startswith("REVOKE SELECT ON TABLE") for s in plan.statements)
        apply_plan(conn, plan, apply=False)
        assert_bait_did_nothing(warehouse, marker, pwned, "the plan's dry run")
    finally:
        conn.close()
    profiles = write_profiles(warehouse, tmp_path)
    for command in ("verify", "plan"):
        print(f"running `python -m roles {command}` from the dbt profile (runs are recorded)")
        code = main([command, "--profiles-dir", str(profiles), "--prefix", warehouse.spec.prefix])
        print(f"exit status {code}")
        assert code == 2  # verify found the drift; the plan holds statements for it
        assert_bait_did_nothing(warehouse, marker, pwned, f"roles {command}")


def write_profiles(warehouse: Warehouse, tmp_path: Path) -> Path:
    parts = urlsplit(warehouse.admin_dsn)
    runner = warehouse.name("tidewater_etl_runner")
    where = f"host: 127.0.0.1\n      port: {parts.port}\n      dbname: {parts.path[1:]}"
    (tmp_path / "profiles.yml").write_text(
        f"""
tidewater:
  target: sec
  outputs:
    sec:
      type: postgres
      {where}
      user: {runner}
      password: "{warehouse.passwords[runner]}"
      schema: analytics
      threads: 1
    sec_admin:
      type: postgres
      {where}
      user: {parts.username}
      password: "{parts.password or ""}"
      schema: analytics
      threads: 1
"""
    )
    (tmp_path / "profiles.yml").chmod(0o600)
    return tmp_path


@pytest.fixture(autouse=True)
def _no_admin_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDEWATER_ADMIN_TARGET", raising=False)


def test_a_trigger_the_analyst_plants_in_their_sandbox_never_runs(
    warehouse: Warehouse, bait: tuple[Path, str], tmp_path: Path
) -> None:
    marker, pwned = bait
    sandbox = f"sandbox_{warehouse.name('analyst_alice')}"
    alice = warehouse.login("analyst_alice")
    try:
        run_as(alice, "analyst_alice", *trigger_bait(sandbox, marker, pwned))
        # The bait works: fired by alice herself, every escalation is refused.
        with alice.cursor() as cur:
            print("probe: analyst_alice fires her own trigger: insert into the bait table")
            cur.execute(f"insert into {sandbox}.bait values (1, 'x')")
            notices = " ".join(alice.notices)
        alice.rollback()
        assert "copy to program refused" in notices and "create role refused" in notices
        assert_bait_did_nothing(warehouse, marker, pwned, "alice's own insert")
    finally:
        alice.close()
    run_every_tool(warehouse, marker, pwned, schema=sandbox, tmp_path=tmp_path)


def test_a_trigger_the_etl_login_plants_in_ops_never_runs(
    warehouse: Warehouse, bait: tuple[Path, str], tmp_path: Path
) -> None:
    marker, pwned = bait
    etl = warehouse.login("tidewater_etl_runner")
    try:
        ensure_ops_tables(etl)
        etl.commit()
        run_as(etl, "tidewater_etl_runner", *trigger_bait("ops", marker, pwned))
        # The run records the roles tool writes are a table etl owns, too.
        run_as(
            etl,
            "tidewater_etl_runner",
            "create trigger bait_trigger before insert or update or delete or truncate "
            "on ops.job_runs for each statement execute function ops.bait_payload()",
        )
    finally:
        etl.close()
    run_every_tool(warehouse, marker, pwned, schema="ops", tmp_path=tmp_path)
    # The command line recorded its runs (as the pipeline's login, so the trigger on
    # ops.job_runs ran with etl's rights only).
    recorded = warehouse.admin_query(
        "select job from ops.job_runs where job like 'roles %%' order by started_at"
    )
    assert [job for (job,) in recorded] == ["roles verify", "roles plan"]


def test_a_function_planted_on_a_careless_search_path_never_runs(
    warehouse: Warehouse, bait: tuple[Path, str], tmp_path: Path
) -> None:
    """An admin put the analyst's sandbox before pg_catalog on the database's path:
    the analyst's ``pg_get_userbyid`` would win over the catalog's."""
    marker, pwned = bait
    sandbox = f"sandbox_{warehouse.name('analyst_alice')}"
    database = urlsplit(warehouse.admin_dsn).path[1:]
    warehouse.admin_query(
        f'alter database "{database}" set search_path = "{sandbox}", pg_catalog, public'
    )
    alice = warehouse.login("analyst_alice")
    try:
        run_as(
            alice,
            "analyst_alice",
            f"create table {sandbox}.notes (id integer)",
            f"create function {sandbox}.pg_get_userbyid(oid) returns name language plpgsql "
            f"as $bait$ begin {payload_body(marker, pwned)} "
            "return pg_catalog.pg_get_userbyid($1); end $bait$",
        )
    finally:
        alice.close()
    run_every_tool(warehouse, marker, pwned, schema=sandbox, tmp_path=tmp_path)


def test_the_probes_fire_no_statement_trigger_at_all(warehouse: Warehouse) -> None:
    """A harmless trigger that only counts its firings (``nextval`` outlives the
    rollback): verify must not fire it for anyone, as the checks are privilege
    functions, not statements on the table."""
    etl = warehouse.login("tidewater_etl_runner")
    try:
        run_as(
            etl,
            "tidewater_etl_runner",
            "create sequence ops.firings",
            "grant usage on sequence ops.firings to public",
            "create table ops.watched (id integer)",
            "create function ops.count_firing() returns trigger language plpgsql as "
            "$f$ begin perform nextval('ops.firings'); return null; end $f$",
            "create trigger watch before insert or update or delete or truncate on ops.watched "
            "for each statement execute function ops.count_firing()",
        )
    finally:
        etl.close()
    conn = warehouse.admin()
    try:
        result = verify(conn, warehouse.spec)
    finally:
        conn.close()
    (fired,) = warehouse.admin_query("select is_called from ops.firings")[0]
    checked = {(c.role, c.operation) for c in result.checks if c.detail == "ops.watched"}
    print(f"verify checked ops.watched {len(checked)} ways; the trigger fired: {fired}")
    assert (warehouse.name("dashboard"), "UPDATE") in checked
    assert not fired
