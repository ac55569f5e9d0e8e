"""``invoke report``: one self-contained HTML page about the pipeline, drawn from
the ``ops`` tables — a Gantt chart of the last run, runtime trends per job, rows
per table per run, freshness, the last failures and the dependency graph.

No scripts, fonts or styles from elsewhere: the charts are inline SVG drawn here.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Any

LAST_RUN_WINDOW = """
with last_load as (
    select started_at from ops.job_runs where job = 'load' order by started_at desc limit 1
)
select coalesce((select started_at from last_load), now() - interval '1 day')
"""

GANTT_ROWS = """
select 'job' as kind, job as name, started_at, coalesce(finished_at, now()) as finished_at, status
from ops.job_runs where started_at >= %(since)s and status <> 'skipped'
union all
select 'load', source_name || '.' || table_name, started_at,
    started_at + make_interval(secs => duration_s), status
from ops.table_loads where started_at >= %(since)s
union all
select split_part(unique_id, '.', 1), node_name, started_at, completed_at, status
from ops.dbt_node_runs
where started_at >= %(since)s and completed_at is not null
    and unique_id not like 'test.%%'
order by started_at
"""

RUNTIME_TREND = """
select job, started_at, duration_s from ops.job_runs
where status = 'succeeded' and started_at > now() - make_interval(days => %(days)s)
order by job, started_at
"""

ROWS_PER_TABLE = """
select source_name || '.' || table_name as table_name, started_at,
    rows_inserted + rows_updated + rows_deleted as rows_written
from ops.table_loads
where started_at > now() - make_interval(days => %(days)s)
order by 1, 2
"""

FRESHNESS = """
select source_name || '.' || table_name,
    extract(epoch from now() - max(started_at)) / 3600.0
from ops.table_loads where status = 'succeeded'
group by 1 order by 1
"""

FAILURES = """
select started_at, job, error_class, error_message from ops.job_runs
where status = 'failed' order by started_at desc limit 10
"""

COLORS = {
    "job": "#1f6feb",
    "load": "#2da44e",
    "model": "#8250df",
    "snapshot": "#bf8700",
    "seed": "#57606a",
}
STATUS_COLORS = {"failed": "#cf222e", "error": "#cf222e", "fail": "#cf222e", "skipped": "#8c959f"}
PALETTE = ("#1f6feb", "#2da44e", "#8250df", "#bf8700", "#cf222e", "#0a7d8c", "#953800", "#57606a")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg(width: int, height: int, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">' + "".join(body) + "</svg>"
    )


def gantt_svg(rows: list[tuple[str, str, datetime, datetime, str]]) -> str:
    """Bars on a shared time axis: what ran when, and what ran in parallel."""
    if not rows:
        return "<p class='empty'>No runs recorded yet.</p>"
    start = min(row[2] for row in rows)
    end = max(row[3] for row in rows)
    span = max((end - start).total_seconds(), 0.001)
    label_width, width, bar = 260, 1100, 16
    height = 30 + len(rows) * (bar + 4)
    scale = (width - label_width - 20) / span
    body = [
        f'<text x="{label_width}" y="14" class="axis">0 s</text>',
        f'<text x="{width - 20}" y="14" class="axis" text-anchor="end">{span:.1f} s</text>',
    ]
    for index, (kind, name, began, finished, status) in enumerate(rows):
        y = 24 + index * (bar + 4)
        x = label_width + (began - start).total_seconds() * scale
        w = max(2.0, (finished - began).total_seconds() * scale)
        color = STATUS_COLORS.get(status, COLORS.get(kind, "#57606a"))
        seconds = (finished - began).total_seconds()
        body.append(
            f'<text x="{label_width - 8}" y="{y + 12}" text-anchor="end" class="label">'
            f"{_esc(kind)}: {_esc(name)}</text>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" rx="3" fill="{color}">'
            f"<title>{_esc(name)}: {seconds:.2f} s ({_esc(status)})</title></rect>"
        )
    return _svg(width, height, body)


def line_chart_svg(series: dict[str, list[tuple[datetime, float]]], unit: str) -> str:
    """One line per series over time, with a legend."""
    points = [point for values in series.values() for point in values]
    if not points:
        return "<p class='empty'>Not enough history yet.</p>"
    width, height, left, bottom = 1100, 300, 60, 30
    t0 = min(p[0] for p in points)
    t1 = max(p[0] for p in points)
    span = max((t1 - t0).total_seconds(), 1.0)
    top = max(p[1] for p in points) or 1.0
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" class="grid"/>',
        f'<text x="{left - 6}" y="16" text-anchor="end" class="axis">{top:,.1f} {unit}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" class="axis">0</text>',
    ]
    for index, (name, values) in enumerate(sorted(series.items())):
        color = PALETTE[index % len(PALETTE)]
        coordinates = [
            (
                left + (when - t0).total_seconds() / span * (width - left - 20),
                (height - bottom) - value / top * (height - bottom - 20),
            )
            for when, value in values
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        body += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{_esc(name)}: '
            f"{value:,.2f} {unit}</title></circle>"
            for (x, y), (_, value) in zip(coordinates, values, strict=True)
        ]
        body.append(
            f'<text x="{width - 200}" y="{20 + index * 16}" fill="{color}" class="label">'
            f"{_esc(name)}</text>"
        )
    return _svg(width, height, body)


def bar_chart_svg(bars: list[tuple[str, float]], unit: str) -> str:
    if not bars:
        return "<p class='empty'>No loads recorded yet.</p>"
    width, bar, label_width = 1100, 18, 200
    top = max(value for _, value in bars) or 1.0
    body = []
    for index, (name, value) in enumerate(bars):
        y = 6 + index * (bar + 6)
        w = max(2.0, value / top * (width - label_width - 120))
        color = "#cf222e" if value > 24 else "#2da44e"
        body.append(
            f'<text x="{label_width - 8}" y="{y + 13}" text-anchor="end" class="label">{_esc(name)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar}" rx="3" fill="{color}"/>'
            f'<text x="{label_width + w + 6}" y="{y + 13}" class="label">{value:,.1f} {unit}</text>'
        )
    return _svg(width, 12 + len(bars) * (bar + 6), body)


def lineage_svg(
    layered: list[tuple[str, list[tuple[str, str]]]], edges: set[tuple[str, str]]
) -> str:
    """Columns of nodes per layer, with lines for dependencies."""
    if not layered:
        return (
            "<p class='empty'>Run `invoke docs` (or any dbt command) to produce the manifest.</p>"
        )
    column_width, row_height = 190, 24
    width = column_width * len(layered) + 20
    height = 40 + row_height * max(len(members) for _, members in layered)
    position: dict[str, tuple[float, float]] = {}
    body = []
    for column, (layer, members) in enumerate(layered):
        x = 10 + column * column_width
        body.append(f'<text x="{x}" y="16" class="axis">{_esc(layer)}</text>')
        for row, (node_id, label) in enumerate(members):
            y = 30 + row * row_height
            position[node_id] = (x, y)
            body.append(
                f'<rect x="{x}" y="{y}" width="{column_width - 30}" height="18" rx="4" class="node"/>'
                f'<text x="{x + 6}" y="{y + 13}" class="label">{_esc(label[:26])}</text>'
            )
    lines = [
        f'<line x1="{position[a][0] + column_width - 30}" y1="{position[a][1] + 9}" '
        f'x2="{position[b][0]}" y2="{position[b][1] + 9}" class="edge"/>'
        for a, b in sorted(edges)
        if a in position and b in position
    ]
    return _svg(width, height, lines + body)


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1f2328; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
section { overflow-x: auto; }
.label { font-size: 12px; fill: #1f2328; } .axis { font-size: 11px; fill: #57606a; }
.grid { stroke: #d0d7de; } .edge { stroke: #8c959f; stroke-width: 1; }
.node { fill: #ddf4ff; stroke: #54aeff; } .empty { color: #57606a; }
table { border-collapse: collapse; } td, th { border: 1px solid #d0d7de; padding: 4px 8px; }
pre { background: #f6f8fa; padding: 1rem; }
"""


