"""The dependency graph, from dbt's manifest: source tables → raw → staging →
intermediate → marts → exposures, as Mermaid text (and layers for drawing)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

LAYERS = ("source", "raw", "staging", "intermediate", "marts", "snapshots", "exposures")


@dataclass
class Graph:
    """Nodes by id with their layer and label; edges as (upstream, downstream)."""

    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)

    def add(self, node_id: str, layer: str, label: str) -> None:
        self.nodes[node_id] = (layer, label)


def _layer(node: dict[str, Any]) -> str | None:
    kind = node.get("resource_type")
    if kind == "snapshot":
        return "snapshots"
    if kind != "model":
        return None
    path = node.get("path") or node.get("original_file_path") or ""
    for layer in ("staging", "intermediate", "marts"):
        if path.startswith(layer) or f"/{layer}/" in f"/{path}":
            return layer
    return "marts"


def build_graph(manifest: dict[str, Any]) -> Graph:
    """Nodes and edges from a dbt manifest (tests and seeds left out).

    Each dbt source is drawn twice: the table in the production database
    (``app.orders``) and its raw copy in the warehouse (``raw_app.orders``), joined by
    the loader.
    """
    graph = Graph()
    for unique_id, source in manifest.get("sources", {}).items():
        table = source.get("name", unique_id)
        origin = f"{source.get('source_name')}.{source.get('identifier') or table}"
        raw = f"{source.get('schema')}.{source.get('identifier') or table}"
        graph.add(f"origin:{unique_id}", "source", origin)
        graph.add(unique_id, "raw", raw)
        graph.edges.add((f"origin:{unique_id}", unique_id))
    for unique_id, node in manifest.get("nodes", {}).items():
        layer = _layer(node)
        if layer is None:
            continue
        graph.add(unique_id, layer, node.get("name", unique_id))
    for unique_id, exposure in manifest.get("exposures", {}).items():
        graph.add(unique_id, "exposures", exposure.get("label") or exposure.get("name", unique_id))
    for unique_id, item in {
        **manifest.get("nodes", {}),
        **manifest.get("exposures", {}),
    }.items():
        if unique_id not in graph.nodes:
            continue
        for upstream in (item.get("depends_on") or {}).get("nodes", []):
            if upstream in graph.nodes:
                graph.edges.add((upstream, unique_id))
    return graph


def layers(graph: Graph) -> list[tuple[str, list[tuple[str, str]]]]:
    """Layers in flow order, each with its (id, label) nodes sorted by label."""
    ordered = []
    for layer in LAYERS:
        members = sorted(
            ((node_id, label) for node_id, (kind, label) in graph.nodes.items() if kind == layer),
            key=lambda item: item[1],
        )
        if members:
            ordered.append((layer, members))
    return ordered


def _mermaid_id(node_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", node_id)


def to_mermaid(graph: Graph) -> str:
    """``flowchart LR`` with one subgraph per layer; stable, sorted output."""
    lines = ["flowchart LR"]
    for layer, members in layers(graph):
        lines.append(f"    subgraph {layer}")
        lines += [f'        {_mermaid_id(node_id)}["{label}"]' for node_id, label in members]
        lines.append("    end")
    lines += [
        f"    {_mermaid_id(upstream)} --> {_mermaid_id(downstream)}"
        for upstream, downstream in sorted(
            graph.edges, key=lambda edge: (graph.nodes[edge[0]][1], graph.nodes[edge[1]][1])
        )
    ]
    return "\n".join(lines) + "\n"
