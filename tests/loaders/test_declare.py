"""`invoke declare`: a source database's catalog becomes the sources YAML the loaders
read, with the evidence for every choice; a rerun adds new tables and keeps edits."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from control.cli import main as tidewater_main
from loaders.config import load_sources
from loaders.declare import append_tables, declare_source, render_table
from loaders.pipeline import LoadOptions, connector, load_all
from tests.conftest import ROOT, Project, as_login, query
from tests.loaders.conftest import execute
from tests.projects import dbt_project

SHOP_SQL = """
create function touch_updated_at() returns trigger language plpgsql as $$
begin
    NEW.updated_at := now();
    return NEW;
end;
$$;

create table customers (
    customer_id bigint primary key,
    full_name text not null,
    updated_at timestamptz not null
);
create trigger customers_touch before insert or update on customers
for each row execute function touch_updated_at();

create table events (
    event_id bigserial primary key,
    event_type text not null,
    created_at timestamptz not null default now()
);

create table orders (
    order_id bigint primary key,
    status text not null,
    created_at timestamptz not null default now()
);

create table tickets (
    ticket_id integer primary key,
    subject text not null,
    updated_at timestamptz not null default now()
);

create table audit_lines (line text not null, logged_at timestamptz not null);

create table readings (
    sensor_id integer not null,
    measured_at timestamptz not null,
    reading numeric not null,
    recorded_at timestamptz not null default now(),
    primary key (sensor_id, measured_at)
) partition by range (measured_at);
create table readings_2025 partition of readings
    for values from ('2025-01-01') to ('2026-01-01');
create table readings_2026 partition of readings
    for values from ('2026-01-01') to ('2027-01-01');

create view open_tickets as select ticket_id, subject from tickets;

insert into customers (customer_id, full_name) values (1, 'Ada'), (2, 'Grace');
insert into events (event_type) select 'page_view' from generate_series(1, 5);
insert into orders (order_id, status) values (1, 'placed'), (2, 'placed');
insert into tickets (ticket_id, subject) values (1, 'login broken'), (2, 'refund');
insert into audit_lines values ('started', now()), ('stopped', now());
insert into readings (sensor_id, measured_at, reading) values
    (1, '2025-06-01', 1.5), (1, '2026-06-01', 2.5), (2, '2026-07-01', 3.5);
"""
SHOP_TABLES = ("audit_lines", "customers", "events", "orders", "readings", "tickets")


def _wait_for_updates_counted(dsn: str, table: str) -> None:
    """Statistics reach pg_stat_user_tables when the writing backend flushes them."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if execute(
            dsn, "select n_tup_upd from pg_stat_user_tables where relname = %s", (table,)
        ) != [(0,)]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the server never counted the updates of {table}")


@pytest.fixture
def shop_dsn(make_database: Callable[[str], str]) -> str:
    dsn = make_database("shop")
    execute(dsn, SHOP_SQL)
    execute(dsn, "update orders set status = 'paid' where order_id = 1")
    _wait_for_updates_counted(dsn, "orders")
    return dsn


def _project_dir(tmp_path: Path) -> Path:
    return dbt_project(tmp_path / "dbt_project")


def _tables(path: Path) -> dict[str, dict]:
    (source,) = yaml.safe_load(path.read_text())["sources"]
    return {table["name"]: table for table in source["tables"]}


def _meta(entry: dict) -> dict:
    return entry["config"]["meta"]["tidewater"]


def _entry_text(text: str, table: str) -> str:
    """One table's entry in the generated file, comments unwrapped onto one line each."""
    start = text.index(f"      - name: {table}\n")
    end = text.find("\n      - name: ", start + 1)
    entry = text[start : end if end != -1 else len(text)]
    return re.sub(r"\n\s*# (?!guess)", " ", entry)


