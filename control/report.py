"""``invoke report``: one self-contained HTML page about the pipeline, drawn from
the ``ops`` tables: a Gantt chart of the last run, runtime trends per job, rows
per table per run, freshness, the last failures and the dependency graph.

No scripts, fonts or styles from elsewhere: every chart is inline SVG drawn here,
so the file can be mailed, archived or opened offline. Reading (`collect_report`)
is kept apart from drawing (`render_report`), which is a pure function.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from control.graph import LAYER_TITLES, Graph, build_graph, layers, parse_mermaid, to_mermaid

HEATMAP_RUNS = 24
FAILURE_LIMIT = 20
FRESH_HOURS = 24.0  # the sources' freshness warn_after
STALE_HOURS = 72.0
WIDTH = 1100

HAS_OPS = """
select to_regclass('ops.job_runs') is not null
    and to_regclass('ops.table_loads') is not null
    and to_regclass('ops.dbt_node_runs') is not null,
    now()
"""

# The last run is one invocation: every job that shares the newest job's
# pipeline_run_id (`invoke load transform`: load, dbt build, publish). Runs that
# were only skipped (the pipeline was busy) and role changes are not pipeline
# runs; rows written before pipeline_run_id existed count one job per run.
LAST_RUN = """
select coalesce(pipeline_run_id, run_id)
from ops.job_runs
where status <> 'skipped' and job not like 'roles %%'
order by started_at desc
limit 1
"""

LAST_RUN_JOBS = """
select run_id, job, started_at, coalesce(finished_at, greatest(now(), started_at)), status,
    rows_loaded
from ops.job_runs
where pipeline_run_id = %(invocation)s
    or (run_id = %(invocation)s and pipeline_run_id is null)
order by started_at, job
"""

SESSION_LOADS = """
select run_id, source_name || '.' || table_name, started_at,
    started_at + make_interval(secs => duration_s), status,
    rows_inserted + rows_updated + rows_deleted
from ops.table_loads
where run_id = any(%(run_ids)s)
order by started_at, 2
"""

SESSION_NODES = """
select run_id, resource_type, node_name, started_at, completed_at, status, rows_affected
from ops.dbt_node_runs
where run_id = any(%(run_ids)s) and started_at is not null and completed_at is not null
    and status <> 'no-op'
order by started_at, node_name
"""

RUNTIME_TREND = """
select job, started_at, duration_s, status
from ops.job_runs
where status in ('succeeded', 'failed') and duration_s is not null
    and started_at > now() - make_interval(days => %(days)s)
order by job, started_at
"""

ROWS_PER_RUN = """
with runs as (
    select run_id, min(started_at) as started_at
    from ops.table_loads
    where started_at > now() - make_interval(days => %(days)s)
    group by run_id
    order by started_at desc
    limit %(runs)s
)

select runs.run_id, runs.started_at, loads.source_name || '.' || loads.table_name,
    loads.rows_inserted + loads.rows_updated + loads.rows_deleted, loads.status
from runs
inner join ops.table_loads as loads on loads.run_id = runs.run_id
order by runs.started_at, 3
"""

FRESHNESS = """
select source_name || '.' || table_name,
    extract(epoch from now() - max(started_at) filter (where status = 'succeeded')) / 3600.0
from ops.table_loads
group by 1
order by 1
"""

FAILURES = """
select * from (
    select started_at, 'job' as kind, job as name, error_class, error_message as message
    from ops.job_runs
    where status = 'failed'
    union all
    select started_at, 'load', source_name || '.' || table_name, error_class, error_message
    from ops.table_loads
    where status = 'failed'
    union all
    select coalesce(nodes.started_at, jobs.started_at), nodes.resource_type, nodes.node_name,
        nodes.status, nodes.message
    from ops.dbt_node_runs as nodes
    left join ops.job_runs as jobs on jobs.run_id = nodes.run_id
    where nodes.status in ('error', 'fail', 'runtime error')
) as failures
order by started_at desc nulls last, kind, name
limit %(limit)s
"""

RUNS_PER_DAY = """
select (started_at at time zone 'UTC')::date as day,
    count(*) filter (where status = 'failed'),
    count(*)
