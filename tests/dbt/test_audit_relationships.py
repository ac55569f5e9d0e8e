"""Relationships tests audit only new children, and only where that is sound
(dbt_project/macros/audit_increment.sql): a parent deleted at the source orphans a
child that did not change, and the build must still fail.

A project of its own, in the manner of dbt's adapter functional tests: the kit's
audit macros, a raw parent table as the loaders keep it (deleted rows stay, with
`_deleted_at`), a staging view that keeps every key, a model that drops deleted
parents, and a child table. Marks are recorded as `invoke transform` records them
(transform/audit.py) after each green build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest

from tests.conftest import execute, query
from tidewater.paths import DBT_PROJECT_DIR
from tidewater.runs import ensure_ops_tables
from transform import audit
from transform.build import dbt_env

PROJECT = """
name: audit_probe
version: "1.0.0"
profile: audit_probe
model-paths: ["models"]
macro-paths: ["macros"]
vars:
  lookback_minutes: 0
"""
PROFILE = """
audit_probe:
  target: prod
  outputs:
    prod:
      type: postgres
      host: {host}
      port: {port}
      user: {user}
      password: "{password}"
      dbname: {dbname}
      schema: probe
      threads: 2
"""
MODELS = """
version: 2
sources:
  - name: raw
    schema: raw
    tables:
      - name: parents
        config: {meta: {tidewater: {primary_key: [parent_id]}}}
      - name: children
        config: {meta: {tidewater: {primary_key: [child_id]}}}
models:
  - name: stg_parents
    config: {meta: {tidewater: {keeps_every_key: true}}}
  - name: live_parents
  - name: stg_children
    columns:
      - name: child_id
        data_tests: [unique]
      - name: parent_id
        data_tests:
          - relationships:
              arguments: {to: ref('stg_parents'), field: parent_id}
          - relationships:
              arguments: {to: ref('live_parents'), field: parent_id}
