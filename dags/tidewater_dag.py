"""The tidewater pipeline on Airflow (DAG ``tidewater``): load → transform → verify
the roles.

Not ``tidewater.py``: Airflow puts this folder on ``sys.path``, and a file of that
name would hide the ``tidewater`` package from every task (an editable install's
packages are found after ``sys.path``).

Point Airflow's ``dags_folder`` here (or copy this file into yours); it needs the
kit installed with its extra (``pip install -e '.[airflow]'``). Tasks connect with
the dbt profile ``invoke`` uses (``DBT_PROFILES_DIR``, ``TIDEWATER_TARGET``;
a cron schedule in ``TIDEWATER_SCHEDULE``, none by default). For
other options (one load task per source, a task per dbt model, a schedule), build
your own DAG with `control.airflow_dag.build_dag`.
"""

from __future__ import annotations

import os

from control.airflow_dag import build_dag

# The target and profiles directory are read when each task runs (TIDEWATER_TARGET,
# DBT_PROFILES_DIR), so workers may keep the profile where they like.
dag = build_dag(dag_id="tidewater", schedule=os.environ.get("TIDEWATER_SCHEDULE") or None)