from ops.job_runs
where status <> 'running' and started_at > now() - make_interval(days => %(days)s)
group by 1
order by 1
"""

KIND_COLORS = {
    "job": "#1f6feb",
    "load": "#2da44e",
    "model": "#8250df",
    "snapshot": "#bf8700",
    "seed": "#953800",
    "test": "#1b7c83",
}
FAILED = frozenset({"failed", "error", "fail", "runtime error"})
RED, AMBER, GREEN, GREY, OTHER = "#cf222e", "#d4a72c", "#2da44e", "#afb8c1", "#57606a"
PALETTE = ("#1f6feb", "#2da44e", "#8250df", "#bf8700", "#0a7d8c", "#953800", "#bf3989", "#57606a")
LAYER_COLORS = {
    "source": ("#fff8c5", "#d4a72c"),
    "raw": ("#ddf4ff", "#54aeff"),
    "seeds": ("#f6f8fa", "#8c959f"),
    "staging": ("#dafbe1", "#4ac26b"),
    "snapshots": ("#fff1e5", "#fb8f44"),
    "intermediate": ("#fbefff", "#c297ff"),
    "marts": ("#ffebe9", "#ff8182"),
    "exposures": ("#eaeef2", "#57606a"),
}

Point = tuple[datetime, float]


# ----------------------------------------------------------------------- data


class Job(NamedTuple):
    """A row of `LAST_RUN_JOBS`."""

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
class ReportData:
    """Everything the page shows, read from ``ops`` in one go."""

    now: datetime
    days: int
    has_ops: bool = False
    last_run: str | None = None  # the invocation's pipeline_run_id
    lanes: tuple[Lane, ...] = ()
    runtimes: dict[str, list[tuple[datetime, float, bool]]] = field(default_factory=dict)
    runs: tuple[tuple[str, datetime], ...] = ()
    rows: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    freshness: tuple[tuple[str, float | None], ...] = ()
    failures: tuple[Failure, ...] = ()
    runs_per_day: tuple[tuple[date, int, int], ...] = ()


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
    for group, (run_id, job, started, finished, status, rows) in enumerate(jobs):
        lanes.append(Lane(job, "job", group, (Bar("job", job, started, finished, status, rows),)))
        lanes += [
            Lane(name, "load", group, (Bar("load", name, began, ended, state, written),))
            for rid, name, began, ended, state, written in loads
            if rid == run_id
        ]
        tests: list[Bar] = []
        for rid, kind, name, began, ended, state, affected in nodes:
            if rid != run_id:
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


def collect_report(conn: Any, *, days: int = 30) -> ReportData:
    """Read what the report shows from the ``ops`` tables (nothing is written)."""
    with conn.cursor() as cur:
        cur.execute(HAS_OPS)
        has_ops, now = cur.fetchone()
        if not has_ops:
            return ReportData(now=now, days=days)

        def fetch(query: str, **params: Any) -> list[tuple[Any, ...]]:
            cur.execute(query, params)
            return list(cur.fetchall())

        last = fetch(LAST_RUN)
        invocation = last[0][0] if last else None
        session = [Job(*row) for row in fetch(LAST_RUN_JOBS, invocation=invocation)] if last else []
        run_ids = [job[0] for job in session]
        lanes = build_lanes(
            session,
            fetch(SESSION_LOADS, run_ids=run_ids) if run_ids else [],
            fetch(SESSION_NODES, run_ids=run_ids) if run_ids else [],
        )
        runtimes: dict[str, list[tuple[datetime, float, bool]]] = {}
        for job, started, seconds, status in fetch(RUNTIME_TREND, days=days):
            runtimes.setdefault(job, []).append((started, float(seconds), status == "succeeded"))
        runs: dict[str, datetime] = {}
        rows: dict[tuple[str, str], tuple[int, str]] = {}
        for run_id, started, table, written, status in fetch(
            ROWS_PER_RUN, days=days, runs=HEATMAP_RUNS
        ):
            runs[run_id] = started
            rows[(table, run_id)] = (int(written), status)
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
                (table, None if hours is None else float(hours))
                for table, hours in fetch(FRESHNESS)
            ),
            failures=tuple(Failure(*row) for row in fetch(FAILURES, limit=FAILURE_LIMIT)),
            runs_per_day=tuple(fetch(RUNS_PER_DAY, days=days)),
        )


# ------------------------------------------------------------------ formatting


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def utc(moment: datetime | None, *, seconds: bool = False) -> str:
    """``2026-11-24 18:21 UTC``."""
    if moment is None:
        return "-"
    pattern = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return moment.astimezone(UTC).strftime(pattern) + " UTC"


def duration(seconds: float) -> str:
    """``0.84 s``, ``12 s``, ``3 min 05 s``, ``2 h 10 min``."""
    if seconds == 0:
        return "0 s"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def offset(seconds: float) -> str:
    """An axis label: ``0``, ``45s``, ``1m30s``, ``2h``."""
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60}m" if rest else f"{hours}h"


def age(hours: float) -> str:
    """``12 min``, ``3.2 h``, ``4.1 d``."""
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def compact(number: float) -> str:
    """``950``, ``1.2k``, ``34k``, ``5.6M``."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            scaled = number / limit
            return f"{scaled:.1f}{suffix}" if scaled < 10 else f"{scaled:.0f}{suffix}"
    return f"{number:.0f}" if float(number).is_integer() else f"{number:.1f}"


