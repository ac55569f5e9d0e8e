"""The dependency graph, from dbt's manifest: source tables → raw → staging →
intermediate → marts → exposures, as Mermaid text (and layers for drawing).

`build_graph` reads ``target/manifest.json`` as parsed JSON; `to_mermaid` writes a
``flowchart LR`` with one subgraph per layer, sorted so the same project always
gives the same text; `parse_mermaid` reads that text back, so the report can draw
a graph it was handed as Mermaid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, NamedTuple

Layer = Literal[
    "source", "raw", "seeds", "staging", "snapshots", "intermediate", "marts", "exposures"
]

# Flow order. Snapshots keep history of staged rows and feed marts, so they sit
# between staging and intermediate; seeds are inputs like the raw tables.
LAYERS: tuple[Layer, ...] = (
    "source",
    "raw",
    "seeds",
    "staging",
    "snapshots",
    "intermediate",
    "marts",
    "exposures",
)
LAYER_TITLES: dict[str, str] = {
    "source": "source tables",
    "raw": "raw",
    "seeds": "seeds",
    "staging": "staging",
    "snapshots": "snapshots",
    "intermediate": "intermediate",
    "marts": "marts",
    "exposures": "exposures",
}
MODEL_FOLDERS: tuple[Layer, ...] = ("staging", "intermediate", "marts")
MODEL_PREFIXES: dict[str, Layer] = {"stg_": "staging", "int_": "intermediate"}
ORIGIN_PREFIX = "origin:"

NODE_LINE = re.compile(r'^\s*(\w+)\["(.*)"\]\s*$')
EDGE_LINE = re.compile(r"^\s*(\w+)\s*(?:-->|---|==>|-\.->)\s*(\w+)\s*$")
SUBGRAPH_LINE = re.compile(r"^\s*subgraph\s+(\w+)")


class Node(NamedTuple):
    layer: str
    label: str


@dataclass
class Graph:
    """Nodes by id with their layer and label; edges as (upstream, downstream)."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)

    def add(self, node_id: str, layer: str, label: str) -> None:
        self.nodes[node_id] = Node(layer, label)

    def connect(self, upstream: str, downstream: str) -> None:
        """Add an edge between two known nodes (unknown ends are ignored)."""
        if upstream in self.nodes and downstream in self.nodes and upstream != downstream:
            self.edges.add((upstream, downstream))


def _model_layer(node: dict[str, Any]) -> Layer:
    path = node.get("path") or node.get("original_file_path") or ""
    folders = PurePosixPath(path.replace("\\", "/")).parts[:-1]
    for layer in MODEL_FOLDERS:
        if layer in folders:
            return layer
    name = str(node.get("name", ""))
    for prefix, layer in MODEL_PREFIXES.items():
        if name.startswith(prefix):
            return layer
    return "marts"


def node_layer(node: dict[str, Any]) -> Layer | None:
    """The layer of a manifest node, or None for what the graph leaves out (tests,
    analyses, operations, disabled nodes)."""
    if (node.get("config") or {}).get("enabled") is False:
        return None
    kind = node.get("resource_type")
    if kind == "model":
        return _model_layer(node)
    if kind == "snapshot":
        return "snapshots"
    if kind == "seed":
        return "seeds"
    return None


def is_loaded(source: dict[str, Any]) -> bool:
    """Whether the loaders copy this source table, by the rules of
    `loaders.config`: a source marked ``loader: tidewater`` (or with
    ``meta.tidewater``) and a table with ``meta.tidewater`` not disabled."""
    source_meta = (source.get("source_meta") or {}).get("tidewater")
    if source.get("loader") != "tidewater" and not source_meta:
        return False
    table_meta = (source.get("meta") or {}).get("tidewater") or (
        (source.get("config") or {}).get("meta") or {}
    ).get("tidewater")
    return isinstance(table_meta, dict) and table_meta.get("enabled") is not False


def build_graph(manifest: dict[str, Any]) -> Graph:
    """Nodes and edges from a parsed dbt ``manifest.json`` (tests left out).

    A source table the loaders copy is drawn twice: the table in the production
    database (``app.orders``, as the loaders and ``ops.table_loads`` name it) and
    its copy in the warehouse (``raw_app.orders``), joined by the loader. Other
    sources (tables already in the warehouse, such as ``ops.job_runs``) are drawn
    once, in the raw layer.
    """
    graph = Graph()
    for unique_id, source in manifest.get("sources", {}).items():
        name = source.get("name") or unique_id
        graph.add(unique_id, "raw", f"{source.get('schema')}.{source.get('identifier') or name}")
        if is_loaded(source):
            graph.add(ORIGIN_PREFIX + unique_id, "source", f"{source.get('source_name')}.{name}")
            graph.connect(ORIGIN_PREFIX + unique_id, unique_id)
    nodes = manifest.get("nodes", {})
    for unique_id, node in nodes.items():
        layer = node_layer(node)
        if layer is not None:
            graph.add(unique_id, layer, node.get("name") or unique_id)
    exposures = manifest.get("exposures", {})
    for unique_id, exposure in exposures.items():
        graph.add(
            unique_id, "exposures", exposure.get("label") or exposure.get("name") or unique_id
        )
    for unique_id, item in (*nodes.items(), *exposures.items()):
        for upstream in (item.get("depends_on") or {}).get("nodes") or []:
            graph.connect(upstream, unique_id)
    return graph


