"""Freshness limits, read from the dbt project: each source table's
``freshness.warn_after`` and ``error_after`` as dbt parsed them into
``manifest.json`` (from the source, its table, or ``dbt_project.yml``), so the
report judges a table's age by the same rule `dbt source freshness` does.

A table with no freshness config (``freshness: null``, or counts left empty) has
no limit, and the report draws none for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# dbt's freshness periods, in hours.
PERIOD_HOURS: dict[str, float] = {"minute": 1 / 60, "hour": 1.0, "day": 24.0}

State = Literal["fresh", "warn", "error", "never", "unchecked"]


@dataclass(frozen=True)
class FreshnessLimit:
    """A table's freshness thresholds in hours (None where the project sets none)."""

    warn_hours: float | None = None
    error_hours: float | None = None


def _hours(after: Any) -> float | None:
    """``{count: 24, period: hour}`` → 24.0; None when count or period is unset."""
    if not isinstance(after, dict):
        return None
    count, period = after.get("count"), after.get("period")
    if count is None or period not in PERIOD_HOURS:
        return None
    return float(count) * PERIOD_HOURS[period]


def _freshness_config(source: dict[str, Any]) -> Any:
    """The source table's effective freshness: dbt writes it at the top level (and,
    from 1.10, also under ``config``); a top-level null means switched off."""
    if "freshness" in source:
        return source["freshness"]
    return (source.get("config") or {}).get("freshness")


def freshness_limits(manifest: dict[str, Any] | None) -> dict[str, FreshnessLimit]:
    """Limits by table as the loaders record it (``app.orders``: the source's name,
    a dot, the table's name), from a parsed ``manifest.json``. Tables without a
    freshness config are left out."""
    limits: dict[str, FreshnessLimit] = {}
    for source in ((manifest or {}).get("sources") or {}).values():
        config = _freshness_config(source)
        if not isinstance(config, dict):
            continue
        limit = FreshnessLimit(_hours(config.get("warn_after")), _hours(config.get("error_after")))
        if limit.warn_hours is None and limit.error_hours is None:
            continue
        limits[f"{source.get('source_name')}.{source.get('name')}"] = limit
    return limits


def freshness_state(hours: float | None, limit: FreshnessLimit | None) -> State:
    """How a table's age compares with its limit: ``never`` loaded successfully,
    ``unchecked`` (no limit), ``fresh``, past ``warn_after`` or past ``error_after``."""
    if hours is None:
        return "never"
    if limit is None:
        return "unchecked"
    if limit.error_hours is not None and hours > limit.error_hours:
        return "error"
    if limit.warn_hours is not None and hours > limit.warn_hours:
        return "warn"
    return "fresh"