def test_declare_reads_the_evidence_for_each_table_from_the_catalog(
    shop_dsn: str, tmp_path: Path
) -> None:
    project_dir = _project_dir(tmp_path)
    result = declare_source(shop_dsn, "shop", project_dir=project_dir)
    path = project_dir / "models" / "staging" / "shop" / "_shop__sources.yml"
    assert result.path == path and result.created
    assert result.skipped_views == ["open_tickets"]
    text = path.read_text()
    (source,) = yaml.safe_load(text)["sources"]
    assert source["schema"] == "raw_shop" and source["loader"] == "tidewater"
    assert source["config"]["loaded_at_field"] == "_loaded_at"
    assert source["config"]["meta"]["tidewater"] == {"source_schema": "public"}
    tables = _tables(path)
    # every base table once: the partitioned parent, not its partitions; no view
    assert sorted(tables) == list(SHOP_TABLES)

    # a BEFORE INSERT OR UPDATE trigger assigns NEW.updated_at: incremental, an entity
    assert _meta(tables["customers"]) == {
        "mode": "incremental",
        "cursor": "updated_at",
        "primary_key": ["customer_id"],
        "detect_deletes": True,
    }
    customers = _entry_text(text, "customers")
    assert "set by trigger customers_touch (function touch_updated_at)" in customers
    assert tables["customers"]["columns"] == [
        {"name": "customer_id", "tests": ["unique", "not_null"]}
    ]

    # a now() default on an append-only table: incremental, inserts only, no deletes
    assert _meta(tables["events"]) == {
        "mode": "incremental",
        "cursor": "created_at",
        "primary_key": ["event_id"],
    }
    assert "proves inserts only" in _entry_text(text, "events")

    # the same default on a table that is updated proves nothing about updates: bulk
    assert _meta(tables["orders"]) == {
        "mode": "bulk",
        "primary_key": ["order_id"],
        "detect_deletes": True,
    }
    orders = _entry_text(text, "orders")
    assert "proves inserts only" in orders and "counts 1 updates" in orders
    assert tables["orders"]["config"]["freshness"] is None

    # updated_at with no trigger: incremental by its name alone, marked as a guess
    assert _meta(tables["tickets"]) == {
        "mode": "incremental",
        "cursor": "updated_at",
        "primary_key": ["ticket_id"],
        "detect_deletes": True,
    }
    assert "# guess: incremental on updated_at by its name alone" in _entry_text(text, "tickets")

    # no primary key: bulk, and it says why
    assert _meta(tables["audit_lines"]) == {"mode": "bulk"}
    assert "no primary key: incremental and delete detection merge by key, so bulk" in (
        _entry_text(text, "audit_lines")
    )

    # the partitioned parent, append-only by its default; partitions named in a comment
    assert _meta(tables["readings"]) == {
        "mode": "incremental",
        "cursor": "recorded_at",
        "primary_key": ["sensor_id", "measured_at"],
    }
    assert "(readings_2025, readings_2026) are not declared" in _entry_text(text, "readings")

    # the loaders read it back as a valid declaration
    (config,) = load_sources(project_dir)
    assert config.name == "shop" and config.dsn_env == "TIDEWATER_SOURCE_SHOP_DSN"
    assert {table.name: table.mode for table in config.tables}["tickets"] == "incremental"


def test_declare_with_views_declares_them_in_bulk(shop_dsn: str, tmp_path: Path) -> None:
    project_dir = _project_dir(tmp_path)
    result = declare_source(shop_dsn, "shop", project_dir=project_dir, views=True)
    assert result.skipped_views == []
    tables = _tables(result.path)
    assert _meta(tables["open_tickets"]) == {"mode": "bulk"}
    assert "a view: no primary key" in _entry_text(result.path.read_text(), "open_tickets")
    assert "readings_2025" not in tables


def test_every_declared_table_loads(shop_dsn: str, warehouse_dsn: str, tmp_path: Path) -> None:
    project_dir = _project_dir(tmp_path)
    declare_source(shop_dsn, "shop", project_dir=project_dir, views=True)
    sources = load_sources(project_dir)
    results = load_all(
        sources,
        source_connectors={"shop": connector(shop_dsn, what="source")},
        connect_warehouse=connector(warehouse_dsn, what="warehouse"),
        options=LoadOptions(backoff_initial=0.05, backoff_max=0.2),
    )
    assert {result.table: result.status for result in results} == {
        name: "succeeded" for name in (*SHOP_TABLES, "open_tickets")
    }
    for table in (*SHOP_TABLES, "open_tickets"):
        assert query(warehouse_dsn, f"select count(*) from raw_shop.{table}") == query(
            shop_dsn, f"select count(*) from {table}"
        ), table


def test_appending_keeps_every_existing_line_of_a_hand_written_file(tmp_path: Path) -> None:
    text = """version: 2
sources:
  - name: shop   # ours
    schema: raw_shop
    tables:
    - name: customers
      description: |
        Kept as written.
    # a comment between entries
    - name: orders
      meta: {tidewater: {mode: bulk}}   # old style
  - name: other
    tables: [{name: t}]
"""
    from loaders.declare import TableDeclaration

    new = TableDeclaration(name="notes", kind="table", mode="bulk", why_mode="bulk: test")
    updated = append_tables(text, tmp_path / "x.yml", "shop", [new])
    added = "\n" + "\n".join(line[2:] for line in render_table(new)) + "\n"
    assert updated == text.replace("# old style\n", "# old style\n" + added, 1)
    (shop, other) = yaml.safe_load(updated)["sources"]
    assert [table["name"] for table in shop["tables"]] == ["customers", "orders", "notes"]
    assert other == {"name": "other", "tables": [{"name": "t"}]}


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *, code: int = 1) -> str:
    assert tidewater_main(["declare", *argv]) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_errors_are_one_line_that_say_what_to_do(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make_database: Callable[[str], str],
) -> None:
    monkeypatch.delenv("TIDEWATER_SOURCE_NOWHERE_DSN", raising=False)
    line = _one_line_error(capsys, ["--source", "nowhere"])
    assert "TIDEWATER_SOURCE_NOWHERE_DSN is unset; export TIDEWATER_SOURCE_NOWHERE_DSN=" in line

    monkeypatch.setenv("TIDEWATER_SOURCE_NOWHERE_DSN", "postgresql://nobody@127.0.0.1:1/none")
    line = _one_line_error(capsys, ["--source", "nowhere"])
    assert line.startswith("error: cannot connect to source nowhere (TIDEWATER_SOURCE_NOWHERE_DSN)")

    monkeypatch.setenv("TIDEWATER_SOURCE_NOWHERE_DSN", make_database("empty"))
    # a declaration that cannot be made is a usage error (exit 2)
    line = _one_line_error(capsys, ["--source", "nowhere"], code=2)
    assert "no tables in schema 'public'" in line and "--schema" in line
    assert not (ROOT / "dbt_project" / "models" / "staging" / "nowhere").exists()