def nice_step(span: float, ticks: int = 5) -> float:
    """1, 2 or 5 times a power of ten, so ``span`` gets about ``ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


# Tick spacings in seconds: for the Gantt chart's offsets and for calendar axes.
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
DATE_STEPS = tuple(minutes * 60 for minutes in (5, 10, 30, 60, 120, 180, 360, 720, 1440, 10080))


def time_step(span: float, steps: Sequence[int], ticks: int = 8) -> int:
    return next((step for step in steps if span / step <= ticks), steps[-1])


# ---------------------------------------------------------------------- charts


def svg(width: float, height: float, body: Iterable[str], *, label: str) -> str:
    return (
        f'<svg width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-label="{_esc(label)}">' + "".join(body) + "</svg>"
    )


def empty(text: str) -> str:
    return f'<p class="empty">{_esc(text)}</p>'


def legend(items: Iterable[tuple[str, str]]) -> str:
    return (
        '<ul class="legend">'
        + "".join(
            f'<li><span class="swatch" style="background:{color}"></span>{_esc(name)}</li>'
            for name, color in items
        )
        + "</ul>"
    )


def bar_color(bar: Bar) -> str:
    if bar.status in FAILED:
        return RED
    if bar.status == "skipped":
        return GREY
    if bar.status == "warn":
        return AMBER
    return KIND_COLORS.get(bar.kind, OTHER)


def gantt_svg(lanes: Sequence[Lane]) -> str:
    """Bars on a shared time axis, one row per job, load and model (tests packed
    into lanes): what ran when, and what ran in parallel."""
    if not lanes:
        return empty("No runs recorded yet: run `invoke load transform`.")
    start = min(bar.started_at for lane in lanes for bar in lane.bars)
    end = max(bar.finished_at for lane in lanes for bar in lane.bars)
    span = max((end - start).total_seconds(), 1.0)
    left, right, top, row = 250, 70, 26, 20
    scale = (WIDTH - left - right) / span
    height = top + len(lanes) * row + 6
    body: list[str] = []
    for index, lane in enumerate(lanes):
        if lane.kind == "job" or lane.group % 2 == 0:
            css = "band job" if lane.kind == "job" else "band"
            y = top + index * row
            body.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{row}" class="{css}"/>')
    step = time_step(span, TIME_STEPS)
    for tick in range(0, int(span) + 1, step):
        x = left + tick * scale
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height}" class="grid"/>'
            f'<text x="{x:.1f}" y="{top - 9}" text-anchor="middle" class="axis">{offset(tick)}</text>'
        )
    for index, lane in enumerate(lanes):
        y = top + index * row
        indent = 0 if lane.kind == "job" else 14
        css = "label job" if lane.kind == "job" else "label"
        name = lane.label if len(lane.label) <= 34 else lane.label[:33] + "…"
        body.append(
            f'<text x="{8 + indent}" y="{y + 14}" class="{css}"><title>{_esc(lane.label)}</title>'
            f"{_esc(name)}</text>"
        )
        for bar in lane.bars:
            x = left + (bar.started_at - start).total_seconds() * scale
            w = max(bar.seconds * scale, 1.5)
            rows = "" if bar.rows is None else f", {bar.rows:,} rows"
            tip = (
                f"{bar.kind} {bar.label}: {bar.status}{rows}\n"
                f"{utc(bar.started_at, seconds=True)}, took {duration(bar.seconds)}"
            )
            body.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" rx="2" '
                f'fill="{bar_color(bar)}"><title>{_esc(tip)}</title></rect>'
            )
        if lane.kind != "test" and len(lane.bars) == 1:
            bar = lane.bars[0]
            x = left + (bar.finished_at - start).total_seconds() * scale + 4
            if x < WIDTH - 8:
                body.append(
                    f'<text x="{x:.1f}" y="{y + 14}" class="axis">{duration(bar.seconds)}</text>'
                )
    return svg(WIDTH, height, body, label="Gantt chart of the last run")


def seconds_axis(top_value: float, left: float, top: float, bottom: float) -> list[str]:
    """Horizontal grid lines labelled in seconds, from 0 to ``top_value``."""
    step = nice_step(top_value, 4)
    body = []
    value = 0.0
    while value <= top_value + step / 1000:
        y = bottom - value / top_value * (bottom - top)
        label = f"{value:g} s" if value < 60 else duration(value)
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{WIDTH - 20}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{label}</text>'
        )
        value += step
    return body


def runtime_svg(series: dict[str, list[tuple[datetime, float, bool]]]) -> str:
    """One line of durations per job over time; failed runs are red circles off
    the line."""
    points = [point for values in series.values() for point in values]
    if not points:
        return empty("No finished runs in this period.")
    left, top, bottom = 80, 12, 250
    t0 = min(p[0] for p in points)
    t1 = max(p[0] for p in points)
    span = max((t1 - t0).total_seconds(), 3600.0)
    highest = max(p[1] for p in points) or 1.0
    step = nice_step(highest, 4)
    top_value = math.ceil(highest / step) * step

    def xy(when: datetime, value: float) -> tuple[float, float]:
        x = left + (when - t0).total_seconds() / span * (WIDTH - left - 30)
        return x, bottom - value / top_value * (bottom - top)

    body = seconds_axis(top_value, left, top, bottom)
    tick_step = time_step(span, DATE_STEPS)
    first = math.ceil(t0.timestamp() / tick_step) * tick_step
    for stamp in range(int(first), int(t0.timestamp() + span) + 1, tick_step):
        when = datetime.fromtimestamp(stamp, UTC)
        x, _ = xy(when, 0)
        text = when.strftime("%b %d" if tick_step >= 86400 else "%m-%d %H:%M")
        body.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" class="grid"/>'
            f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle" class="axis">{text}</text>'
        )
    radius = 3 if len(points) < 200 else 2
    for index, (name, values) in enumerate(sorted(series.items())):
        color = PALETTE[index % len(PALETTE)]
        good = [xy(when, value) for when, value, ok in values if ok]
        if len(good) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in good)
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        for when, value, ok in values:
            x, y = xy(when, value)
            state = "" if ok else " (failed)"
            tip = f"{name}{state}: {duration(value)}, {utc(when)}"
            style = f'fill="{color}"' if ok else f'fill="white" stroke="{RED}" stroke-width="2"'
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" {style}>'
                f"<title>{_esc(tip)}</title></circle>"
            )
    chart = svg(WIDTH, bottom + 26, body, label="runtime per job over time")
    items = [(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(sorted(series))]
    if any(not ok for values in series.values() for _, _, ok in values):
        items.append(("failed run", RED))
    return chart + legend(items)


def heat(value: int, highest: int) -> tuple[str, str]:
    """Cell fill and text colour on a log scale from pale to deep blue."""
    if value <= 0:
        return "#f6f8fa", "#57606a"
    t = min(math.log10(1 + value) / math.log10(1 + max(highest, 1)), 1.0)
    low, high = (234, 242, 255), (9, 80, 180)
    rgb = (round(a + (b - a) * t) for a, b in zip(low, high, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb), "white" if t > 0.55 else "#1f2328"


def heatmap_svg(
    runs: Sequence[tuple[str, datetime]], rows: dict[tuple[str, str], tuple[int, str]]
) -> str:
    """Tables down, load runs across: rows written (inserted + updated + deleted),
    coloured on a log scale so a full reload and an incremental run both read."""
    if not runs:
        return empty("No table loads recorded in this period.")
    tables = sorted({table for table, _ in rows})
    totals = {
        run_id: sum(rows.get((table, run_id), (0, ""))[0] for table in tables) for run_id, _ in runs
    }
    left, header, row = 200, 74, 22
    cell = max(34.0, min(64.0, (WIDTH - left - 10) / len(runs)))
    width = left + cell * len(runs) + 60  # room for the last slanted run label
    highest = max((written for written, _ in rows.values()), default=1)
    highest_total = max(totals.values(), default=1)
    body: list[str] = []
    for column, (run_id, started) in enumerate(runs):
        x = left + column * cell + cell / 2
        body.append(
            f'<text transform="translate({x:.1f},{header - 6}) rotate(-45)" class="axis">'
            f"<title>run {_esc(run_id)}</title>{started.astimezone(UTC):%m-%d %H:%M}</text>"
        )
    for index, table in enumerate([*tables, "all tables"]):
        y = header + index * row
        css = "label job" if table == "all tables" else "label"
        body.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" class="{css}">{_esc(table)}</text>'
        )
        for column, (run_id, started) in enumerate(runs):
            x = left + column * cell
            if table == "all tables":
                written, status = totals[run_id], "total"
            elif (table, run_id) in rows:
                written, status = rows[(table, run_id)]
            else:
                continue
            fill, ink = heat(written, highest_total if status == "total" else highest)
            text = compact(written)
            if status in FAILED:
                fill, ink, text = "#ffebe9", RED, "failed"
            elif status == "skipped":
                fill, ink, text = "#f6f8fa", "#8c959f", "skip"
            tip = f"{table}, run {run_id} at {utc(started)}: {written:,} rows ({status})"
            body.append(
                f'<rect x="{x + 1:.1f}" y="{y + 1}" width="{cell - 2:.1f}" height="{row - 2}" '
                f'rx="2" fill="{fill}"><title>{_esc(tip)}</title></rect>'
                f'<text x="{x + cell / 2:.1f}" y="{y + 15}" text-anchor="middle" class="cell" '
                f'fill="{ink}">{text}</text>'
            )
    height = header + (len(tables) + 1) * row + 4
    return svg(width, height, body, label="rows written per table per run")


def freshness_svg(tables: Sequence[tuple[str, float | None]]) -> str:
    """Hours since each table's last successful load, against the 24 h threshold."""
    if not tables:
        return empty("No table loads recorded yet.")
    left, row, plot = 220, 24, 700
    highest = max([hours for _, hours in tables if hours is not None] + [FRESH_HOURS * 1.25])
    x = left + FRESH_HOURS / highest * plot
    body = [
        f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{len(tables) * row + 4}" class="limit"/>'
        f'<text x="{x + 4:.1f}" y="{len(tables) * row + 16}" class="axis">{FRESH_HOURS:g} h</text>'
    ]
    for index, (table, hours) in enumerate(tables):
        y = 4 + index * row
        body.append(
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" class="label">{_esc(table)}</text>'
        )
        if hours is None:
            body.append(
                f'<text x="{left}" y="{y + 14}" class="label" fill="{RED}">'
                "never loaded successfully</text>"
            )
            continue
        color = GREEN if hours <= FRESH_HOURS else AMBER if hours <= STALE_HOURS else RED
        w = max(hours / highest * plot, 2.0)
        body.append(
            f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" rx="2" fill="{color}">'
            f"<title>{_esc(table)}: last loaded {age(hours)} ago</title></rect>"
            f'<text x="{left + w + 6:.1f}" y="{y + 14}" class="label">{age(hours)}</text>'
        )
    return svg(WIDTH, len(tables) * row + 24, body, label="freshness per table")


