"""The demo app's web front end: page views sent through the event collector, so the
demo shows the event path end to end (HTTP → ``raw_web.page_views`` → dbt)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from loaders.config import load_sources
from tidewater.cli import say
from tidewater.db import warehouse_connector
from tidewater.exceptions import TidewaterError
from tidewater.profile import Target

DEMO_WEB_SOURCE = "web"
BATCH = 100


def send_page_views(target: Target, *, count: int, seed: int | None = None) -> int:
    """Post ``count`` page views to a collector of this process's own, as the shop's
    front end would; returns how many the collector stored. Nothing is sent when the
    project declares no ``kind: http`` source named ``web``."""
    import demo_app.workload
    from events.collector import http_streams, running_collector

    refs = http_streams(
        [s for s in load_sources() if s.kind == "http" and s.name == DEMO_WEB_SOURCE]
    )
    if not refs or count <= 0:
        return 0
    views = demo_app.workload.page_views(count, seed=seed)
    stored = 0
    with running_collector(refs, warehouse_connector(target)) as url:
        for start in range(0, len(views), BATCH):
            request = urllib.request.Request(
                url,
                data=json.dumps(views[start : start + BATCH]).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    stored += int(json.loads(response.read())["accepted"])
            except urllib.error.HTTPError as exc:
                raise TidewaterError(
                    f"the event collector answered {exc.code}: {exc.read().decode()[:300]}"
                ) from exc
    say(f"demo app: sent {count} page views through the event collector ({refs[0].stream})")
    return stored
