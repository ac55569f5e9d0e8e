"""Event sources are declared like any source, in the dbt sources YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

import events
from loaders.config import EVENT_SOURCE_KINDS, load_sources
from loaders.exceptions import DeclarationError
from tests.projects import dbt_project

SOURCES = """
version: 2
sources:
  - name: web
    schema: raw_web
    config:
      meta:
        tidewater:
          kind: http
    tables:
      - name: page_views
      - name: orders_placed
        config:
          meta:
            tidewater:
              event_id_field: order_id
  - name: shop
    config:
      meta:
        tidewater:
          kind: {kind}
    tables:
      - name: payments
"""


def declare(tmp_path: Path, kind: str) -> Path:
    return dbt_project(tmp_path, {"_events__sources.yml": SOURCES.format(kind=kind)})


@pytest.mark.parametrize("kind", ["rabbitmq", "nats"])
def test_every_table_of_an_event_source_is_a_stream(tmp_path: Path, kind: str) -> None:
    web, shop = load_sources(declare(tmp_path, kind))
    assert (web.kind, web.raw_schema) == ("http", "raw_web")
    assert [(t.name, t.event_id_field) for t in web.tables] == [
        ("page_views", None),
        ("orders_placed", "order_id"),
    ]
    assert (shop.kind, shop.dsn_env, [t.name for t in shop.tables]) == (
        kind,
        "TIDEWATER_SOURCE_SHOP_DSN",
        ["payments"],
    )
    assert events.EVENT_KINDS == EVENT_SOURCE_KINDS


def test_an_unknown_kind_names_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(DeclarationError, match="http, rabbitmq or nats"):
        load_sources(declare(tmp_path, "kafka"))


def test_indexes_on_a_stream_are_refused_with_what_to_do(tmp_path: Path) -> None:
    project = dbt_project(
        tmp_path,
        {
            "_events__sources.yml": SOURCES.format(kind="nats").replace(
                "event_id_field: order_id", "indexes: [order_id]"
            )
        },
    )
    with pytest.raises(DeclarationError, match="table orders_placed: indexes are declared") as e:
        load_sources(project)
    assert "remove indexes" in str(e.value)
