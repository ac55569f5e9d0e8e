"""Running the tidewater DAG as Airflow runs it: a temporary ``AIRFLOW_HOME``, its
metadata database migrated (SQLite or PostgreSQL), then ``airflow dags test``
against the test warehouse, and Airflow's own record of the run read back."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

MISSING = (
    "Apache Airflow is not installed here; install the extra in a virtualenv of its own "
    "(`python3 -m venv .venv-airflow && .venv-airflow/bin/pip install -e '.[dev,airflow]'`) "
    "and run `.venv-airflow/bin/python -m pytest tests/airflow`"
)


def require_airflow() -> None:
    """Skip the module when Airflow is missing; fail instead on CI (``CI=true``)."""
    try:
        import airflow  # noqa: F401
        import cosmos  # noqa: F401
    except ImportError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING} ({error})", pytrace=False)
        pytest.skip(MISSING, allow_module_level=True)


@dataclass
class AirflowRun:
    run_id: str
    state: str
    tasks: dict[str, tuple[str, int]]  # task id → (state, try number)
    asset_events: list[str]  # the names of the assets this run updated
    output: str


class Airflow:
    """An Airflow installation of its own: ``AIRFLOW_HOME`` and a metadata database,
    pointed at the repository's ``dags/``, with ``env`` (a test project's, to reach its
    warehouse)."""

    def __init__(self, home: Path, metadata_url: str, env: dict[str, str]) -> None:
        from control.airflow_dag import QUIET_ENV

        self.metadata_url = metadata_url
        self.env = dict(env)
        self.env.update(QUIET_ENV)
        self.env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_url,
            AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        )

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        airflow = Path(sys.executable).parent / "airflow"
        result = subprocess.run(
            [str(airflow), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {result.returncode}\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def set_up(self) -> None:
        self.cli("db", "migrate")
        self.cli("dags", "reserialize")  # the downstream DAG too, as a DAG processor would

    def query(self, statement: str, **params: Any) -> list[tuple]:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sqlalchemy.text(statement), params)]
        finally:
            engine.dispose()

    def test_dag(self, dag_id: str, logical_date: str) -> AirflowRun:
        """``airflow dags test`` one run; Airflow's record of it."""
        result = self.cli("dags", "test", dag_id, logical_date, check=False)
        output = result.stdout + result.stderr
        runs = self.query(
            "select run_id, state from dag_run where dag_id = :dag_id order by id desc limit 1",
            dag_id=dag_id,
        )
        assert runs, f"airflow dags test made no run\n{output[-4000:]}"
        run_id, state = runs[0]
        tasks = {
            task_id: (state, try_number)
            for task_id, state, try_number in self.query(
                "select task_id, state, try_number from task_instance "
                "where dag_id = :dag_id and run_id = :run_id",
                dag_id=dag_id,
                run_id=run_id,
            )
        }
        events = sorted(
            name
            for (name,) in self.query(
                "select asset.name from asset_event join asset on asset.id = asset_event.asset_id "
                "where asset_event.source_dag_id = :dag_id and asset_event.source_run_id = :run_id",
                dag_id=dag_id,
                run_id=run_id,
            )
        )
        return AirflowRun(run_id, state, tasks, events, output)

    def queued_for(self, dag_id: str) -> list[str]:
        """The assets whose updates wait to trigger ``dag_id`` (data-aware scheduling)."""
        return sorted(
            name
            for (name,) in self.query(
                "select asset.name from asset_dag_run_queue join asset "
                "on asset.id = asset_dag_run_queue.asset_id "
                "where asset_dag_run_queue.target_dag_id = :dag_id",
                dag_id=dag_id,
            )
        )
