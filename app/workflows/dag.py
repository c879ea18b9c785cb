"""The workflow DAG as server-rendered SVG: layered layout, status colours, collapsed fan-outs.

Pure: a workflow snapshot in, SVG text out. Groups are placed in layers by their longest
path from a root (a group sits one layer right of its deepest upstream group) and ordered
within a layer by the average row of their upstream groups, which keeps most edges short and
uncrossed. A layer with more than ``FANOUT`` groups becomes one counted node, and so does a
group with more than ``FANOUT`` tasks, unless the viewer expanded it (``?expand=``); the
counted node shows how many are in each state. Colours come from CSS classes, so the light
and dark themes both apply. Every name is escaped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

from app.templating import status_class

__all__ = ("FANOUT", "render_dag")

FANOUT = 20
_W = 200  # node width
_GAP_X = 70
_GAP_Y = 18
_HEAD = 26  # group title height
_ROW = 22  # task row height
_PAD = 8


@dataclass(slots=True)
class _Node:
    key: str  # "g:<name>" for a group, "layer:<n>" for a collapsed layer
    label: str
    status: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] | None = None  # a collapsed node: how many in each state
    collapsed_tasks: bool = False
    x: float = 0.0
    y: float = 0.0
    h: float = 0.0


def _layers(groups: list[dict[str, Any]]) -> list[list[int]]:
    index = {g["name"]: i for i, g in enumerate(groups)}
    depth: dict[int, int] = {}

    def level(i: int, seen: frozenset[int] = frozenset()) -> int:
        if i in depth:
            return depth[i]
        ups = [index[u] for u in groups[i]["upstream"] if u in index and index[u] not in seen]
        depth[i] = 0 if not ups else 1 + max(level(u, seen | {i}) for u in ups)
        return depth[i]

    for i in range(len(groups)):
        level(i)
    layers: list[list[int]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for i in range(len(groups)):
        layers[depth[i]].append(i)
    # Order each layer by the mean row of its upstream groups (one barycenter pass).
    row: dict[int, float] = {}
    for layer in layers:
        layer.sort(
            key=lambda i: (
                sum(row.get(index[u], 0.0) for u in groups[i]["upstream"] if u in index)
                / max(1, len(groups[i]["upstream"])),
                i,
            )
        )
        for r, i in enumerate(layer):
            row[i] = float(r)
    return layers


def render_dag(wf: dict[str, Any], expand: frozenset[str] = frozenset(), base_url: str = "") -> str:
    """The SVG of ``wf``'s groups and tasks; ``expand`` holds node keys the viewer opened."""
    groups: list[dict[str, Any]] = wf.get("groups", [])
    if not groups:
        return '<p class="empty">This workflow has no groups.</p>'
    layers = _layers(groups)
    columns: list[list[_Node]] = []
    collapsed_layer_of: dict[str, str] = {}
    for n, layer in enumerate(layers):
        key = f"layer:{n}"
        if len(layer) > FANOUT and key not in expand:
            counts = Counter(groups[i]["status"] for i in layer)
            node = _Node(key, f"{len(layer)} groups", _dominant(counts), counts=counts)
            for i in layer:
                collapsed_layer_of[groups[i]["name"]] = key
            columns.append([node])
            continue
        column = []
        for i in layer:
            g = groups[i]
            gkey = f"g:{g['name']}"
            node = _Node(gkey, g["name"], g["status"], tasks=g["tasks"])
            if len(g["tasks"]) > FANOUT and gkey not in expand:
                node.collapsed_tasks = True
                node.counts = Counter(t["status"] for t in g["tasks"])
            column.append(node)
        columns.append(column)
    # Place nodes.
    by_key: dict[str, _Node] = {}
    height = 0.0
    for c, column in enumerate(columns):
        y = float(_PAD)
        for node in column:
            node.x = _PAD + c * (_W + _GAP_X)
            node.y = y
            if (node.counts is not None and not node.tasks) or node.collapsed_tasks:
                node.h = _HEAD + _ROW * 2 + _PAD
            else:
                node.h = _HEAD + _ROW * len(node.tasks) + _PAD
            y += node.h + _GAP_Y
            by_key[node.key] = node
        height = max(height, y)
    width = _PAD * 2 + len(columns) * _W + (len(columns) - 1) * _GAP_X

    def key_of(name: str) -> str:
        return collapsed_layer_of.get(name, f"g:{name}")

    edges: set[tuple[str, str]] = set()
    for g in groups:
        for up in g["upstream"]:
            a, b = key_of(up), key_of(g["name"])
            if a != b and a in by_key and b in by_key:
                edges.add((a, b))
    out = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="Dependency graph of {escape(wf["id"])}">'
    ]
    for a, b in sorted(edges):
        na, nb = by_key[a], by_key[b]
        x1, y1 = na.x + _W, na.y + _HEAD / 2
        x2, y2 = nb.x, nb.y + _HEAD / 2
        mid = (x1 + x2) / 2
        out.append(
            f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
            f'{x2 - 6:.0f},{y2:.0f}" marker-end="url(#arrow)"/>'
        )
    out.append(
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="edge-head"/></marker></defs>'
    )
    for column in columns:
        for node in column:
            out.append(_node_svg(node, wf["id"], expand, base_url))
    out.append("</svg>")
    return "".join(out)