def _layer_rank(layer: str) -> tuple[int, str]:
    return (LAYERS.index(layer), "") if layer in LAYERS else (len(LAYERS), layer)


def layers(graph: Graph) -> list[tuple[str, list[tuple[str, str]]]]:
    """Layers in flow order (empty ones left out), each with its ``(id, label)``
    nodes sorted by label."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for node_id, (layer, label) in graph.nodes.items():
        grouped.setdefault(layer, []).append((node_id, label))
    return [
        (layer, sorted(grouped[layer], key=lambda item: (item[1], item[0])))
        for layer in sorted(grouped, key=_layer_rank)
    ]


def arrange(graph: Graph) -> list[tuple[str, list[tuple[str, str]]]]:
    """`layers`, with each layer's nodes ordered to cut crossings for drawing: a few
    barycentre sweeps, each node placed at the mean position of its neighbours in
    the layer before (or after, on the way back)."""
    ordered = layers(graph)
    upstream: dict[str, list[str]] = {}
    downstream: dict[str, list[str]] = {}
    for up, down in graph.edges:
        downstream.setdefault(up, []).append(down)
        upstream.setdefault(down, []).append(up)

    def positions() -> dict[str, float]:
        return {
            node_id: row - (len(members) - 1) / 2
            for _, members in ordered
            for row, (node_id, _) in enumerate(members)
        }

    for sweep in range(4):
        neighbours = upstream if sweep % 2 == 0 else downstream
        indices = range(1, len(ordered)) if sweep % 2 == 0 else range(len(ordered) - 2, -1, -1)
        for index in indices:
            where = positions()
            layer, members = ordered[index]
            centres = {node_id: _centre(node_id, neighbours, where) for node_id, _ in members}
            ordered[index] = (layer, sorted(members, key=lambda item: (centres[item[0]], item[1])))
    return ordered


def _centre(node_id: str, neighbours: dict[str, list[str]], where: dict[str, float]) -> float:
    near = [where[other] for other in neighbours.get(node_id, []) if other in where]
    return sum(near) / len(near) if near else where[node_id]


def mermaid_ids(graph: Graph) -> dict[str, str]:
    """Node id → Mermaid id: letters, digits and underscores, unique."""
    taken: set[str] = set()
    ids: dict[str, str] = {}
    for node_id in sorted(graph.nodes):
        base = re.sub(r"[^A-Za-z0-9_]", "_", node_id) or "node"
        candidate, counter = base, 2
        while candidate in taken or candidate == "end":
            candidate, counter = f"{base}_{counter}", counter + 1
        taken.add(candidate)
        ids[node_id] = candidate
    return ids


def _sorted_edges(graph: Graph) -> list[tuple[str, str]]:
    def key(edge: tuple[str, str]) -> tuple[Any, ...]:
        up, down = graph.nodes[edge[0]], graph.nodes[edge[1]]
        return (
            _layer_rank(up.layer),
            up.label,
            edge[0],
            _layer_rank(down.layer),
            down.label,
            edge[1],
        )

    return sorted(graph.edges, key=key)


def to_mermaid(graph: Graph) -> str:
    """``flowchart LR`` with one subgraph per layer; the same graph always gives
    the same text (nodes by label, edges in flow order)."""
    ids = mermaid_ids(graph)
    lines = ["flowchart LR"]
    for layer, members in layers(graph):
        lines.append(f"    subgraph {layer} [{LAYER_TITLES.get(layer, layer)}]")
        lines += [
            f'        {ids[node_id]}["{label.replace(chr(34), "#quot;")}"]'
            for node_id, label in members
        ]
        lines.append("    end")
    lines += [f"    {ids[up]} --> {ids[down]}" for up, down in _sorted_edges(graph)]
    return "\n".join(lines) + "\n"


def parse_mermaid(text: str) -> Graph:
    """A graph from Mermaid flowchart text as `to_mermaid` writes it.

    Subgraphs give layers; nodes declared outside one, or only named in an edge,
    land in a layer called ``other``. Other Mermaid syntax is ignored.
    """
    graph = Graph()
    layer = "other"
    for line in text.splitlines():
        if match := SUBGRAPH_LINE.match(line):
            layer = match.group(1)
        elif line.strip() == "end":
            layer = "other"
        elif match := NODE_LINE.match(line):
            graph.add(match.group(1), layer, match.group(2).replace("#quot;", '"'))
        elif match := EDGE_LINE.match(line):
            for node_id in match.groups():
                if node_id not in graph.nodes:
                    graph.add(node_id, "other", node_id)
            graph.connect(*match.groups())
    return graph
