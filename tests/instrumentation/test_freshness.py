"""Freshness limits as dbt writes them into manifest.json, and how an age compares."""

from __future__ import annotations

from typing import Any

import pytest

from control.freshness import FreshnessLimit, freshness_limits, freshness_state


def source(name: str, **entry: Any) -> dict[str, Any]:
    return {"name": name, "source_name": "app", **entry}


def after(count: int | None, period: str | None) -> dict[str, Any]:
    return {"count": count, "period": period}


@pytest.mark.parametrize(
    ("entry", "limit"),
    [
        ({"freshness": {"warn_after": after(24, "hour")}}, FreshnessLimit(24.0, None)),
        (
            {"freshness": {"warn_after": after(30, "minute"), "error_after": after(2, "day")}},
            FreshnessLimit(0.5, 48.0),
        ),
        # dbt >= 1.10 also writes it under config; older manifests only at the top
        ({"config": {"freshness": {"error_after": after(1, "day")}}}, FreshnessLimit(None, 24.0)),
        # switched off for the table (`freshness: null`) or never set
        ({"freshness": None, "config": {"freshness": None}}, None),
        ({"freshness": {"warn_after": after(None, None), "error_after": after(None, None)}}, None),
        ({}, None),
    ],
)
def test_limits_are_read_as_dbt_wrote_them(entry: dict[str, Any], limit: FreshnessLimit) -> None:
    limits = freshness_limits({"sources": {"source.tw.app.orders": source("orders", **entry)}})
    assert limits.get("app.orders") == limit


def test_no_manifest_means_no_limits() -> None:
    assert freshness_limits(None) == {}


@pytest.mark.parametrize(
    ("hours", "limit", "state"),
    [
        (None, FreshnessLimit(24.0, None), "never"),
        (30.0, None, "unchecked"),
        (23.0, FreshnessLimit(24.0, None), "fresh"),
        (25.0, FreshnessLimit(24.0, None), "warn"),
        (25.0, FreshnessLimit(24.0, 48.0), "warn"),
        (49.0, FreshnessLimit(24.0, 48.0), "error"),
        (49.0, FreshnessLimit(None, 48.0), "error"),
        (1.0, FreshnessLimit(None, 48.0), "fresh"),
    ],
)
def test_an_age_is_judged_by_its_tables_limit(
    hours: float | None, limit: FreshnessLimit | None, state: str
) -> None:
    assert freshness_state(hours, limit) == state
