"""Times, durations, ages and counts as the report writes them: short, in words
people read, and the same on every chart (the page's template uses them as
filters)."""

from __future__ import annotations

from datetime import UTC, datetime


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
    """An axis label: ``0s``, ``45s``, ``1m30s``, ``2h``."""
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


def hours_limit(hours: float) -> str:
    """A freshness limit: ``30 min``, ``24 h``, ``2 d`` (as whole as it was set)."""
    if hours < 1:
        return f"{round(hours * 60, 2):g} min"
    if hours < 48 or hours % 24:
        return f"{round(hours, 2):g} h"
    return f"{hours / 24:g} d"


def compact(number: float) -> str:
    """``950``, ``1.2k``, ``34k``, ``5.6M``."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            scaled = number / limit
            return f"{scaled:.1f}{suffix}" if scaled < 10 else f"{scaled:.0f}{suffix}"
    return f"{number:.0f}" if float(number).is_integer() else f"{number:.1f}"
