"""The chain as an Apache Airflow 3 DAG: load → transform → verify the roles.

`build_dag` makes the DAG; ``dags/tidewater_dag.py`` calls it with the defaults. Its
tasks call the same functions as the command line (`control.jobs`), so each one
takes the pipeline lock and writes its run record itself (a run started by cron and
one started by Airflow never overlap), and every record carries the Airflow run id
(``TIDEWATER_PIPELINE_RUN_ID``). They connect with the same dbt profile and target
as ``invoke``; Airflow needs no connection of its own.

Names match ``invoke graph`` and the report: the tasks are the jobs of
``ops.job_runs`` (``load``, or ``load_<source>`` when split by source;
``transform``; ``verify_roles``) and every raw table and published mart is an
Airflow asset named by its node's label in the graph (``raw_app.orders``,
``fct_orders``), grouped by its layer (``raw``, ``marts``). The task that wrote a
table emits its asset, so downstream DAGs are scheduled on data, not on a clock
(`mart_asset`).

Retries: Airflow retries whole tasks, so a task Airflow retries loads each table
once (``retries=1`` for `control.jobs.run_load`) instead of retrying tables inside
a try that Airflow may retry again. Only faults that can pass are retried
(a lost connection, a busy pipeline lock); a failing data test or a bad
declaration fails the task at once (`AirflowFailException`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidewater.exceptions import TidewaterError

if TYPE_CHECKING:
    from airflow.sdk import DAG, Asset

DEFAULT_DAG_ID = "tidewater"
# The URI scheme of tidewater's assets; Airflow leaves ``x-`` schemes as they are.
ASSET_SCHEME = "x-tidewater"
MARTS_SCHEMA = "marts"
SHADOW_SCHEMA = "marts_build"  # where dbt builds the marts (var marts_build_schema)
# What every task process gets: no usage statistics from dbt, cosmos or Airflow.
QUIET_ENV = {
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DO_NOT_TRACK": "1",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
}
PIPELINE_RUN_ENV = "TIDEWATER_PIPELINE_RUN_ID"


class AirflowDagError(TidewaterError):
    """The DAG cannot be built with these options."""

    def __init__(self, option: str, reason: str) -> None:
        self.option = option
        self.reason = reason
        super().__init__(f"cannot build the tidewater DAG: {option}: {reason}")


def quiet_usage_statistics() -> None:
    """Turn off dbt's, cosmos' and Airflow's usage statistics for this process
    (and what it starts); set before cosmos is imported."""
    os.environ.update(QUIET_ENV)


def asset_for(label: str, layer: str) -> Asset:
    """The Airflow asset of a node of ``invoke graph`` (its label and layer):
    ``raw_app.orders`` in ``raw``, ``fct_orders`` in ``marts``."""
    from airflow.sdk import Asset

    schema = MARTS_SCHEMA if layer == "marts" else label.split(".", 1)[0]
    table = label.rsplit(".", 1)[-1]
    return Asset(name=label, uri=f"{ASSET_SCHEME}://{schema}/{table}", group=layer)


def raw_asset(raw_schema: str, table: str) -> Asset:
    """The asset of a raw table (``raw_asset("raw_app", "orders")``)."""
    return asset_for(f"{raw_schema}.{table}", "raw")


def mart_asset(name: str) -> Asset:
    """The asset of a published mart, by model name (``mart_asset("fct_orders")``);
    schedule a downstream DAG on it."""
    return asset_for(name, "marts")


def declared_marts(project_dir: Path | None = None) -> list[str]:
    """The marts a green build publishes, by name, read without running dbt (the DAG
    file is parsed often): the models in ``models/marts``."""
    from tidewater.paths import DBT_PROJECT_DIR

    folder = (project_dir or DBT_PROJECT_DIR) / "models" / MARTS_SCHEMA
    return sorted({path.stem for path in folder.rglob("*.sql")})


def _pipeline_env(context: Any) -> str:
    """Point the run records at this Airflow run and turn statistics off."""
    quiet_usage_statistics()
    run_id = str(context["run_id"])
    os.environ[PIPELINE_RUN_ENV] = run_id
    return run_id


def _fail_or_retry(error: TidewaterError, *, retried: bool) -> None:
    """Let Airflow retry a fault that can pass; fail at once on a real one."""
    from airflow.sdk.exceptions import AirflowFailException

    from tidewater.db import is_transient
    from tidewater.lock import PipelineBusy

    # An error that knows its class (a failed load run) says so, as in ops.job_runs.
    known = getattr(error, "transient", None)
    transient = known if isinstance(known, bool) else is_transient(error)
    if retried and (transient or isinstance(error, PipelineBusy)):
        raise error
    raise AirflowFailException(str(error)) from error


def _load(
    *,
    sources: Sequence[str],
    target: str | None,
    profiles_dir: str | None,
    workers: int,
    retried: bool,
    lock_wait_s: float,
) -> list[dict[str, Any]]:
    from airflow.sdk import get_current_context

    from control.jobs import run_load
    from loaders.config import load_sources, select_sources

    context = get_current_context()
    run_id = _pipeline_env(context)
    try:
        results = run_load(
            target=target,
            profiles_dir=profiles_dir,
            sources=sources,
            workers=workers,
            # Airflow retries the task: one try per table inside it, not five.
            retries=1 if retried else 5,
            wait_s=lock_wait_s,
        )
    except TidewaterError as error:
        _fail_or_retry(error, retried=retried)
        raise
    schemas = {source.name: source.raw_schema for source in select_sources(load_sources())}
    events = context["outlet_events"]
    summary = []
    for result in results:
        changed = result.inserted + result.updated + result.deleted
        asset = raw_asset(schemas[result.source], result.table)
        events[asset].extra = {"pipeline_run_id": run_id, "rows_changed": changed}
        summary.append({"table": asset.name, "status": result.status, "rows_changed": changed})
    return summary


def _transform(
    *,
    target: str | None,
    profiles_dir: str | None,
    full_refresh: bool,
    retried: bool,
    lock_wait_s: float,
) -> list[str]:
    from airflow.sdk import get_current_context

    from control.jobs import run_transform

    context = get_current_context()
    run_id = _pipeline_env(context)
    try:
        published = run_transform(
            target=target, profiles_dir=profiles_dir, full_refresh=full_refresh, wait_s=lock_wait_s
        )
    except TidewaterError as error:
        _fail_or_retry(error, retried=retried)
        raise
    if not published:
        from airflow.sdk.exceptions import AirflowSkipException

        # No asset event: a downstream DAG waits for data that changed.
        raise AirflowSkipException("nothing to transform: no input changed since the last build")
    events = context["outlet_events"]
    for relation in published:
        events[mart_asset(relation.rsplit(".", 1)[-1])].extra = {"pipeline_run_id": run_id}
    return list(published)


def _verify_roles(*, target: str | None, profiles_dir: str | None, retried: bool) -> None:
    from airflow.sdk import get_current_context

    from control.jobs import run_verify_roles

    _pipeline_env(get_current_context())
    try:
        run_verify_roles(target=target, profiles_dir=profiles_dir)
    except TidewaterError as error:
        _fail_or_retry(error, retried=retried)
        raise


def _publish(
    *, target: str | None, profiles_dir: str | None, retried: bool, lock_wait_s: float
) -> list[str]:
    """Per-model mode's last step: publish what the model tasks built and tested in
    the shadow schema (they all succeeded, or this task does not run)."""
    from airflow.sdk import get_current_context

    from control.jobs import pipeline_lock
    from tidewater.profile import load_target
    from transform.build import publish_marts
    from transform.publish import BuildOutcome

    context = get_current_context()
    run_id = _pipeline_env(context)
    marts = declared_marts()
    try:
        resolved = load_target(target, profiles_dir=profiles_dir)
        with pipeline_lock(resolved, job="publish", wait_s=lock_wait_s):
            outcome = BuildOutcome(
                live=MARTS_SCHEMA, build=SHADOW_SCHEMA, built=marts, expected=marts
            )
            published = publish_marts(resolved, outcome)
    except TidewaterError as error:
        _fail_or_retry(error, retried=retried)
        raise
    events = context["outlet_events"]
    for name in published:
        events[mart_asset(name.rsplit(".", 1)[-1])].extra = {"pipeline_run_id": run_id}
    return list(published)


def _default_target(profiles_yml: Path) -> str:
    """The target tasks will use when given none (as `tidewater.profile.load_target`
    chooses it), read without rendering the profile (no secrets needed)."""
    import yaml

    from tidewater.profile import PROFILE_NAME

    chosen = os.environ.get("TIDEWATER_TARGET") or os.environ.get("DBT_TARGET")
    if chosen:
        return chosen
    profile = (yaml.safe_load(profiles_yml.read_text()) or {}).get(PROFILE_NAME) or {}
    if not profile.get("target"):
        raise AirflowDagError("target", f"{profiles_yml} names no default target; pass target=")
    return str(profile["target"])


def _per_model_transform(
    *,
    target: str | None,
    profiles_dir: str | None,
    retried: bool,
    outlets: list[Asset],
    lock_wait_s: float,
) -> tuple[Any, Any]:
    """A task per dbt node (astronomer-cosmos, ``dbt build`` of that node and its
    tests) into the shadow schema, then one ``publish`` task: the gate holds, since
    publish runs only when every node task succeeded."""
    import sys

    from airflow.providers.standard.operators.python import PythonOperator
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import LoadMode, TestBehavior, TestIndirectSelection

    from tidewater.paths import DBT_PROJECT_DIR
    from tidewater.profile import PROFILE_NAME, resolve_profiles_dir

    profiles_yml = resolve_profiles_dir(profiles_dir) / "profiles.yml"
    dbt = Path(sys.executable).parent / "dbt"
    group = DbtTaskGroup(
        group_id="transform",
        project_config=ProjectConfig(DBT_PROJECT_DIR, install_dbt_deps=False),
        profile_config=ProfileConfig(
            profile_name=PROFILE_NAME,
            target_name=target or _default_target(profiles_yml),
            profiles_yml_filepath=profiles_yml,
        ),
        execution_config=ExecutionConfig(
            dbt_executable_path=dbt if dbt.exists() else "dbt",
            # A model's task runs the tests of that model alone; a test of two models
            # (relationships) runs in a task of its own once both are built.
            test_indirect_selection=TestIndirectSelection.CAUTIOUS,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS,
            test_behavior=TestBehavior.BUILD,
            should_detach_multiple_parents_tests=True,
            emit_datasets=False,  # the publish task emits the marts, once published
            env_vars=dict(QUIET_ENV),
        ),
        # A failing model or test is not a passing fault: no retry (and no wait).
        operator_args={
            "install_deps": False,
            "env": dict(QUIET_ENV),
            "append_env": True,
            "retries": 0,
        },
    )
    publish = PythonOperator(
        task_id="publish",
        python_callable=_publish,
        op_kwargs={
            "target": target,
            "profiles_dir": profiles_dir,
            "retried": retried,
            "lock_wait_s": lock_wait_s,
        },
        outlets=outlets,
        doc_md="Publish the tested marts from the shadow schema into `marts`.",
    )
    group >> publish
    return group, publish


def build_dag(
    *,
    dag_id: str = DEFAULT_DAG_ID,
    target: str | None = None,
    profiles_dir: str | None = None,
    split_by_source: bool = False,
    per_model: bool = False,
    schedule: Any = None,
    start_date: datetime | None = None,
    retries: int = 2,
    retry_delay: timedelta = timedelta(minutes=2),
    workers: int = 4,
    lock_wait_s: float | None = None,
    full_refresh: bool = False,
    verify_roles: bool = True,
    tags: Sequence[str] = ("tidewater",),
    dag_kwargs: dict[str, Any] | None = None,
) -> DAG:
    """The tidewater DAG: load (one task for every declared table, or one per source
    with ``split_by_source``) → transform (build into the shadow schema, test,
    publish) → verify the roles.

    Args:
        dag_id: the DAG's id.
        target: the dbt profile target (default: the profile's own).
        profiles_dir: where ``profiles.yml`` is (default: as ``invoke`` finds it).
        split_by_source: one load task per source, so sources load on different
            workers. They still take the pipeline lock in turn: each waits for it.
        per_model: one Airflow task per dbt model (astronomer-cosmos) in place of
            the one transform task; costs a dbt process per model.
        schedule: Airflow's schedule (a cron string, a timetable, assets); default
            none (triggered).
        start_date: the first date the schedule counts from (default: 2025-01-01).
        retries: Airflow's retries of each task (transient faults only). With 0 the
            loaders retry each table themselves, as on the command line.
        retry_delay: the wait before Airflow's first retry (it grows after).
        workers: tables loaded at once inside a load task.
        lock_wait_s: how long a task waits for the pipeline lock held by another run
            before failing (retried) (default: 0, or 30 minutes for split loads).
        full_refresh: rebuild incremental models from scratch on every run.
        verify_roles: end with `roles --verify`.
        tags: the DAG's tags.
        dag_kwargs: anything else for `airflow.sdk.DAG`.
    """
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    from loaders.config import load_sources

    if retries < 0:
        raise AirflowDagError("retries", f"must be 0 or more, not {retries}")
    quiet_usage_statistics()
    retried = retries > 0
    wait = lock_wait_s if lock_wait_s is not None else (1800.0 if split_by_source else 0.0)
    common = {"target": target, "profiles_dir": profiles_dir, "retried": retried}
    sources = load_sources()
    if not sources:
        raise AirflowDagError(
            "sources", "no source is declared for the loaders; run `invoke declare`"
        )
    dag = DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=start_date or datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,  # one pipeline run at a time, as the lock would force anyway
        tags=list(tags),
        doc_md=__doc__,
        default_args={
            "retries": retries,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": True,
        },
        **(dag_kwargs or {}),
    )
    with dag:
        groups = [[source] for source in sources] if split_by_source else [list(sources)]
        loads = [
            PythonOperator(
                task_id=f"load_{group[0].name}" if split_by_source else "load",
                python_callable=_load,
                op_kwargs={
                    "sources": [source.name for source in group],
                    "workers": workers,
                    "lock_wait_s": wait,
                    **common,
                },
                outlets=[
                    raw_asset(source.raw_schema, table.name)
                    for source in group
                    for table in source.tables
                ],
                doc_md="Load every declared table of "
                + ", ".join(source.name for source in group)
                + " into raw (`invoke load`).",
            )
            for group in groups
        ]
        outlets = [mart_asset(name) for name in declared_marts()]
        if per_model:
            first, last = _per_model_transform(outlets=outlets, lock_wait_s=wait, **common)
        else:
            first = last = PythonOperator(
                task_id="transform",
                python_callable=_transform,
                op_kwargs={"full_refresh": full_refresh, "lock_wait_s": wait, **common},
                outlets=outlets,
                doc_md="dbt build into the shadow schema, test, publish (`invoke transform`).",
            )
        for load in loads:
            load >> first
        if verify_roles:
            last >> PythonOperator(
                task_id="verify_roles",
                trigger_rule="none_failed",  # also after a transform with nothing to do
                python_callable=_verify_roles,
                op_kwargs=common,
                doc_md="Try every operation as each role (`invoke roles --verify`).",
            )
    return dag
