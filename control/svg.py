"""A small chart kit: a chart is a list of shapes with coordinates, worked out
here in Python; one template macro (``templates/svg.html.j2``) draws any chart as
inline SVG, so every label and tooltip goes through the template's escaping.

Also the arithmetic charts share: tick steps for numbers and times, and a colour
scale for counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

WIDTH = 1100  # every chart's width in pixels (before the page scales it down)

RED, AMBER, GREEN, GREY, OTHER = "#cf222e", "#d4a72c", "#2da44e", "#afb8c1", "#57606a"
PALETTE = ("#1f6feb", "#2da44e", "#8250df", "#bf8700", "#0a7d8c", "#953800", "#bf3989", "#57606a")


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str | None = None
    css: str | None = None
    rx: float | None = None
    stroke: str | None = None
    tip: str | None = None
    shape: ClassVar[str] = "rect"


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    css: str = "label"
    anchor: str | None = None  # text-anchor: start (default), middle, end
    fill: str | None = None
    tip: str | None = None
    rotate: float | None = None  # degrees, about (x, y)
    shape: ClassVar[str] = "text"


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    css: str = "grid"
    shape: ClassVar[str] = "line"


@dataclass(frozen=True)
class Polyline:
    points: tuple[tuple[float, float], ...]
    stroke: str
    width: float = 2
    shape: ClassVar[str] = "polyline"


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float
    fill: str
    stroke: str | None = None
    stroke_width: float | None = None
    tip: str | None = None
    shape: ClassVar[str] = "circle"


@dataclass(frozen=True)
class Curve:
    """A cubic Bézier from (x1, y1) to (x2, y2), leaving and arriving horizontally,
    with an arrowhead at its end."""

    x1: float
    y1: float
    x2: float
    y2: float
    bend: float
    css: str = "edge"
    shape: ClassVar[str] = "curve"


Shape = Rect | Text | Line | Polyline | Circle | Curve


@dataclass(frozen=True)
class Chart:
    """One ``<svg>``: its size, what a screen reader says, its shapes in drawing
    order, and a legend of (name, colour) drawn under it."""

    width: float
    height: float
    label: str
    shapes: tuple[Shape, ...]
    legend: tuple[tuple[str, str], ...] = ()
    arrows: bool = False  # defines the arrowhead that curves end in


def number(value: float) -> str:
    """A coordinate as SVG text: one decimal, none when whole (``12``, ``12.5``)."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


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
    """The smallest of ``steps`` that gives ``span`` at most ``ticks`` ticks."""
    return next((step for step in steps if span / step <= ticks), steps[-1])


def heat(value: int, highest: int) -> tuple[str, str]:
    """Cell fill and text colour on a log scale from pale to deep blue, so a full
    reload and an incremental run both read."""
    if value <= 0:
        return "#f6f8fa", "#57606a"
    t = min(math.log10(1 + value) / math.log10(1 + max(highest, 1)), 1.0)
    low, high = (234, 242, 255), (9, 80, 180)
    rgb = (round(a + (b - a) * t) for a, b in zip(low, high, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb), "white" if t > 0.55 else "#1f2328"
