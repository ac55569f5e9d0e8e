"""After a green, published build the row-level tests read only rows loaded since
(dbt_project/macros/audit_increment.sql): a bad row loaded later still fails the
transform, a full refresh tests every row, and changed dbt code drops the marks.
Relationships read only new children where the parent keeps every key
(tests/dbt/test_audit_relationships.py shows why only there)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import Project, execute, query
from tidewater.paths import DBT_PROJECT_DIR
from transform.audit import project_fingerprint

COMPILED_TESTS = DBT_PROJECT_DIR / "target" / "compiled" / "tidewater"


def compiled_test(name: str) -> str:
    return next(COMPILED_TESTS.rglob(f"{name}*.sql")).read_text()


def test_row_level_tests_audit_the_increment_and_still_catch_new_bad_rows(
    project: Project,
) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "transform")
    marks = dict(query(project.warehouse, "select relation_name, run_id from ops.audit_marks"))
    assert {"raw_app.events", "staging.stg_app__events", "marts_build.fct_events"} <= set(marks)
    # with no marks yet, every row was tested
    assert "_loaded_at > cast(" not in compiled_test("not_null_fct_events_session_id")

    # The next build (a load touched a row of events and one of payments: with
    # nothing new no build runs, and a build runs only what depends on the tables
    # that changed) tests only rows loaded since the marks ...
    execute(
        project.warehouse,
        "update raw_app.events set _loaded_at = now() "
        "where event_id = (select min(event_id) from raw_app.events)",
        "update raw_app.payments set _loaded_at = now() "
        "where payment_id = (select min(payment_id) from raw_app.payments)",
    )
    project.invoke("transform")
    for test in ("not_null_fct_events_session_id", "source_unique_app_events_event_id"):
        assert "_loaded_at > cast(" in compiled_test(test), test
    assert "event_id in (select event_id" in compiled_test("source_unique_app_events_event_id")
    # ... relationships too, where the parent keeps every key (dim_customers,
    # dim_products, staging over raw) ...
    for child in ("fct_events", "stg_app__events"):
        relationships = list(COMPILED_TESTS.rglob(f"relationships_{child}_*.sql"))
        assert len(relationships) == 2, child
        assert all("_loaded_at > cast(" in path.read_text() for path in relationships), child
    # ... but every child row where the parent may drop keys (fct_orders drops
    # deleted orders), and singular tests read everything.
    to_orders = compiled_test("relationships_fct_payments_order_id__order_id__ref_fct_orders_")
    assert "_loaded_at > cast(" not in to_orders

    recorded = query(project.warehouse, "select * from ops.audit_marks order by 1")

    # A bad row written the way the loaders write (moving `_loaded_at`) fails it.
    event_id = query(project.warehouse, "select max(event_id) from raw_app.events")[0][0]
    execute(
        project.warehouse,
        "update raw_app.events set event_type = 'teleport', _loaded_at = now() "
        f"where event_id = {event_id}",
    )
    failed = project.invoke("transform", check=False)
    assert failed.returncode != 0
    assert "accepted_values_stg_app__events_event_type" in failed.stdout + failed.stderr
    assert "_loaded_at > cast(" in compiled_test("accepted_values_stg_app__event_")
    # and a failed build records no marks
    assert query(project.warehouse, "select * from ops.audit_marks order by 1") == recorded

    # A full refresh drops the marks and tests every row.
    failed = project.invoke("transform", "--full-refresh", check=False)
    assert failed.returncode != 0
    assert "teleport" in failed.stdout + failed.stderr or "accepted_values" in failed.stdout
    assert "_loaded_at > cast(" not in compiled_test("accepted_values_stg_app__event_")
    assert query(project.warehouse, "select count(*) from ops.audit_marks")[0][0] == 0


def test_the_fingerprint_changes_with_any_file_of_the_dbt_project(tmp_path: Path) -> None:
    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs"))
    original = project_fingerprint(copy)
    assert project_fingerprint(copy) == original
    model = copy / "models" / "marts" / "fct_events.sql"
    model.write_text(model.read_text() + "\n-- a comment is a change too\n")
    assert project_fingerprint(copy) != original
    model.unlink()
    assert project_fingerprint(copy) != original
