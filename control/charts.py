"""The report's charts as `control.svg.Chart` values: the Gantt chart of the last
run, runtimes per job, rows per table per run, freshness against the project's
limits, finished runs per day, and the lineage graph. Each returns None when it
has nothing to draw (the page says so instead)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

from control.formatting import age, compact, duration, hours_limit, offset, utc
from control.freshness import FreshnessLimit, freshness_state
from control.graph import LAYER_TITLES, Graph, arrange
from control.report_data import FAILED, Bar, Lane
from control.svg import (
    AMBER,
    DATE_STEPS,
    GREEN,
    GREY,
    OTHER,
    PALETTE,
    RED,
    TIME_STEPS,
    WIDTH,
    Chart,
    Circle,
    Curve,
    Line,
    Polyline,
    Rect,
    Shape,
    Text,
    heat,
    nice_step,
    time_step,
)

KIND_COLORS = {
    "job": "#1f6feb",
    "load": "#2da44e",
    "model": "#8250df",
    "snapshot": "#bf8700",
    "seed": "#953800",
    "test": "#1b7c83",
}
FRESHNESS_COLORS = {"fresh": GREEN, "warn": AMBER, "error": RED, "unchecked": GREY}
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


def bar_color(bar: Bar) -> str:
    if bar.status in FAILED:
        return RED
    if bar.status == "skipped":
        return GREY
    if bar.status == "warn":
        return AMBER
    return KIND_COLORS.get(bar.kind, OTHER)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def gantt_chart(lanes: Sequence[Lane]) -> Chart | None:
    """Bars on a shared time axis, one row per job, load and model (tests packed
    into lanes): what ran when, and what ran in parallel."""
    if not lanes:
        return None
    start = min(bar.started_at for lane in lanes for bar in lane.bars)
    end = max(bar.finished_at for lane in lanes for bar in lane.bars)
    span = max((end - start).total_seconds(), 1.0)
    left, right, top, row = 250, 70, 26, 20
    scale = (WIDTH - left - right) / span
    height = top + len(lanes) * row + 6
    shapes: list[Shape] = [
        Rect(0, top + index * row, WIDTH, row, css="band job" if lane.kind == "job" else "band")
        for index, lane in enumerate(lanes)
        if lane.kind == "job" or lane.group % 2 == 0
    ]
    for tick in range(0, int(span) + 1, time_step(span, TIME_STEPS)):
        x = left + tick * scale
        shapes += [
            Line(x, top - 4, x, height),
            Text(x, top - 9, offset(tick), css="axis", anchor="middle"),
        ]
    for index, lane in enumerate(lanes):
        y = top + index * row
        job = lane.kind == "job"
        shapes.append(
            Text(
                8 if job else 22,
                y + 14,
                _shorten(lane.label, 34),
                css="label job" if job else "label",
                tip=lane.label,
            )
        )
        for bar in lane.bars:
            rows = "" if bar.rows is None else f", {bar.rows:,} rows"
            tip = (
                f"{bar.kind} {bar.label}: {bar.status}{rows}\n"
                f"{utc(bar.started_at, seconds=True)}, took {duration(bar.seconds)}"
            )
            x = left + (bar.started_at - start).total_seconds() * scale
            width = max(bar.seconds * scale, 1.5)
            shapes.append(Rect(x, y + 3, width, row - 6, fill=bar_color(bar), rx=2, tip=tip))
        if lane.kind != "test" and len(lane.bars) == 1:
            bar = lane.bars[0]
            x = left + (bar.finished_at - start).total_seconds() * scale + 4
            if x < WIDTH - 8:
                shapes.append(Text(x, y + 14, duration(bar.seconds), css="axis"))
    order = list(KIND_COLORS)
    kinds = sorted(
        {lane.kind for lane in lanes},
        key=lambda kind: (order.index(kind) if kind in order else len(order), kind),
    )
    legend = [(kind, KIND_COLORS.get(kind, OTHER)) for kind in kinds] + [("failed", RED)]
    return Chart(WIDTH, height, "Gantt chart of the last run", tuple(shapes), tuple(legend))


def seconds_axis(top_value: float, left: float, top: float, bottom: float) -> list[Shape]:
    """Horizontal grid lines labelled in seconds, from 0 to ``top_value``."""
    step = nice_step(top_value, 4)
    shapes: list[Shape] = []
    value = 0.0
    while value <= top_value + step / 1000:
        y = bottom - value / top_value * (bottom - top)
        label = f"{value:g} s" if value < 60 else duration(value)
        shapes += [
            Line(left, y, WIDTH - 20, y),
            Text(left - 6, y + 4, label, css="axis", anchor="end"),
        ]
        value += step
    return shapes


def runtime_chart(series: Mapping[str, Sequence[tuple[datetime, float, bool]]]) -> Chart | None:
    """One line of durations per job over time; failed runs are red circles off
    the line."""
    points = [point for values in series.values() for point in values]
    if not points:
        return None
    left, top, bottom = 80, 12, 250
    t0 = min(point[0] for point in points)
    span = max((max(point[0] for point in points) - t0).total_seconds(), 3600.0)
    highest = max(point[1] for point in points) or 1.0
    step = nice_step(highest, 4)
    top_value = math.ceil(highest / step) * step

    def xy(when: datetime, value: float) -> tuple[float, float]:
        x = left + (when - t0).total_seconds() / span * (WIDTH - left - 30)
        return x, bottom - value / top_value * (bottom - top)

    shapes = seconds_axis(top_value, left, top, bottom)
    tick_step = time_step(span, DATE_STEPS)
    first = math.ceil(t0.timestamp() / tick_step) * tick_step
    for stamp in range(int(first), int(t0.timestamp() + span) + 1, tick_step):
        when = datetime.fromtimestamp(stamp, UTC)
        x, _ = xy(when, 0)
        text = when.strftime("%b %d" if tick_step >= 86400 else "%m-%d %H:%M")
        shapes += [
            Line(x, bottom, x, bottom + 5),
            Text(x, bottom + 18, text, css="axis", anchor="middle"),
        ]
    radius = 3 if len(points) < 200 else 2
    legend = []
    for index, (name, values) in enumerate(sorted(series.items())):
        color = PALETTE[index % len(PALETTE)]
        legend.append((name, color))
        good = tuple(xy(when, value) for when, value, ok in values if ok)
        if len(good) > 1:
            shapes.append(Polyline(good, stroke=color))
        for when, value, ok in values:
            x, y = xy(when, value)
            tip = f"{name}{'' if ok else ' (failed)'}: {duration(value)}, {utc(when)}"
            if ok:
                shapes.append(Circle(x, y, radius, fill=color, tip=tip))
            else:
                shapes.append(
                    Circle(x, y, radius, fill="white", stroke=RED, stroke_width=2, tip=tip)
                )
    if any(not ok for values in series.values() for _, _, ok in values):
        legend.append(("failed run", RED))
    return Chart(WIDTH, bottom + 26, "runtime per job over time", tuple(shapes), tuple(legend))


def heatmap_chart(
    runs: Sequence[tuple[str, datetime]], rows: Mapping[tuple[str, str], tuple[int, str]]
) -> Chart | None:
    """Tables down, load runs across: rows written (inserted + updated + deleted),
    coloured on a log scale so a full reload and an incremental run both read."""
    if not runs:
        return None
    tables = sorted({table for table, _ in rows})
    totals = {
        run_id: sum(rows.get((table, run_id), (0, ""))[0] for table in tables) for run_id, _ in runs
    }
    left, header, row = 200, 74, 22
    cell = max(34.0, min(64.0, (WIDTH - left - 10) / len(runs)))
    width = left + cell * len(runs) + 60  # room for the last slanted run label
    highest = max((written for written, _ in rows.values()), default=1)
    highest_total = max(totals.values(), default=1)
    shapes: list[Shape] = [
        Text(
            left + column * cell + cell / 2,
            header - 6,
            f"{started.astimezone(UTC):%m-%d %H:%M}",
            css="axis",
            tip=f"run {run_id}",
            rotate=-45,
        )
        for column, (run_id, started) in enumerate(runs)
    ]
    for index, table in enumerate([*tables, "all tables"]):
        y = header + index * row
        total = table == "all tables"
        shapes.append(
            Text(left - 8, y + 15, table, css="label job" if total else "label", anchor="end")
        )
        for column, (run_id, started) in enumerate(runs):
            if total:
                written, status = totals[run_id], "total"
            elif (table, run_id) in rows:
                written, status = rows[(table, run_id)]
            else:
                continue
            fill, ink = heat(written, highest_total if total else highest)
            text = compact(written)
            if status in FAILED:
                fill, ink, text = "#ffebe9", RED, "failed"
            elif status == "skipped":
                fill, ink, text = "#f6f8fa", "#8c959f", "skip"
            x = left + column * cell
            tip = f"{table}, run {run_id} at {utc(started)}: {written:,} rows ({status})"
            shapes += [
                Rect(x + 1, y + 1, cell - 2, row - 2, fill=fill, rx=2, tip=tip),
                Text(x + cell / 2, y + 15, text, css="cell", anchor="middle", fill=ink),
            ]
    height = header + (len(tables) + 1) * row + 4
    return Chart(width, height, "rows written per table per run", tuple(shapes))


def _limits_text(limit: FreshnessLimit | None) -> str:
    if limit is None:
        return "no freshness limit set"
    parts = []
    if limit.warn_hours is not None:
        parts.append(f"warn after {hours_limit(limit.warn_hours)}")
    if limit.error_hours is not None:
        parts.append(f"error after {hours_limit(limit.error_hours)}")
    return ", ".join(parts)


def freshness_chart(
    tables: Sequence[tuple[str, float | None]], limits: Mapping[str, FreshnessLimit]
) -> Chart | None:
    """Hours since each table's last successful load, each against its own
    ``warn_after`` (amber tick) and ``error_after`` (red tick) from the dbt
    project; a table without a freshness config has no tick and a grey bar."""
    if not tables:
        return None
    left, row, plot = 220, 24, 640
    reach = [hours for _, hours in tables if hours is not None]
    for table, _ in tables:
        limit = limits.get(table)
        if limit is not None:
            reach += [h * 1.25 for h in (limit.warn_hours, limit.error_hours) if h is not None]
    highest = max(reach, default=1.0) or 1.0
    shapes: list[Shape] = []
    for index, (table, hours) in enumerate(tables):
        y = 4 + index * row
        limit = limits.get(table)
        shapes.append(Text(left - 8, y + 14, table, anchor="end"))
        for hours_after, css in (
            (limit.warn_hours if limit else None, "limit"),
            (limit.error_hours if limit else None, "limit error"),
        ):
            if hours_after is not None:
                x = left + hours_after / highest * plot
                shapes.append(Line(x, y, x, y + row - 2, css=css))
        if hours is None:
            shapes.append(Text(left, y + 14, "never loaded successfully", fill=RED))
            continue
        color = FRESHNESS_COLORS[freshness_state(hours, limit)]
        width = max(hours / highest * plot, 2.0)
        shapes += [
            Rect(
                left,
                y + 2,
                width,
                row - 6,
                fill=color,
                rx=2,
                tip=f"{table}: last loaded {age(hours)} ago; {_limits_text(limit)}",
            ),
            Text(left + width + 6, y + 14, f"{age(hours)} · {_limits_text(limit)}", css="axis"),
        ]
    legend = (
        ("within its limits", GREEN),
        ("past warn_after", AMBER),
        ("past error_after", RED),
        ("no freshness limit", GREY),
    )
    return Chart(WIDTH, len(tables) * row + 8, "freshness per table", tuple(shapes), legend)


def runs_per_day_chart(
    days: Sequence[tuple[date, int, int]], *, period: int, today: datetime
) -> Chart | None:
    """Finished jobs per day, the failed ones in red."""
    if not days:
        return None
    counts = {day: (failed, total) for day, failed, total in days}
    last = today.astimezone(UTC).date()
    dates = [last - timedelta(days=n) for n in range(period - 1, -1, -1)]
    left, top, bottom = 80, 8, 70
    highest = max(total for _, total in counts.values()) or 1
    slot = (WIDTH - left - 20) / len(dates)
    shapes: list[Shape] = [
        Text(left - 6, top + 8, str(highest), css="axis", anchor="end"),
        Text(left - 6, bottom, "0", css="axis", anchor="end"),
        Line(left, bottom, WIDTH - 20, bottom),
    ]
    every = max(1, math.ceil(len(dates) / 10))
    for index, day in enumerate(dates):
        x = left + index * slot
        failed, total = counts.get(day, (0, 0))
        ok_height = (total - failed) / highest * (bottom - top)
        bad_height = failed / highest * (bottom - top)
        tip = f"{day}: {total} runs, {failed} failed"
        if total:
            shapes += [
                Rect(
                    x + 1, bottom - ok_height - bad_height, slot - 2, bad_height, fill=RED, tip=tip
                ),
                Rect(x + 1, bottom - ok_height, slot - 2, ok_height, fill=GREY, tip=tip),
            ]
        if index % every == 0:
            shapes.append(
                Text(x + slot / 2, bottom + 16, f"{day:%b %d}", css="axis", anchor="middle")
            )
    return Chart(
        WIDTH,
        bottom + 22,
        "finished and failed runs per day",
        tuple(shapes),
        (("finished", GREY), ("failed", RED)),
    )


def lineage_chart(graph: Graph) -> Chart | None:
    """Columns of nodes per layer, left to right, with curves for dependencies."""
    ordered = arrange(graph)
    if not ordered:
        return None
    row, gap, char = 26, 56, 6.6
    widths = [
        min(max(len(label) for _, label in members) * char + 18, 230) for _, members in ordered
    ]
    tallest = max(len(members) for _, members in ordered)
    position: dict[str, tuple[float, float, float]] = {}
    nodes: list[Shape] = []
    x = 10.0
    for (layer, members), width in zip(ordered, widths, strict=True):
        fill, stroke = LAYER_COLORS.get(layer, ("#f6f8fa", "#8c959f"))
        nodes.append(
            Text(x + width / 2, 14, LAYER_TITLES.get(layer, layer), css="axis", anchor="middle")
        )
        first = 28 + (tallest - len(members)) * row / 2
        for index, (node_id, label) in enumerate(members):
            y = first + index * row
            position[node_id] = (x, y + 10, width)
            nodes += [
                Rect(x, y, width, 20, fill=fill, stroke=stroke, rx=5, tip=label),
                Text(x + 7, y + 14, _shorten(label, int((width - 14) / char))),
            ]
        x += width + gap
    edges: list[Shape] = []
    for up, down in sorted(graph.edges):
        if up not in position or down not in position:
            continue
        x1, y1, width = position[up]
        x2, y2, _ = position[down]
        x1 += width
        edges.append(Curve(x1, y1, x2 - 2, y2, bend=max(abs(x2 - x1) / 2, 20)))
    return Chart(
        x - gap + 10, 34 + tallest * row, "dependency graph", (*edges, *nodes), arrows=True
    )