def _dominant(counts: Counter[str]) -> str:
    for status in ("RUNNING", "INITIALIZING"):
        if counts.get(status):
            return status
    if any(s.startswith("FAILED") for s in counts):
        return next(s for s in counts if s.startswith("FAILED"))
    if set(counts) == {"COMPLETED"}:
        return "COMPLETED"
    return "WAITING"


def _expand_link(base_url: str, expand: frozenset[str], key: str) -> str:
    keys = sorted(expand | {key})
    return base_url + "?" + "&".join(f"expand={quote(k)}" for k in keys) + "#dag"


def _node_svg(node: _Node, workflow_id: str, expand: frozenset[str], base_url: str) -> str:
    cls = status_class(node.status)
    dom_id = "dag-" + node.key.replace(":", "-")
    parts = [
        f'<g class="node {cls}" id="{escape(dom_id)}" data-status="{escape(node.status)}">',
        f'<rect class="box" x="{node.x:.0f}" y="{node.y:.0f}" width="{_W}" height="{node.h:.0f}" rx="6"/>',
        f'<text class="title" x="{node.x + _PAD:.0f}" y="{node.y + 17:.0f}">{escape(_clip(node.label, 24))}'
        f"<title>{escape(node.label)}: {escape(node.status)}</title></text>",
    ]
    row_y = node.y + _HEAD
    if node.counts is not None and (not node.tasks or node.collapsed_tasks):
        summary = ", ".join(f"{n} {escape(s.lower())}" for s, n in node.counts.most_common())
        parts.append(
            f'<text class="count" x="{node.x + _PAD:.0f}" y="{row_y + 15:.0f}">'
            f"{escape(_clip(summary, 30))}<title>{escape(summary)}</title></text>"
        )
        link = _expand_link(base_url, expand, node.key)
        parts.append(
            f'<a href="{escape(link)}" class="expand"><text x="{node.x + _PAD:.0f}" '
            f'y="{row_y + _ROW + 15:.0f}">expand ▸</text></a>'
        )
    else:
        for t in node.tasks:
            tcls = status_class(t["status"])
            href = f"/workflows/{quote(workflow_id)}/tasks/{quote(t['name'])}/logs"
            parts.append(
                f'<a href="{escape(href)}" class="task {tcls}" id="dag-t-{escape(t["name"])}" '
                f'data-status="{escape(t["status"])}">'
                f'<rect x="{node.x + 4:.0f}" y="{row_y + 2:.0f}" width="{_W - 8}" height="{_ROW - 4}" rx="4"/>'
                f'<text x="{node.x + _PAD + 2:.0f}" y="{row_y + 15:.0f}">'
                f"{escape(_clip(t['name'], 22))}<title>{escape(t['name'])}: {escape(t['status'])}</title>"
                f"</text></a>"
            )
            row_y += _ROW
    parts.append("</g>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
