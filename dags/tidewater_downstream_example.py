"""An example downstream DAG: runs when the tidewater DAG publishes ``fct_orders``,
never on a clock. Replace the task with your export or BI refresh."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from control.airflow_dag import mart_asset

with DAG(
    dag_id="tidewater_downstream_example",
    schedule=[mart_asset("fct_orders")],
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["tidewater", "example"],
) as dag:

    @task
    def refresh_orders_dashboard(*, triggering_asset_events=None) -> list[str]:
        """What a BI refresh would do: here, name the run that published the mart."""
        runs = []
        for events in (triggering_asset_events or {}).values():
            runs += [str(event.extra.get("pipeline_run_id")) for event in events]
        print(f"fct_orders was published by tidewater run(s) {', '.join(runs)}")
        return runs

    refresh_orders_dashboard()