def runs_per_day_svg(days: Sequence[tuple[date, int, int]], *, period: int, today: datetime) -> str:
    """Finished jobs per day, the failed ones in red."""
    if not days:
        return ""
    counts = {day: (failed, total) for day, failed, total in days}
    last = today.astimezone(UTC).date()
    dates = [last - timedelta(days=n) for n in range(period - 1, -1, -1)]
    left, top, bottom = 80, 8, 70
    highest = max(total for _, total in counts.values()) or 1
    slot = (WIDTH - left - 20) / len(dates)
    body = [
        f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" class="axis">{highest}</text>',
        f'<text x="{left - 6}" y="{bottom}" text-anchor="end" class="axis">0</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - 20}" y2="{bottom}" class="grid"/>',
    ]
    every = max(1, math.ceil(len(dates) / 10))
    for index, day in enumerate(dates):
        x = left + index * slot
        failed, total = counts.get(day, (0, 0))
        ok_h = (total - failed) / highest * (bottom - top)
        bad_h = failed / highest * (bottom - top)
        tip = _esc(f"{day}: {total} runs, {failed} failed")
        if total:
            body.append(
                f'<rect x="{x + 1:.1f}" y="{bottom - ok_h - bad_h:.1f}" width="{slot - 2:.1f}" '
                f'height="{bad_h:.1f}" fill="{RED}"><title>{tip}</title></rect>'
                f'<rect x="{x + 1:.1f}" y="{bottom - ok_h:.1f}" width="{slot - 2:.1f}" '
                f'height="{ok_h:.1f}" fill="{GREY}"><title>{tip}</title></rect>'
            )
        if index % every == 0:
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{bottom + 16}" text-anchor="middle" '
                f'class="axis">{day:%b %d}</text>'
            )
    return svg(WIDTH, bottom + 22, body, label="finished and failed runs per day") + legend(
        [("finished", GREY), ("failed", RED)]
    )


