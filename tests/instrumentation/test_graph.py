"""The dependency graph from dbt's manifest, and its Mermaid text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from control.freshness import FreshnessLimit, freshness_limits
from control.graph import (
    LAYERS,
    Graph,
    build_graph,
    layers,
    mermaid_ids,
    parse_mermaid,
    to_mermaid,
)


def model(name: str, path: str, *upstream: str, kind: str = "model") -> dict[str, Any]:
    return {
        "resource_type": kind,
        "name": name,
        "path": path,
        "original_file_path": f"models/{path}",
        "depends_on": {"nodes": list(upstream)},
    }


def source(table: str) -> dict[str, Any]:
    """A source table the loaders copy (as declared in ``_app__sources.yml``)."""
    return {
        "name": table,
        "source_name": "app",
        "schema": "raw_app",
        "identifier": table,
        "loader": "tidewater",
        "source_meta": {"tidewater": {"source_schema": "public"}},
        "meta": {"tidewater": {"mode": "bulk"}},
    }


MANIFEST: dict[str, Any] = {
    "sources": {
        "source.tw.app.orders": source("orders"),
        "source.tw.app.customers": source("customers"),
        "source.tw.ops.job_runs": {"name": "job_runs", "source_name": "ops", "schema": "ops"},
    },
    "nodes": {
        "model.tw.stg_app__orders": model(
            "stg_app__orders", "staging/app/stg_app__orders.sql", "source.tw.app.orders"
        ),
        "model.tw.stg_app__customers": model(
            "stg_app__customers", "staging/app/stg_app__customers.sql", "source.tw.app.customers"
        ),
        "model.tw.stg_ops__job_runs": model(
            "stg_ops__job_runs", "staging/ops/stg_ops__job_runs.sql", "source.tw.ops.job_runs"
        ),
        "model.tw.int_orders_classified": model(
            "int_orders_classified",
            "intermediate/int_orders_classified.sql",
            "model.tw.stg_app__orders",
        ),
        "model.tw.fct_orders": model(
            "fct_orders",
            "marts/fct_orders.sql",
            "model.tw.int_orders_classified",
            "model.tw.stg_app__customers",
        ),
        "snapshot.tw.snap_app__customers": model(
            "snap_app__customers",
            "snap_app__customers.yml/snap_app__customers.sql",
            "model.tw.stg_app__customers",
            kind="snapshot",
        ),
        "test.tw.unique_fct_orders_order_id": model(
            "unique_fct_orders_order_id",
            "unique_fct_orders_order_id.sql",
            "model.tw.fct_orders",
            kind="test",
        ),
        "model.tw.disabled_model": {
            **model("disabled_model", "marts/disabled_model.sql", "model.tw.fct_orders"),
            "config": {"enabled": False},
        },
    },
    "exposures": {
        "exposure.tw.sales_dashboard": {
            "name": "sales_dashboard",
            "label": "Sales dashboard",
            "depends_on": {"nodes": ["model.tw.fct_orders", "source.tw.app.customers"]},
        }
    },
}


def test_mermaid_lists_layers_in_flow_order_and_edges_source_first() -> None:
    text = to_mermaid(build_graph(MANIFEST))
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    subgraphs = [line.split()[1] for line in lines if line.strip().startswith("subgraph")]
    assert subgraphs == [
        "source",
        "raw",
        "staging",
        "snapshots",
        "intermediate",
        "marts",
        "exposures",
    ]
    edges = [line.strip() for line in lines if "-->" in line]
    assert edges == [
        "origin_source_tw_app_customers --> source_tw_app_customers",
        "origin_source_tw_app_orders --> source_tw_app_orders",
        "source_tw_ops_job_runs --> model_tw_stg_ops__job_runs",
        "source_tw_app_customers --> model_tw_stg_app__customers",
        "source_tw_app_customers --> exposure_tw_sales_dashboard",
        "source_tw_app_orders --> model_tw_stg_app__orders",
        "model_tw_stg_app__customers --> snapshot_tw_snap_app__customers",
        "model_tw_stg_app__customers --> model_tw_fct_orders",
        "model_tw_stg_app__orders --> model_tw_int_orders_classified",
        "model_tw_int_orders_classified --> model_tw_fct_orders",
        "model_tw_fct_orders --> exposure_tw_sales_dashboard",
    ]


def test_source_tables_and_their_raw_copies_are_labelled_by_schema() -> None:
    text = to_mermaid(build_graph(MANIFEST))
    assert 'origin_source_tw_app_orders["app.orders"]' in text
    assert 'source_tw_app_orders["raw_app.orders"]' in text
    assert 'source_tw_ops_job_runs["ops.job_runs"]' in text
    assert 'exposure_tw_sales_dashboard["Sales dashboard"]' in text


def test_only_tables_the_loaders_copy_have_a_source_table_upstream() -> None:
    graph = build_graph(MANIFEST)
    origins = sorted(label for layer, label in graph.nodes.values() if layer == "source")
    assert origins == ["app.customers", "app.orders"]
    assert graph.nodes["source.tw.ops.job_runs"] == ("raw", "ops.job_runs")


def test_tests_and_disabled_models_are_left_out() -> None:
    graph = build_graph(MANIFEST)
    assert "test.tw.unique_fct_orders_order_id" not in graph.nodes
    assert "model.tw.disabled_model" not in graph.nodes
    assert "unique_fct_orders" not in to_mermaid(graph)


def test_the_same_manifest_gives_the_same_text_whatever_its_key_order() -> None:
    shuffled = {
        key: dict(reversed(list(value.items()))) for key, value in reversed(MANIFEST.items())
    }
    assert to_mermaid(build_graph(shuffled)) == to_mermaid(build_graph(MANIFEST))


def test_layers_follow_folders_then_name_prefixes() -> None:
    manifest = {
        "nodes": {
            "model.tw.stg_x": model("stg_x", "legacy/stg_x.sql"),
            "model.tw.int_y": model("int_y", "legacy/int_y.sql"),
            "model.tw.report": model("report", "reporting/report.sql"),
            "seed.tw.country_codes": model("country_codes", "country_codes.csv", kind="seed"),
        }
    }
    assert [
        (layer, [label for _, label in members]) for layer, members in layers(build_graph(manifest))
    ] == [
        ("seeds", ["country_codes"]),
        ("staging", ["stg_x"]),
        ("intermediate", ["int_y"]),
        ("marts", ["report"]),
    ]


def test_mermaid_ids_are_sanitized_and_stay_unique() -> None:
    graph = Graph()
    graph.add("model.pkg.a-b", "marts", 'say "hi"')
    graph.add("model.pkg.a_b", "marts", "a_b")
    ids = mermaid_ids(graph)
    assert sorted(ids.values()) == ["model_pkg_a_b", "model_pkg_a_b_2"]
    assert '["say #quot;hi#quot;"]' in to_mermaid(graph)


def test_mermaid_text_reads_back_into_the_same_graph() -> None:
    graph = build_graph(MANIFEST)
    ids = mermaid_ids(graph)
    again = parse_mermaid(to_mermaid(graph))
    assert {ids[node_id]: node for node_id, node in graph.nodes.items()} == again.nodes
    assert {(ids[a], ids[b]) for a, b in graph.edges} == again.edges


def test_the_project_manifest_draws_every_model_from_raw_to_exposures(tmp_path: Path) -> None:
    """The real project, parsed now (dbt parse needs no database)."""
    from tidewater.paths import DBT_PROJECT_DIR
    from tidewater.profile import embedded_profiles_dir
    from transform.build import dbt_env

    dbt = Path(sys.executable).parent / "dbt"
    subprocess.run(
        [
            str(dbt),
            "parse",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(embedded_profiles_dir()),
            "--target-path",
            str(tmp_path),
            "--quiet",
        ],
        check=True,
        env=dbt_env(),
        timeout=300,
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    graph = build_graph(manifest)
    models = {k for k, v in manifest["nodes"].items() if v["resource_type"] == "model"}
    assert models <= set(graph.nodes)
    assert not any(node_id.startswith("test.") for node_id in graph.nodes)
    copied = [
        graph.nodes[downstream].label
        for upstream, downstream in graph.edges
        if graph.nodes[upstream].layer == "source"
    ]
    assert copied and all(label.startswith("raw_") for label in copied)
    assert {layer for layer, _ in layers(graph)} <= set(LAYERS)
    assert len(parse_mermaid(to_mermaid(graph)).edges) == len(graph.edges)
    # the report's freshness limits: the sources' warn_after, switched off for countries
    limits = freshness_limits(manifest)
    assert limits["app.orders"] == FreshnessLimit(warn_hours=24.0, error_hours=None)
    assert "app.countries" not in limits and "ops.job_runs" not in limits
