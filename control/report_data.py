"""The numbers behind `invoke report`, read from the ``ops`` tables in one go
through the queries `invoke status` uses too (`control.queries`): the last run as
bars and lanes for its Gantt chart, runtimes, rows per table per run, freshness,
failures, finished runs per day and the event streams. Nothing is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from control import queries

HEATMAP_RUNS = 24  # load runs in the rows-per-table grid
FAILURE_LIMIT = 20  # failures listed
FAILED = frozenset({"failed", "error", "fail", "runtime error"})


@dataclass(frozen=True)
class Job:
    """One job of the last run (an element of a pipeline run's ``jobs``)."""

    run_id: str
    job: str
    started_at: datetime
    finished_at: datetime
    status: str
    rows: int | None


@dataclass(frozen=True)
class Bar:
    """One thing that ran: a job, a table load or a dbt node."""

    kind: str
    label: str
    started_at: datetime
    finished_at: datetime
    status: str
    rows: int | None = None

    @property
    def seconds(self) -> float:
        return max((self.finished_at - self.started_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class Lane:
    """A row of the Gantt chart: one job, load or model, or a lane of tests packed
    so that none overlap."""

    label: str
    kind: str
    group: int
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Failure:
    started_at: datetime | None
    kind: str
    name: str
    error_class: str | None
    message: str | None


@dataclass(frozen=True)
class StreamRow:
    """One event stream as `invoke status` shows it (a row of `queries.EVENT_STREAMS`)."""

    stream: str
    kind: str
    position: int | None
    tail: int | None
    lag_messages: int | None
    lag_seconds: float | None
    events_stored: int
    duplicates: int
    dead_letters: int
    events_per_s: float | None
    age_s: float


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows from ``ops``."""

    now: datetime
    days: int
    has_ops: bool = False
    last_run: str | None = None  # the invocation's pipeline_run_id
    lanes: tuple[Lane, ...] = ()
    runtimes: dict[str, list[tuple[datetime, float, bool]]] = field(default_factory=dict)
    runs: tuple[tuple[str, datetime], ...] = ()  # load runs of the grid, oldest first
    rows: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    freshness: tuple[tuple[str, float | None], ...] = ()  # table, hours since loaded
    failures: tuple[Failure, ...] = ()
    runs_per_day: tuple[tuple[date, int, int], ...] = ()  # day, failed, finished
    streams: tuple[StreamRow, ...] = ()  # event streams: lag, dead letters, rate


def pack_lanes(bars: Sequence[Bar]) -> list[list[Bar]]:
    """Greedy interval packing: each lane holds bars that do not overlap, so the
    number of lanes is how many ran at once."""
    lanes: list[list[Bar]] = []
    for bar in sorted(bars, key=lambda item: (item.started_at, item.label)):
        for lane in lanes:
            if lane[-1].finished_at <= bar.started_at:
                lane.append(bar)
                break
        else:
            lanes.append([bar])
    return lanes


def build_lanes(
    jobs: Sequence[Job],
    loads: Sequence[tuple[str, str, datetime, datetime, str, int]],
    nodes: Sequence[tuple[str, str, str, datetime, datetime, str, int | None]],
) -> list[Lane]:
    """Gantt rows per job: the job, its table loads, its dbt nodes, then its tests."""
    lanes: list[Lane] = []
    for group, job in enumerate(jobs):
        bar = Bar("job", job.job, job.started_at, job.finished_at, job.status, job.rows)
        lanes.append(Lane(job.job, "job", group, (bar,)))
        lanes += [
            Lane(name, "load", group, (Bar("load", name, began, ended, state, written),))
            for rid, name, began, ended, state, written in loads
            if rid == job.run_id
        ]
        tests: list[Bar] = []
        for rid, kind, name, began, ended, state, affected in nodes:
            if rid != job.run_id:
                continue
            bar = Bar("test" if "test" in kind else kind, name, began, ended, state, affected)
            if bar.kind == "test":
                tests.append(bar)
            else:
                lanes.append(Lane(name, bar.kind, group, (bar,)))
        lanes += [
            Lane(f"tests {index}" if len(tests) > 1 else "tests", "test", group, tuple(lane))
            for index, lane in enumerate(pack_lanes(tests), start=1)
        ]
    return lanes


def jobs_of(run: dict[str, Any], *, now: datetime) -> list[Job]:
    """The jobs of a row of `queries.RECENT_PIPELINE_RUNS` (its ``jobs`` is JSON,
    times as ISO 8601); a job still running ends now."""
    jobs = []
    for job in run["jobs"]:
        started = datetime.fromisoformat(job["started_at"])
        finished = job["finished_at"]
        jobs.append(
            Job(
                run_id=job["run_id"],
                job=job["job"],
                started_at=started,
                finished_at=datetime.fromisoformat(finished) if finished else max(now, started),
                status=job["status"],
                rows=job["rows_loaded"],
            )
        )
    return jobs


def collect_report(conn: Any, *, days: int = 30) -> ReportData:
    """Read what the report shows from the ``ops`` tables on ``conn``."""
    with conn.cursor() as cur:
        (ops,) = queries.fetch(cur, queries.HAS_OPS)
        now = ops["now"]
        if not ops["has_ops"]:
            return ReportData(now=now, days=days)

        def fetch(query: str, **params: Any) -> list[tuple[Any, ...]]:
            cur.execute(query, params)
            return list(cur.fetchall())

        last = queries.fetch(cur, queries.RECENT_PIPELINE_RUNS, limit=1, pipeline_only=True)
        invocation = last[0]["pipeline_run_id"] if last else None
        session = jobs_of(last[0], now=now) if last else []
        run_ids = [job.run_id for job in session]
        lanes = build_lanes(
            session,
            fetch(queries.RUN_TABLE_LOADS, run_ids=run_ids) if run_ids else [],
            fetch(queries.RUN_DBT_NODES, run_ids=run_ids) if run_ids else [],
        )
        runtimes: dict[str, list[tuple[datetime, float, bool]]] = {}
        for job, started, seconds, status in fetch(queries.RUNTIME_TREND, days=days):
            runtimes.setdefault(job, []).append((started, float(seconds), status == "succeeded"))
        runs: dict[str, datetime] = {}
        rows: dict[tuple[str, str], tuple[int, str]] = {}
        for load in queries.fetch(cur, queries.TABLE_LOADS_PER_RUN, days=days, runs=HEATMAP_RUNS):
            runs[load["run_id"]] = load["run_started_at"]
            rows[(load["table_name"], load["run_id"])] = (int(load["rows_written"]), load["status"])
        failures = queries.fetch(cur, queries.FAILURES, kinds=None, limit=FAILURE_LIMIT)
        (has_streams,) = queries.fetch(cur, queries.HAS_EVENT_STREAMS)
        streams = queries.fetch(cur, queries.EVENT_STREAMS) if has_streams["has_streams"] else []
        return ReportData(
            now=now,
            days=days,
            has_ops=True,
            last_run=invocation,
            lanes=tuple(lanes),
            runtimes=runtimes,
            runs=tuple(runs.items()),
            rows=rows,
            freshness=tuple(
                (row["table_name"], None if row["hours_ago"] is None else float(row["hours_ago"]))
                for row in queries.fetch(cur, queries.FRESHNESS)
            ),
            failures=tuple(
                Failure(
                    row["started_at"],
                    row["kind"],
                    row["name"],
                    row["error_class"],
                    row["error_message"],
                )
                for row in failures
            ),
            runs_per_day=tuple(fetch(queries.RUNS_PER_DAY, days=days)),
            streams=tuple(stream_row(row) for row in streams),
        )


def stream_row(row: dict[str, Any]) -> StreamRow:
    """A row of `queries.EVENT_STREAMS` with its numbers as Python numbers."""

    def optional(value: Any, kind: type) -> Any:
        return None if value is None else kind(value)

    return StreamRow(
        stream=row["stream"],
        kind=row["kind"],
        position=optional(row["position"], int),
        tail=optional(row["tail"], int),
        lag_messages=optional(row["lag_messages"], int),
        lag_seconds=optional(row["lag_seconds"], float),
        events_stored=int(row["events_stored"]),
        duplicates=int(row["duplicates"]),
        dead_letters=int(row["dead_letters"]),
        events_per_s=optional(row["events_per_s"], float),
        age_s=float(row["age_s"]),
    )