"""
SQL_MODELS = {
    "stg_parents": "{{ config(materialized='view') }}\n"
    "select * from {{ source('raw', 'parents') }}\n",
    # drops the parents deleted at the source: their keys vanish without a trace
    "live_parents": "{{ config(materialized='table') }}\n"
    "select * from {{ ref('stg_parents') }} where _deleted_at is null\n",
    "stg_children": "{{ config(materialized='view') }}\n"
    "select * from {{ source('raw', 'children') }}\n",
}
TO_KEEPER = "relationships_stg_children_parent_id__parent_id__ref_stg_parents_"
TO_DROPPER = "relationships_stg_children_parent_id__parent_id__ref_live_parents_"


class Probe:
    """The small project on its own database."""

    def __init__(self, root: Path, dsn: str) -> None:
        self.root = root
        self.dsn = dsn
        self.compiled_code: dict[str, str] = {}

    def build(self) -> dict[str, str]:
        """`dbt build`; returns each test's status. After a green build, records the
        audit marks as `invoke transform` does."""
        target = self.root / "target"
        (target / "run_results.json").unlink(missing_ok=True)
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "dbt"),
                "build",
                "--project-dir",
                str(self.root),
                "--profiles-dir",
                str(self.root),
            ],
            env=dbt_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        manifest, results = audit.load_artifacts(target)
        assert manifest and results, result.stdout[-3000:] + result.stderr[-2000:]
        names = {
            r["unique_id"]: manifest["nodes"][r["unique_id"]]["name"] for r in results["results"]
        }
        statuses = {names[r["unique_id"]]: r["status"] for r in results["results"]}
        self.compiled_code = {
            names[r["unique_id"]]: r.get("compiled_code") or "" for r in results["results"]
        }
        if result.returncode == 0:
            conn = psycopg2.connect(self.dsn)
            try:
                with conn:
                    marks = audit.read_marks(
                        conn, audit.tested_relations(manifest, results["results"])
                    )
                    audit.write_marks(conn, marks, "probe", "probe-run")
            finally:
                conn.close()
        return statuses

    def compiled(self, test: str) -> str:
        """The SQL a test ran in the last build."""
        return self.compiled_code[test]


@pytest.fixture
def probe(make_database: Callable[[str], str], tmp_path: Path) -> Probe:
    dsn = make_database("audit_rel")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        ensure_ops_tables(conn)
    finally:
        conn.close()
    execute(
        dsn,
        "create schema raw",
        "create table raw.parents (parent_id int primary key, parent_name text,"
        " _loaded_at timestamptz not null default now(), _deleted_at timestamptz)",
        "create table raw.children (child_id int primary key, parent_id int,"
        " _loaded_at timestamptz not null default now(), _deleted_at timestamptz)",
        "insert into raw.parents (parent_id, parent_name) values (1, 'one'), (2, 'two')",
        "insert into raw.children (child_id, parent_id) values (10, 1), (11, 2)",
    )
    (tmp_path / "dbt_project.yml").write_text(PROJECT)
    (tmp_path / "macros").mkdir()
    for macro in ("audit_increment.sql", "incremental.sql"):
        shutil.copy(DBT_PROJECT_DIR / "macros" / macro, tmp_path / "macros" / macro)
    models = tmp_path / "models"
    models.mkdir()
    (models / "_models.yml").write_text(MODELS)
    for name, body in SQL_MODELS.items():
        (models / f"{name}.sql").write_text(body)
    parts = urlsplit(dsn)
    probe_conn = psycopg2.connect(dsn)
    password = probe_conn.info.password or ""
    probe_conn.close()
    (tmp_path / "profiles.yml").write_text(
        PROFILE.format(
            host=parts.hostname,
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=password,
            dbname=parts.path.lstrip("/"),
        )
    )
    (tmp_path / "profiles.yml").chmod(0o600)
    return Probe(tmp_path, dsn)


def test_an_orphan_fails_the_build_whether_its_parent_went_or_it_is_new(probe: Probe) -> None:
    # No marks yet: every child is tested.
    assert probe.build() == dict.fromkeys(
        (TO_KEEPER, TO_DROPPER, "unique_stg_children_child_id"), "pass"
    ) | dict.fromkeys(("stg_parents", "live_parents", "stg_children"), "success")
    assert "_loaded_at > cast(" not in probe.compiled(TO_KEEPER)
    marks = dict(query(probe.dsn, "select relation_name, run_id from ops.audit_marks"))
    assert "probe.stg_children" in marks

    # With marks, a parent that keeps every key is tested against new children only;
    # a parent that may drop keys against every child.
    assert set(probe.build().values()) <= {"pass", "success"}
    assert "_loaded_at > cast(" in probe.compiled(TO_KEEPER)
    assert "_loaded_at > cast(" not in probe.compiled(TO_DROPPER)

    # The source deletes parent 2, the loader flags it (moving `_loaded_at`, as
    # loaders/load.py does); its child 11 does not change ...
    execute(
        probe.dsn,
        "update raw.parents set _deleted_at = now(), _loaded_at = now() where parent_id = 2",
    )
    statuses = probe.build()
    # ... and is an orphan in the model that drops deleted parents: the build fails.
    assert statuses[TO_DROPPER] == "fail", statuses
    assert statuses[TO_KEEPER] == "pass", statuses
    assert query(probe.dsn, "select parent_id from probe.stg_children where child_id = 11") == [
        (2,)
    ]

    # A new child with no parent fails both, the audited one included.
    execute(probe.dsn, "insert into raw.children (child_id, parent_id) values (12, 99)")
    statuses = probe.build()
    assert "_loaded_at > cast(" in probe.compiled(TO_KEEPER)
    assert statuses[TO_KEEPER] == "fail", statuses
    assert statuses[TO_DROPPER] == "fail", statuses


def test_a_relation_whose_test_warned_gets_no_new_mark() -> None:
    """A warning that persists across loads means a real orphan: the rows that
    warned are tested again on the next build, so the relation keeps its old mark."""

    def test_node(name: str, child: str) -> dict:
        return {
            "test_metadata": {"name": name},
            "attached_node": f"model.p.{child}",
            "depends_on": {"nodes": [f"model.p.{child}"]},
        }

    manifest = {
        "nodes": {
            "model.p.orders": {"schema": "marts", "name": "orders"},
            "model.p.events": {"schema": "marts", "name": "events", "alias": "fct_events"},
            "test.p.unique_orders": test_node("unique", "orders"),
            "test.p.rel_events": test_node("relationships", "events"),
            "test.p.not_null_events": test_node("not_null", "events"),
            "test.p.singular": {"depends_on": {"nodes": ["model.p.orders"]}},
        },
        "sources": {},
    }
    results = [
        {"unique_id": "test.p.unique_orders", "status": "pass"},
        {"unique_id": "test.p.not_null_events", "status": "pass"},
        {"unique_id": "test.p.singular", "status": "pass"},
    ]
    both = [("marts", "fct_events"), ("marts", "orders")]
    assert audit.tested_relations(manifest, results) == both
    passed = [*results, {"unique_id": "test.p.rel_events", "status": "pass"}]
    assert audit.tested_relations(manifest, passed) == both
    warned = [*results, {"unique_id": "test.p.rel_events", "status": "warn"}]
    assert audit.tested_relations(manifest, warned) == [("marts", "orders")]
    # A relationships test on a source depends on two relations and is attached to
    # none: it gives neither a mark.
    manifest["nodes"]["test.p.source_rel"] = {
        "test_metadata": {"name": "relationships"},
        "attached_node": None,
        "depends_on": {"nodes": ["model.p.events", "source.p.app.orders"]},
    }
    manifest["sources"]["source.p.app.orders"] = {"schema": "raw_app", "name": "orders"}
    on_source = [{"unique_id": "test.p.source_rel", "status": "pass"}]
    assert audit.tested_relations(manifest, on_source) == []