def write_report(
    conn: Any, path: Path, *, days: int = 30, manifest: dict[str, Any] | None = None
) -> Path:
    """Write the report to ``path`` from the ops tables on ``conn``."""
    from tidewater.graph import build_graph, layers, to_mermaid

    with conn.cursor() as cur:
        cur.execute("select to_regclass('ops.job_runs') is not null")
        has_runs = cur.fetchone()[0]

        def fetch(query: str, **params: Any) -> list[tuple]:
            if not has_runs:
                return []
            cur.execute(query, params)
            return cur.fetchall()

        since = fetch(LAST_RUN_WINDOW)
        gantt = fetch(GANTT_ROWS, since=since[0][0]) if since else []
        trend: dict[str, list[tuple[datetime, float]]] = {}
        for job, started, duration in fetch(RUNTIME_TREND, days=days):
            trend.setdefault(job, []).append((started, float(duration or 0)))
        rows: dict[str, list[tuple[datetime, float]]] = {}
        for table, started, written in fetch(ROWS_PER_TABLE, days=days):
            rows.setdefault(table, []).append((started, float(written)))
        freshness = [(name, float(hours)) for name, hours in fetch(FRESHNESS)]
        failures = fetch(FAILURES)
    graph = build_graph(manifest or {})
    failure_rows = "".join(
        f"<tr><td>{_esc(when)}</td><td>{_esc(job)}</td><td>{_esc(kind)}</td><td>{_esc(message)}</td></tr>"
        for when, job, kind, message in failures
    )
    sections = [
        ("gantt", "Last run: what ran when", gantt_svg(gantt)),
        ("runtime-trend", f"Runtime per job, last {days} days", line_chart_svg(trend, "s")),
        ("rows-per-table", "Rows written per table per run", line_chart_svg(rows, "rows")),
        (
            "freshness",
            "Freshness: hours since the last successful load",
            bar_chart_svg(freshness, "h"),
        ),
        (
            "failures",
            "Last failures",
            f"<table><tr><th>started</th><th>job</th><th>class</th><th>message</th></tr>{failure_rows}</table>"
            if failures
            else "<p class='empty'>No failures.</p>",
        ),
        (
            "lineage",
            "Lineage: source tables → raw → staging → marts → exposures",
            lineage_svg(layers(graph), graph.edges)
            + f"<details><summary>Mermaid</summary><pre>{_esc(to_mermaid(graph))}</pre></details>",
        ),
    ]
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>tidewater pipeline report</title>"
        f"<style>{STYLE}</style></head><body><h1>tidewater pipeline report</h1>"
        f"<p>Generated {datetime.now().isoformat(timespec='seconds')}.</p>"
        + "".join(
            f'<section id="{anchor}"><h2>{_esc(title)}</h2>{content}</section>'
            for anchor, title, content in sections
        )
        + "</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path
