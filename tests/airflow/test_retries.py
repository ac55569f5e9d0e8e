"""Which failures Airflow retries: faults that can pass (a table whose load failed
transiently, a pipeline lock held by another run); the others fail the task at once,
and nothing is retried when Airflow is told not to retry."""

from __future__ import annotations

import pytest

from tests.airflow.support import require_airflow

require_airflow()


def failures() -> dict[str, tuple[Exception, bool]]:
    """Failure → whether Airflow may retry the task."""
    from loaders.exceptions import LoadRunFailed, TableLoadFailed
    from tidewater.lock import PipelineBusy
    from transform.exceptions import TransformFailed

    lost = TableLoadFailed("app.orders", OSError("server closed the connection"), transient=True)
    bad = TableLoadFailed("app.products", ValueError("column category is text"), transient=False)
    return {
        "a load whose every failed table failed transiently": (LoadRunFailed([lost]), True),
        "a load with a table that failed for real": (LoadRunFailed([lost, bad]), False),
        "a pipeline lock held by a cron run": (PipelineBusy("etl (cron, pid 7)", 0.0), True),
        "a failing data test": (TransformFailed("build", 1, ["test.tidewater.x"]), False),
    }


@pytest.mark.parametrize("case", list(failures()))
def test_airflow_retries_only_faults_that_can_pass(case: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from control.airflow_dag import _fail_or_retry

    error, retried = failures()[case]
    with pytest.raises(Exception) as raised:
        _fail_or_retry(error, retried=True)
    if retried:
        assert raised.value is error  # re-raised as it is: Airflow retries the task
    else:
        assert isinstance(raised.value, AirflowFailException)
        assert str(raised.value) == str(error)
    with pytest.raises(AirflowFailException):
        _fail_or_retry(error, retried=False)  # retries=0: the loaders retried already