def test_invoke_declare_then_load_gives_analysts_the_new_raw_schema_and_a_rerun_keeps_edits(
    project: Project, shop_dsn: str, tmp_path: Path, role_prefix: str
) -> None:
    # A project of its own (TIDEWATER_HOME), so no other test sees source shop.
    home = tmp_path / "home"
    (home / "roles").mkdir(parents=True)
    shutil.copy(ROOT / "roles" / "roles.yml", home / "roles" / "roles.yml")
    dbt_project(home / "dbt_project")
    project.env.update(TIDEWATER_HOME=str(home), TIDEWATER_SOURCE_SHOP_DSN=shop_dsn)
    external = bool(os.environ.get("TIDEWATER_TEST_DSN"))
    if external:
        project.invoke("roles", "--apply")

    declared = project.invoke("declare", "--source", "shop")
    assert "added 6 table(s)" in declared.stdout
    assert "views left out (add --views to declare them): open_tickets" in declared.stdout
    assert "check the guesses marked '# guess' in the file: tickets" in declared.stdout
    path = home / "dbt_project" / "models" / "staging" / "shop" / "_shop__sources.yml"

    loaded = project.invoke("load", "--source", "shop")
    for table in SHOP_TABLES:
        assert query(project.warehouse, f"select count(*) from raw_shop.{table}") == query(
            shop_dsn, f"select count(*) from {table}"
        )
    if external:
        assert "run `invoke roles --apply`" in loaded.stderr
        project.invoke("roles", "--apply")
    else:
        assert "created raw_shop and applied the role spec" in loaded.stderr
    analyst = as_login(project.warehouse, f"{role_prefix}analyst_alice")
    assert query(analyst, "select count(*) from raw_shop.customers") == [(2,)]
    assert query(analyst, "select count(*) from raw_shop.readings") == [(3,)]

    # A person edits an entry; the source gets a new table; declare runs again.
    edited = path.read_text().replace(
        "              mode: incremental\n              cursor: updated_at\n"
        "              primary_key: [ticket_id]",
        "              mode: bulk  # edited: the app does not keep updated_at\n"
        "              primary_key: [ticket_id]",
    )
    assert edited != path.read_text()
    path.write_text(edited)
    execute(shop_dsn, "create table notes (note_id integer primary key, body text)")
    execute(shop_dsn, "insert into notes values (1, 'hello')")
    again = project.invoke("declare", "--source", "shop")
    assert "added 1 table(s)" in again.stdout
    assert "kept as they are (already declared): " in again.stdout
    assert "tickets" in again.stdout.split("kept as they are")[1]
    after = path.read_text()
    assert after.startswith(edited)
    assert _meta(_tables(path)["tickets"]) == {
        "mode": "bulk",
        "primary_key": ["ticket_id"],
        "detect_deletes": True,
    }
    assert _meta(_tables(path)["notes"]) == {
        "mode": "bulk",
        "primary_key": ["note_id"],
        "detect_deletes": True,
    }
    unchanged = project.invoke("declare", "--source", "shop")
    assert "no new tables" in unchanged.stdout and path.read_text() == after

    project.invoke("load", "--source", "shop")
    assert query(analyst, "select body from raw_shop.notes") == [("hello",)]


@pytest.mark.parametrize(
    ("function_source", "sets_it"),
    [
        ("begin\n    NEW.updated_at := now();\n    return NEW;\nend", True),
        ("BEGIN new.updated_at = now(); RETURN new; END", True),
        ('begin NEW."updated_at" := clock_timestamp(); return NEW; end', True),
        ("begin if new.updated_at = old.updated_at then raise 'x'; end if; end", False),
        ("begin new.updated_at_utc := now(); return new; end", False),
    ],
)
def test_a_trigger_sets_a_column_only_where_its_function_assigns_it(
    function_source: str, sets_it: bool
) -> None:
    from loaders.declare import Trigger

    trigger = Trigger("touch", "touch", True, True, "", function_source)
    assert trigger.assigns("updated_at") is sets_it


def test_contribs_moddatetime_names_its_column_in_the_trigger_arguments() -> None:
    from loaders.declare import Trigger

    trigger = Trigger("mdt", "moddatetime", False, True, "updated_at\\000", "")
    assert trigger.assigns("updated_at") and not trigger.assigns("created_at")