def failures_table(failures: Sequence[Failure]) -> str:
    if not failures:
        return empty("No failures recorded.")
    rows = "".join(
        f"<tr><td class='when'>{utc(item.started_at)}</td><td>{_esc(item.kind)}</td>"
        f"<td>{_esc(item.name)}</td><td>{_esc(item.error_class or '')}</td>"
        f"<td class='message'>{_esc((item.message or '')[:2000])}</td></tr>"
        for item in failures
    )
    return (
        "<table><thead><tr><th>started</th><th>what</th><th>name</th><th>class</th>"
        f"<th>message</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def arrange(graph: Graph) -> list[tuple[str, list[tuple[str, str]]]]:
    """Layers with nodes ordered to cut crossings: a few barycentre sweeps, each
    node placed at the mean position of its neighbours in the previous layer."""
    ordered = layers(graph)
    upstream: dict[str, list[str]] = {}
    downstream: dict[str, list[str]] = {}
    for up, down in graph.edges:
        downstream.setdefault(up, []).append(down)
        upstream.setdefault(down, []).append(up)

    def positions() -> dict[str, float]:
        return {
            node_id: row - (len(members) - 1) / 2
            for _, members in ordered
            for row, (node_id, _) in enumerate(members)
        }

    for sweep in range(4):
        neighbours = upstream if sweep % 2 == 0 else downstream
        indices = range(1, len(ordered)) if sweep % 2 == 0 else range(len(ordered) - 2, -1, -1)
        for index in indices:
            where = positions()
            layer, members = ordered[index]
            centres = {node_id: _centre(node_id, neighbours, where) for node_id, _ in members}
            ordered[index] = (layer, sorted(members, key=lambda item: (centres[item[0]], item[1])))
    return ordered


def _centre(node_id: str, neighbours: dict[str, list[str]], where: dict[str, float]) -> float:
    near = [where[other] for other in neighbours.get(node_id, []) if other in where]
    return sum(near) / len(near) if near else where[node_id]


def lineage_svg(graph: Graph) -> str:
    """Columns of nodes per layer, left to right, with curves for dependencies."""
    ordered = arrange(graph)
    if not ordered:
        return empty("No dependency graph given (`invoke report` reads dbt's manifest).")
    row, gap, char = 26, 56, 6.6
    widths = [
        min(max(len(label) for _, label in members) * char + 18, 230) for _, members in ordered
    ]
    tallest = max(len(members) for _, members in ordered)
    height = 34 + tallest * row
    position: dict[str, tuple[float, float, float]] = {}
    nodes: list[str] = []
    x = 10.0
    for (layer, members), width in zip(ordered, widths, strict=True):
        fill, stroke = LAYER_COLORS.get(layer, ("#f6f8fa", "#8c959f"))
        nodes.append(
            f'<text x="{x + width / 2:.1f}" y="14" text-anchor="middle" class="axis">'
            f"{_esc(LAYER_TITLES.get(layer, layer))}</text>"
        )
        first = 28 + (tallest - len(members)) * row / 2
        for index, (node_id, label) in enumerate(members):
            y = first + index * row
            position[node_id] = (x, y + 10, width)
            limit = int((width - 14) / char)
            text = label if len(label) <= limit else label[: limit - 1] + "…"
            nodes.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="20" rx="5" '
                f'fill="{fill}" stroke="{stroke}"><title>{_esc(label)}</title></rect>'
                f'<text x="{x + 7:.1f}" y="{y + 14:.1f}" class="label">{_esc(text)}</text>'
            )
        x += width + gap
    edges = []
    for up, down in sorted(graph.edges):
        if up not in position or down not in position:
            continue
        x1, y1, w1 = position[up]
        x2, y2, _ = position[down]
        x1 += w1
        bend = max(abs(x2 - x1) / 2, 20)
        edges.append(
            f'<path d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} '
            f'{x2 - 2:.1f},{y2:.1f}" class="edge" marker-end="url(#arrow)"/>'
        )
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#8c959f"/></marker></defs>'
    )
    return svg(x - gap + 10, height, [marker, *edges, *nodes], label="dependency graph")


