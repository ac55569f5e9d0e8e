"""The DAG's shape, as Airflow parses it: the tasks and assets match `invoke graph`,
one load task for all of a source's tables (or one per source), and the per-model
mode (astronomer-cosmos) builds every model in a task of its own before one publish."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.support import Airflow, require_airflow
from tests.conftest import APP_MARTS, ROOT

require_airflow()

RAW_TABLES = ("countries", "customers", "products", "orders", "order_items", "payments", "events")


def dag_in(file: str) -> Any:
    """The DAG a file in ``dags/`` defines, loaded as Airflow's DAG processor does."""
    from airflow.sdk import DAG

    namespace = runpy.run_path(str(ROOT / "dags" / file))
    (dag,) = [value for value in namespace.values() if isinstance(value, DAG)]
    return dag


@pytest.fixture
def airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    yield tmp_path / "airflow"


def test_the_dag_file_names_tasks_and_assets_as_the_graph_does(airflow_home: Path) -> None:
    from control.airflow_dag import build_dag, mart_asset
    from control.graph import build_graph

    dag = dag_in("tidewater_dag.py")
    assert dag.dag_id == "tidewater" and set(dag.task_ids) == {"load", "transform", "verify_roles"}
    assert dag.get_task("transform").upstream_task_ids == {"load"}
    assert dag.get_task("verify_roles").upstream_task_ids == {"transform"}
    raw = {asset.name for asset in dag.get_task("load").outlets}
    marts = {asset.name for asset in dag.get_task("transform").outlets}
    assert raw == {f"raw_app.{table}" for table in RAW_TABLES} | {"raw_web.page_views"}
    assert set(APP_MARTS) <= marts
    # The same names as the nodes of `invoke graph`, in the same layers.
    manifest = {
        "sources": {
            f"source.tidewater.app.{table}": {
                "name": table,
                "schema": "raw_app",
                "source_name": "app",
                "loader": "tidewater",
                "meta": {"tidewater": {}},
            }
            for table in RAW_TABLES
        }
        | {
            "source.tidewater.web.page_views": {
                "name": "page_views",
                "schema": "raw_web",
                "source_name": "web",
                "loader": "tidewater",
                "meta": {"tidewater": {"kind": "http"}},
            }
        },
        "nodes": {
            f"model.tidewater.{name}": {
                "resource_type": "model",
                "name": name,
                "path": f"marts/{name}.sql",
                "config": {},
            }
            for name in marts
        },
    }
    graph = {(node.layer, node.label) for node in build_graph(manifest).nodes.values()}
    assets = [asset for task in dag.tasks for asset in task.outlets]
    assert {(asset.group, asset.name) for asset in assets} <= graph
    downstream = dag_in("tidewater_downstream_example.py")
    # The downstream example is scheduled on the very asset the transform task emits.
    assert downstream.timetable.asset_condition.objects == (mart_asset("fct_orders"),)
    assert mart_asset("fct_orders") in dag.get_task("transform").outlets

    split = build_dag(dag_id="tidewater_split", split_by_source=True)
    assert set(split.task_ids) == {"load_app", "load_web", "transform", "verify_roles"}


PROFILE = """
tidewater:
  target: airflow
  outputs:
    airflow:
      type: postgres
      host: 127.0.0.1
      port: 1
      user: nobody
      password: ""
      dbname: none
      schema: analytics
      threads: 1
"""
PER_MODEL_SHAPE = """
import json
import os
from control.airflow_dag import build_dag

dag = build_dag(dag_id="tidewater_per_model", per_model=True)
print(json.dumps({
    task.task_id: {
        "upstream": sorted(task.upstream_task_ids),
        "outlets": sorted(asset.name for asset in task.outlets),
    }
    for task in dag.tasks
}))
"""


@pytest.mark.slow
def test_per_model_mode_builds_each_model_in_its_own_task_then_publishes(tmp_path: Path) -> None:
    # cosmos lists the dbt project with `dbt ls` when the DAG is parsed (no
    # connection to the warehouse), and caches the listing in Airflow's metadata
    # database.
    (tmp_path / "profiles.yml").write_text(PROFILE)
    env = dict(os.environ, DBT_PROFILES_DIR=str(tmp_path))
    airflow = Airflow(tmp_path / "airflow", f"sqlite:///{tmp_path / 'airflow.db'}", env)
    airflow.cli("db", "migrate")
    parsed = subprocess.run(
        [sys.executable, "-c", PER_MODEL_SHAPE],
        cwd=ROOT,
        env=airflow.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert parsed.returncode == 0, parsed.stderr[-4000:]
    tasks = json.loads(parsed.stdout.strip().splitlines()[-1])
    models = {task_id for task_id in tasks if task_id.startswith("transform.")}
    for mart in APP_MARTS:
        assert any(task_id.startswith(f"transform.{mart}") for task_id in models), models
    # publish waits for the model tasks; loads come first, the role check last.
    publish = tasks["publish"]
    assert publish["upstream"] and set(publish["upstream"]) <= models
    assert set(APP_MARTS) <= set(publish["outlets"])
    assert tasks["verify_roles"]["upstream"] == ["publish"]
    first = [task_id for task_id in models if set(tasks[task_id]["upstream"]) == {"load"}]
    assert first, "the model tasks start after the load"
    assert all(not tasks[task_id]["outlets"] for task_id in models), "only publish emits marts"
