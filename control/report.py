"""``invoke report``: one self-contained HTML page about the pipeline, drawn from
the ``ops`` tables: a Gantt chart of the last run, runtime trends per job, rows
per table per run, freshness against the dbt project's limits, the event streams
(lag behind the tail, dead letters, events per second), the last failures and the
dependency graph.

No scripts, fonts or styles from elsewhere: every chart is inline SVG, so the file
can be mailed, archived or opened offline. Reading (`control.report_data`, through
the queries `invoke status` shares) is kept apart from drawing: the charts are
worked out in `control.charts` and the page is the Jinja2 template
``templates/report.html.j2``, rendered with autoescape on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from control.charts import (
    freshness_chart,
    gantt_chart,
    heatmap_chart,
    lineage_chart,
    runs_per_day_chart,
    runtime_chart,
)
from control.formatting import age, duration, utc
from control.freshness import FreshnessLimit, freshness_limits, freshness_state
from control.graph import Graph, build_graph, parse_mermaid, to_mermaid
from control.report_data import FAILED, FAILURE_LIMIT, HEATMAP_RUNS, ReportData, collect_report
from control.svg import number

SECTIONS = {
    "gantt": "Last run",
    "runtime-trend": "Runtime per job",
    "rows-per-table": "Rows per table",
    "freshness": "Freshness",
    "event-streams": "Event streams",
    "failures": "Failures",
    "lineage": "Lineage",
}


@dataclass(frozen=True)
class Card:
    """A number at the top of the page, with what it counts."""

    value: str
    text: str
    css: str = ""


def summary_cards(data: ReportData, limits: dict[str, FreshnessLimit]) -> list[Card]:
    """The last run's start, length and outcome; failed runs; stale tables."""
    cards: list[Card] = []
    jobs = [lane.bars[0] for lane in data.lanes if lane.kind == "job"]
    if jobs:
        began = min(bar.started_at for bar in jobs)
        ended = max(bar.finished_at for bar in jobs)
        failed = any(bar.status in FAILED for bar in jobs)
        running = any(bar.status == "running" for bar in jobs)
        cards += [
            Card(utc(began), f"last run started (run {data.last_run})"),
            Card(duration((ended - began).total_seconds()), "last run took"),
            Card(
                "failed" if failed else "running" if running else "succeeded",
                f"{len(jobs)} job(s) in the last run",
                "bad" if failed else "good",
            ),
        ]
    total = sum(finished for _, _, finished in data.runs_per_day)
    if total:
        failed_runs = sum(failed for _, failed, _ in data.runs_per_day)
        cards.append(Card(f"{failed_runs} / {total}", f"runs failed, last {data.days} days"))
    if data.freshness:
        stale = [
            table
            for table, hours in data.freshness
            if freshness_state(hours, limits.get(table)) in ("warn", "error", "never")
        ]
        cards.append(
            Card(
                f"{len(stale)} / {len(data.freshness)}",
                "tables past their freshness limit or never loaded",
                "bad" if stale else "good",
            )
        )
    return cards


@cache
def environment() -> Environment:
    """The templates under ``control/templates``, autoescaped."""
    env = Environment(
        loader=PackageLoader("control", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = number
    env.filters["utc"] = utc
    env.filters["duration"] = duration
    env.filters["age"] = age
    return env


def render_report(
    data: ReportData,
    graph: Graph,
    *,
    limits: dict[str, FreshnessLimit] | None = None,
    mermaid: str | None = None,
) -> str:
    """The whole page as one HTML string (a pure function of its arguments).

    Args:
        data: what `collect_report` read from ``ops``.
        graph: the dependency graph for the lineage section (may be empty).
        limits: freshness limits by table (`control.freshness.freshness_limits`);
            tables without one are drawn without a limit.
        mermaid: the graph's Mermaid text as given, shown under the drawing
            (by default written from ``graph``).
    """
    limits = limits or {}
    template = environment().get_template("report.html.j2")
    return template.render(
        data=data,
        titles=SECTIONS,
        cards=summary_cards(data, limits),
        gantt=gantt_chart(data.lanes),
        runtime=runtime_chart(data.runtimes),
        heatmap=heatmap_chart(data.runs, data.rows),
        freshness=freshness_chart(data.freshness, limits),
        runs_per_day=runs_per_day_chart(data.runs_per_day, period=data.days, today=data.now),
        lineage=lineage_chart(graph),
        mermaid=mermaid or to_mermaid(graph),
        heatmap_runs=HEATMAP_RUNS,
        failure_limit=FAILURE_LIMIT,
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
        manifest: dbt's parsed ``manifest.json``, for the lineage section and the
            sources' freshness limits.
        mermaid: the graph as Mermaid text (as `control.graph.to_mermaid` writes
            it), used when no manifest is given (then no freshness limits are known).
    """
    if manifest:
        graph, mermaid = build_graph(manifest), None
    else:
        graph = parse_mermaid(mermaid) if mermaid else Graph()
    page = render_report(
        collect_report(conn, days=days),
        graph,
        limits=freshness_limits(manifest),
        mermaid=mermaid,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