# ------------------------------------------------------------------------ page

STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
  background: #f6f8fa; color: #1f2328; }
main { max-width: 1160px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 0 0 .25rem; }
.meta, .note, .empty { color: #57606a; margin: 0 0 .75rem; }
nav a { margin-right: 1rem; color: #0969da; text-decoration: none; }
.cards { display: flex; gap: .75rem; flex-wrap: wrap; margin: 1rem 0; }
.card { background: white; border: 1px solid #d0d7de; border-radius: 8px; padding: .6rem 1rem;
  min-width: 9rem; }
.card b { display: block; font-size: 1.25rem; } .card span { color: #57606a; font-size: 12px; }
.card.bad b { color: #cf222e; } .card.good b { color: #1a7f37; }
section { background: white; border: 1px solid #d0d7de; border-radius: 8px; padding: 1rem 1.25rem;
  margin: 1rem 0; overflow-x: auto; }
svg { max-width: 100%; height: auto; display: block; }
svg text { font-family: inherit; }
.label { font-size: 12px; fill: #1f2328; } .label.job { font-weight: 600; }
.axis { font-size: 11px; fill: #57606a; } .cell { font-size: 11px; }
.grid { stroke: #eaeef2; } .band { fill: #f6f8fa; } .band.job { fill: #eef3fb; }
.limit { stroke: #d4a72c; stroke-dasharray: 4 3; }
.edge { stroke: #8c959f; stroke-width: 1.2; fill: none; }
.legend { list-style: none; padding: 0; margin: .5rem 0 0; display: flex; flex-wrap: wrap;
  gap: .25rem 1rem; font-size: 12px; color: #57606a; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; }
table { border-collapse: collapse; width: 100%; margin-top: .75rem; font-size: 13px; }
th, td { border-bottom: 1px solid #d0d7de; padding: 5px 8px; text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; } td.when { white-space: nowrap; }
td.message { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, monospace;
  font-size: 12px; color: #82071e; }
details { margin-top: .75rem; } summary { cursor: pointer; color: #0969da; }
pre { background: #f6f8fa; border-radius: 6px; padding: .75rem; overflow: auto;
  max-height: 28rem; font-size: 12px; }
"""

SECTIONS = (
    ("gantt", "Last run"),
    ("runtime-trend", "Runtime per job"),
    ("rows-per-table", "Rows per table"),
    ("freshness", "Freshness"),
    ("failures", "Failures"),
    ("lineage", "Lineage"),
)


def summary_cards(data: ReportData) -> str:
    cards: list[tuple[str, str, str]] = []
    jobs = [lane.bars[0] for lane in data.lanes if lane.kind == "job"]
    if jobs:
        began = min(bar.started_at for bar in jobs)
        ended = max(bar.finished_at for bar in jobs)
        failed = [bar.label for bar in jobs if bar.status in FAILED]
        running = any(bar.status == "running" for bar in jobs)
        state = "failed" if failed else "running" if running else "succeeded"
        cards += [
            (utc(began), f"last run started (run {data.last_run})", ""),
            (duration((ended - began).total_seconds()), "last run took", ""),
            (state, f"{len(jobs)} job(s) in the last run", "bad" if failed else "good"),
        ]
    recent = sum(failed for _, failed, _ in data.runs_per_day)
    total = sum(total for _, _, total in data.runs_per_day)
    if total:
        cards.append((f"{recent} / {total}", f"runs failed, last {data.days} days", ""))
    stale = [table for table, hours in data.freshness if hours is None or hours > FRESH_HOURS]
    if data.freshness:
        cards.append(
            (
                f"{len(stale)} / {len(data.freshness)}",
                f"tables older than {FRESH_HOURS:g} h",
                "bad" if stale else "good",
            )
        )
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {css}"><b>{_esc(value)}</b><span>{_esc(text)}</span></div>'
            for value, text, css in cards
        )
        + "</div>"
    )


def render_report(data: ReportData, graph: Graph, *, mermaid: str | None = None) -> str:
    """The whole page as one HTML string."""
    note = "" if data.has_ops else " No run records yet: the ops tables do not exist."
    order = list(KIND_COLORS)
    kinds = sorted(
        {lane.kind for lane in data.lanes},
        key=lambda kind: (order.index(kind) if kind in order else len(order), kind),
    )
    gantt_legend = legend(
        [(kind, KIND_COLORS.get(kind, OTHER)) for kind in kinds] + [("failed", RED)]
    )
    bodies = {
        "gantt": (
            "Jobs, table loads and dbt nodes of the most recent run"
            + (f" (pipeline run {data.last_run}, one invocation)" if data.last_run else "")
            + " on one time axis; overlapping bars ran in parallel. Hover a bar for details.",
            gantt_svg(data.lanes) + (gantt_legend if data.lanes else ""),
        ),
        "runtime-trend": (
            f"Duration of every finished job run in the last {data.days} days.",
            runtime_svg(data.runtimes),
        ),
        "rows-per-table": (
            f"Rows written (inserted + updated + deleted) per table in the last "
            f"{HEATMAP_RUNS} load runs; colour on a log scale.",
            heatmap_svg(data.runs, data.rows),
        ),
        "freshness": (
            f"Time since each table's last successful load (green within {FRESH_HOURS:g} h, "
            f"amber within {STALE_HOURS:g} h).",
            freshness_svg(data.freshness),
        ),
        "failures": (
            f"Failed jobs, table loads and dbt nodes, newest first (at most {FAILURE_LIMIT}).",
            runs_per_day_svg(data.runs_per_day, period=data.days, today=data.now)
            + failures_table(data.failures),
        ),
        "lineage": (
            "Source tables → raw → staging → intermediate → marts → exposures, from dbt's "
            "manifest.",
            lineage_svg(graph)
            + (
                "<details><summary>Mermaid source</summary>"
                f"<pre>{_esc(mermaid or to_mermaid(graph))}</pre></details>"
                if graph.nodes
                else ""
            ),
        ),
    }
    sections = "".join(
        f'<section id="{anchor}"><h2>{_esc(title)}</h2><p class="note">{_esc(caption)}</p>'
        f"{content}</section>"
        for anchor, title in SECTIONS
        for caption, content in [bodies[anchor]]
    )
    nav = "".join(f'<a href="#{anchor}">{_esc(title)}</a>' for anchor, title in SECTIONS)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tidewater pipeline report</title><style>{STYLE}</style></head><body><main>"
        "<h1>tidewater pipeline report</h1>"
        f'<p class="meta">Generated {utc(data.now)} from the warehouse\'s ops tables.{note}</p>'
        f"<nav>{nav}</nav>{summary_cards(data)}{sections}</main></body></html>\n"
    )


def write_report(
    conn: Any,
    path: Path,
    *,
    days: int = 30,
    manifest: dict[str, Any] | None = None,
    mermaid: str | None = None,
) -> Path:
    """Write the report to ``path`` from the ops tables on ``conn``.

    Args:
        conn: a psycopg2 connection to the warehouse (only read from).
        path: the HTML file to write; its directory is created if needed.
        days: how far back the trends, the rows per run and the daily counts reach.
        manifest: dbt's parsed ``manifest.json``, for the lineage section.
        mermaid: the graph as Mermaid text (as `control.graph.to_mermaid` writes
            it), used when no manifest is given.
    """
    if manifest:
        graph, mermaid = build_graph(manifest), None
    else:
        graph = parse_mermaid(mermaid) if mermaid else Graph()
    page = render_report(collect_report(conn, days=days), graph, mermaid=mermaid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
